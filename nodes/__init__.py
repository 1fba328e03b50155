"""ComfyUI nodes of the AnyTalker pack: thin V3 adapters over ``anytalker_core``.

``NODE_LIST`` holds the node classes that the top-level ``comfy_entrypoint`` registers (AnyTalker Ray Model
Loader only where Raylight is installed). Importing this package needs the host's ``comfy_api``; everything else
of the host is imported inside the nodes.
"""

from __future__ import annotations

from .conditioning import AnyTalkerImageToVideo
from .judge import AnyTalkerEvaluate
from .loaders import AnyTalkerModelLoader
from .long import AnyTalkerColorMatch, AnyTalkerExtend, AnyTalkerLongVideo
from .people import AnyTalkerFaceDetect, AnyTalkerIdentity, AnyTalkerVoice
from .raylight import AnyTalkerRayModelLoader, raylight_installed
from .sampling import AnyTalkerSampler, AnyTalkerSamplerSelect, AnyTalkerScheduler

NODE_LIST: list[type] = [
    AnyTalkerModelLoader,
    AnyTalkerVoice,
    AnyTalkerFaceDetect,
    AnyTalkerIdentity,
    AnyTalkerImageToVideo,
    AnyTalkerSampler,
    AnyTalkerSamplerSelect,
    AnyTalkerScheduler,
    AnyTalkerExtend,
    AnyTalkerColorMatch,
    AnyTalkerLongVideo,
    AnyTalkerEvaluate,
]
if raylight_installed():
    NODE_LIST.insert(1, AnyTalkerRayModelLoader)


def register_model_folder() -> None:
    """``models/anytalker`` for AnyTalker checkpoints (``diffusion_models`` is searched too)."""
    import os

    import folder_paths

    from .loaders import FOLDER

    if FOLDER not in folder_paths.folder_names_and_paths:
        path = os.path.join(folder_paths.models_dir, FOLDER)
        folder_paths.folder_names_and_paths[FOLDER] = ([path], set(folder_paths.supported_pt_extensions))
