"""The image encoder: open-clip's ViT-H/14 image tower on ``transformers``, penultimate block.

What the reference computes (``wan/modules/clip.py`` ``CLIPModel.visual``): the picture in [-1, 1] squashed to
224x224, mapped to [0, 1] and CLIP-normalised (:func:`anytalker_core.condition.clip_input`), then the tower's
patch embedding, class token, positions, pre-norm and the first 31 of its 32 blocks: ``[1, 257, 1280]``, no
final norm. ``transformers.CLIPVisionModel`` is the same network (pre-norm, exact GELU, LayerNorm eps 1e-5); its
last block is dropped after loading, so its ``last_hidden_state`` *is* the penultimate output (ComfyUI's
``penultimate_hidden_states``) and the unused block costs neither memory nor time.

Files (:func:`load_image_encoder`):

- ComfyUI's ``clip_vision_h.safetensors`` (``models/clip_vision``): Hugging Face key names (``vision_model.*``);
- open-clip checkpoints (``visual.transformer.resblocks.*``);
- Wan2.1's ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` (the reference's names, ``visual.*``);
- a Hugging Face folder with ``config.json``.

The protocol the pipeline needs is ``image_encoder(picture_m11 [3, H, W]) -> [1, 257, dim]`` (:class:`ImageEncoder`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from ..images import check_chw
from ..weights import CheckpointError, StateDict, dequantize, from_folder, library_folder, read_tensors

CLIP_SIZE = 224
# open-clip image normalisation used by the reference's CLIP transforms (wan/modules/clip.py ``_clip``).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Heads of the known towers by width (heads cannot be read off the weights): ViT-B 768, ViT-L 1024, ViT-H 1280.
KNOWN_HEADS = {768: 12, 1024: 16, 1280: 16, 1664: 16}


def clip_input(image_m11: torch.Tensor) -> torch.Tensor:
    """The image-encoder input ``[3, 224, 224]`` float32 from a ``[3, H, W]`` (or ``[1, 3, H, W]``) picture in
    [-1, 1]: squashed to 224x224 by ``F.interpolate(mode="bicubic", align_corners=False)`` (no crop, aspect
    not kept), back to [0, 1] by ``* 0.5 + 0.5`` (no clamp), then ``(x - CLIP_MEAN) / CLIP_STD`` per channel
    (reference ``CLIPModel.visual``: the last of its transforms, ``T.Normalize``).

    For the reference's global ``clip_fea`` pass :func:`to_m11` of the picture (the reference encodes the image
    at its original size, not the resized first frame); for a face embedding pass the face crop.
    """
    if image_m11.ndim == 4:
        if image_m11.shape[0] != 1:
            raise ValueError(f"clip_input takes one picture, got shape {tuple(image_m11.shape)}")
        image_m11 = image_m11[0]
    check_chw(image_m11, "image_m11")
    x = F.interpolate(
        image_m11[None].to(torch.float32), size=(CLIP_SIZE, CLIP_SIZE), mode="bicubic", align_corners=False
    )[0]
    x = x.mul(0.5).add(0.5)
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x.sub_(mean).div_(std)


@runtime_checkable
class ImageEncoder(Protocol):
    """``encoder(picture_m11) -> float32 [1, tokens, dim]`` for a ``[3, H, W]`` picture in [-1, 1]."""

    def __call__(self, picture_m11: torch.Tensor) -> torch.Tensor: ...


class CLIPImageEncoder:
    """A ``transformers.CLIPVisionModel`` cut after its penultimate block (see the module docstring)."""

    def __init__(self, model: torch.nn.Module):
        encoder = _tower(model).encoder
        if len(encoder.layers) < 2:
            raise ValueError("the image tower needs at least 2 blocks (the penultimate one is used)")
        encoder.layers = encoder.layers[:-1]
        self.model = model.eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, picture_m11: torch.Tensor) -> torch.Tensor:
        param = next(self.model.parameters())
        pixels = clip_input(picture_m11)[None].to(device=param.device, dtype=param.dtype)
        return self.model(pixel_values=pixels).last_hidden_state.float()

    def to(self, device: torch.device | str) -> "CLIPImageEncoder":
        self.model.to(device)
        return self


# ----------------------------------------------------------------------------------------------------- loading

_VISION = "vision_model."  # the key prefix of ComfyUI's files (transformers 4 layout)


def _tower(model: torch.nn.Module) -> torch.nn.Module:
    """The vision transformer inside ``CLIPVisionModel`` (transformers 4 nests it as ``vision_model``)."""
    return getattr(model, "vision_model", model)


# Per-block names (after the block prefix), open-clip / Wan -> Hugging Face.
_BLOCK_NAMES = {
    "ln_1": "layer_norm1", "ln_2": "layer_norm2", "norm1": "layer_norm1", "norm2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj", "attn.proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2", "mlp.0": "mlp.fc1", "mlp.2": "mlp.fc2",
}  # fmt: skip
_TOP_NAMES = {
    "conv1.weight": "embeddings.patch_embedding.weight", "patch_embedding.weight": "embeddings.patch_embedding.weight",
    "class_embedding": "embeddings.class_embedding", "cls_embedding": "embeddings.class_embedding",
    "positional_embedding": "embeddings.position_embedding.weight",
    "pos_embedding": "embeddings.position_embedding.weight",
    "ln_pre": "pre_layrnorm", "pre_norm": "pre_layrnorm", "ln_post": "post_layernorm", "post_norm": "post_layernorm",
}  # fmt: skip


def _from_visual(state: StateDict, source: str) -> StateDict:
    """open-clip / Wan ``visual.*`` keys -> ``CLIPVisionModel`` keys (fused q/k/v split in three)."""
    out: StateDict = {}
    for key, value in state.items():
        if not key.startswith("visual."):
            continue  # the text tower, logit scale
        name = key[len("visual.") :]
        m = re.match(r"transformer\.(?:resblocks\.)?(\d+)\.(.+)\.(weight|bias)$", name)
        if m:
            block, part, kind = m.groups()
            prefix = f"{_VISION}encoder.layers.{block}."
            if part in ("attn.in_proj", "attn.to_qkv") or (part == "attn" and kind == "weight"):
                for proj, chunk in zip("qkv", value.chunk(3, dim=0)):
                    out[f"{prefix}self_attn.{proj}_proj.{kind}"] = chunk.clone()
                continue
            if part not in _BLOCK_NAMES:
                raise CheckpointError(f"{source}: unexpected image-tower key {key!r}")
            out[f"{prefix}{_BLOCK_NAMES[part]}.{kind}"] = value
            continue
        if name in ("proj", "head"):
            continue  # the projection to the joint space: not used
        base, _, kind = name.rpartition(".")
        if name in _TOP_NAMES:
            new = _TOP_NAMES[name]
        elif base in _TOP_NAMES:
            new = f"{_TOP_NAMES[base]}.{kind}"
        else:
            raise CheckpointError(f"{source}: unexpected image-tower key {key!r}")
        if new.endswith("class_embedding"):
            value = value.reshape(-1)
        if new.endswith("position_embedding.weight"):
            value = value.reshape(-1, value.shape[-1])
        out[_VISION + new] = value
    return out


def _hf_keys(state: StateDict, source: str) -> StateDict:
    state = {k.removeprefix("clip_vision."): v for k, v in state.items()}
    if "embeddings.patch_embedding.weight" in state:  # saved by transformers 5
        state = {_VISION + k: v for k, v in state.items()}
    if any(k.startswith(_VISION) for k in state):
        return {k: v for k, v in state.items() if k.startswith(_VISION)}
    if any(k.startswith("visual.") for k in state):
        return _from_visual(state, source)
    raise CheckpointError(
        f"{source}: not a CLIP image encoder (no 'vision_model.' or 'visual.' keys); expected ComfyUI's "
        "clip_vision_h.safetensors or Wan's open-clip .pth"
    )


def vision_config(state: StateDict, source: str = "image encoder", num_heads: int | None = None) -> Any:
    """A ``CLIPVisionConfig`` read off the weight shapes; heads from ``num_heads`` or :data:`KNOWN_HEADS`."""
    from transformers import CLIPVisionConfig

    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.", k))})
    try:
        patch = state[f"{_VISION}embeddings.patch_embedding.weight"]
        positions = state[f"{_VISION}embeddings.position_embedding.weight"].shape[0]
        ffn = state[f"{_VISION}encoder.layers.0.mlp.fc1.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(f"{source}: missing {err.args[0]!r}; is this a CLIP image tower?") from None
    hidden, patch_size = patch.shape[0], patch.shape[-1]
    side = round((positions - 1) ** 0.5)
    if side * side != positions - 1:
        raise CheckpointError(f"{source}: {positions} position embeddings is not 1 + a square grid")
    heads = num_heads or KNOWN_HEADS.get(hidden)
    if heads is None:
        raise CheckpointError(
            f"{source}: cannot tell the number of attention heads of a {hidden}-wide tower; pass num_heads= or "
            "put a config.json (num_attention_heads) beside the file"
        )
    return CLIPVisionConfig(
        hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=len(blocks), num_attention_heads=heads,
        image_size=side * patch_size, patch_size=patch_size, num_channels=patch.shape[1], hidden_act="gelu",
        layer_norm_eps=1e-5, attention_dropout=0.0,
    )  # fmt: skip


def load_image_encoder(
    source: str | Path | Mapping[str, torch.Tensor],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    num_heads: int | None = None,
) -> CLIPImageEncoder:
    """Load the image tower from a file, a Hugging Face folder or a state dict (see the module docstring).

    ``dtype``: the compute dtype (float32 by default; the reference runs it under fp16 autocast on GPU).
    """
    from transformers import CLIPVisionModel

    folder = library_folder(source)
    if folder is not None:
        model = from_folder(CLIPVisionModel, folder, "CLIP vision folder", dtype=dtype)
        return CLIPImageEncoder(model.to(device))
    path = None if isinstance(source, Mapping) else Path(source).expanduser()
    if path is not None and num_heads is None:
        config_file = path.with_name("config.json")
        if config_file.is_file():
            try:
                num_heads = json.loads(config_file.read_text()).get("num_attention_heads")
            except (ValueError, AttributeError) as err:
                raise CheckpointError(f"{config_file}: not a readable config.json ({err})") from None

    raw, name = read_tensors(source)
    state = _hf_keys(dequantize(raw, name), name)
    config = vision_config(state, name, num_heads)
    state = {k: v.to(dtype) for k, v in state.items()}
    with torch.device("meta"):
        model = CLIPVisionModel(config)
    expected = set(model.state_dict())
    if not any(k.startswith(_VISION) for k in expected):  # transformers 5: no vision_model. prefix
        state = {k.removeprefix(_VISION): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if k in expected}  # drops position_ids of old files
    missing = sorted(expected - set(state))
    if missing:
        raise CheckpointError(f"{name}: missing {len(missing)} image-tower weights, e.g. {missing[:3]}")
    try:
        model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as err:
        raise CheckpointError(f"{name}: does not fit a CLIP image tower ({err})") from None
    _materialize_buffers(model)
    return CLIPImageEncoder(model.to(device))


def _materialize_buffers(model: torch.nn.Module) -> None:
    """Buffers that are not in the file (``position_ids``) are still on the meta device: rebuild them."""
    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf.is_meta:
                if name == "position_ids":
                    module.register_buffer(name, torch.arange(buf.shape[-1]).expand(buf.shape), persistent=False)
                else:
                    raise CheckpointError(f"image tower: buffer {name!r} was not loaded")
