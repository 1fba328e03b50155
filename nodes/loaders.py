"""Loading an AnyTalker checkpoint as a native MODEL."""

from __future__ import annotations

import os

from comfy_api.latest import io

from .model import WEIGHT_DTYPES

FOLDER = "anytalker"  # models/anytalker, registered by the extension; diffusion_models is searched too


def checkpoint_names() -> list[str]:
    import folder_paths

    names = []
    for folder in (FOLDER, "diffusion_models"):
        names += [n for n in folder_paths.get_filename_list(folder) if n not in names]
    return names


def checkpoint_path(name: str) -> str:
    import folder_paths

    for folder in (FOLDER, "diffusion_models"):
        path = folder_paths.get_full_path(folder, name)
        if path is not None and os.path.isfile(path):
            # The name stays inside the folder (no "..", no absolute path). A link the user put in the folder is
            # followed, as the host's own loaders do: models on a shared disk are usually linked in.
            roots = [os.path.abspath(root) for root in folder_paths.get_folder_paths(folder)]
            where = os.path.abspath(path)
            if not any(os.path.commonpath([where, root]) == root for root in roots):
                raise ValueError(f"model_name: {name!r} points outside models/{folder}; refused")
            return path
    raise FileNotFoundError(
        f"AnyTalker checkpoint {name!r} not found in models/{FOLDER} or models/diffusion_models; refresh the "
        "node list (press R) after copying the file"
    )


def checkpoint_inputs(other_loader: str, dtype_tooltip: str) -> list:
    """The ``model_name`` and ``weight_dtype`` inputs of a loader node; ``other_loader``: why not the host's own."""
    return [
        io.Combo.Input(
            "model_name", options=checkpoint_names(),
            tooltip="1_3B-single-v1.pth or 14B-multi-v1.pth, from models/anytalker or models/diffusion_models. "
            + other_loader,
        ),
        io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default", tooltip=dtype_tooltip),
    ]  # fmt: skip


class AnyTalkerModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyTalkerModelLoader",
            display_name="AnyTalker Model Loader",
            category="AnyTalker/loaders",
            description="Load an AnyTalker checkpoint (1.3B or 14B) as a Wan model with its audio and face layers.",
            inputs=checkpoint_inputs(
                "The plain UNETLoader would drop the audio layers: load AnyTalker files here.",
                "How the weights are stored on the GPU. default: chosen for your GPU; fp8 halves the memory of bf16 "
                "at a small quality cost.",
            ),
            outputs=[io.Model.Output(tooltip="The AnyTalker DiT, usable by KSampler and the AnyTalker sampler.")],
        )  # fmt: skip

    @classmethod
    def execute(cls, model_name: str, weight_dtype: str) -> io.NodeOutput:
        from .model import load_model

        return io.NodeOutput(load_model(checkpoint_path(model_name), weight_dtype))
