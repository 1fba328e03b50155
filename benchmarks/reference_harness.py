"""Run the public AnyTalker reference DiT (HKUST-C4G/AnyTalker) side by side.

Nothing of the reference is copied into this repository: the reference's
``wan/modules/{attention,audio_proj,model}.py`` are imported, unmodified, at
run time from a checkout whose path the caller supplies (``--reference PATH``
or the ``ANYTALKER_REFERENCE`` environment variable).  A checkout only needs
the ``wan/`` folder, e.g.::

    mkdir -p /tmp/anytalker_ref
    git --git-dir=<mirror of HKUST-C4G/AnyTalker> archive HEAD wan | tar -x -C /tmp/anytalker_ref

The reference is run the way our golden fixtures were made:

* on CPU (or the requested device), float32, ``eval()``;
* its flash-attention entry points (``wan.modules.attention.flash_attention``
  and ``.attention``, plus the names ``wan.modules.model`` imported from
  there) are replaced by one exact float32
  ``torch.nn.functional.scaled_dot_product_attention`` that honours ``k_lens``
  and a boolean ``attn_mask`` (see :func:`sdpa_attention`);
* the ``wan`` package ``__init__`` files, which pull in T5, CLIP and the VAE,
  are bypassed: ``wan`` and ``wan.modules`` are created as bare package
  objects and the three modules are loaded from their files.  Those three
  modules import nothing else of the reference (no ``audio_separator`` or
  ``torchaudio``), so no other import stubs are needed.  ``flash_attn`` is
  made unimportable so the reference's own fallbacks are never taken.

The reference needs ``diffusers`` (``ModelMixin``/``ConfigMixin``) and
``einops``; :func:`find_reference` reports when either is missing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

ENV_VAR = "ANYTALKER_REFERENCE"

# The reference modules we load, in dependency order (model imports the others).
_MODULES = ("attention", "audio_proj", "model")


def find_reference(path: str | None) -> tuple[Path | None, str | None]:
    """Resolve the reference checkout.

    Returns ``(path, None)`` when a usable checkout is found, else
    ``(None, reason)``.  ``path`` falls back to ``$ANYTALKER_REFERENCE``.
    """
    path = path or os.environ.get(ENV_VAR)
    if not path:
        return None, f"no reference checkout given (--reference PATH or ${ENV_VAR})"
    root = Path(path).expanduser().resolve()
    missing = [m for m in _MODULES if not (root / "wan" / "modules" / f"{m}.py").is_file()]
    if missing:
        return None, f"{root} is not an AnyTalker checkout (missing wan/modules/{missing[0]}.py)"
    for dep in ("diffusers", "einops"):
        if importlib.util.find_spec(dep) is None:
            return None, f"the reference needs the '{dep}' package (pip install {dep})"
    return root, None


def sdpa_attention(
    q,
    k,
    v,
    q_lens=None,
    k_lens=None,
    dropout_p=0.0,
    softmax_scale=None,
    q_scale=None,
    causal=False,
    window_size=(-1, -1),
    deterministic=False,
    dtype=None,
    version=None,
    fa_version=None,
    attn_mask=None,
):
    """Exact float32 stand-in for the reference's ``flash_attention``/``attention``.

    ``q``, ``k``, ``v`` are ``[B, L, heads, d]``.  Keys at positions
    ``>= k_lens[b]`` are masked out, and a boolean ``attn_mask``
    (True = attend) is AND-ed in.  No half-precision cast is applied (the
    ``dtype``, ``version``, ``fa_version`` and ``deterministic`` arguments of
    the flash path are accepted and ignored).  Returns ``[B, Lq, heads, d]``.
    """
    if q_lens is not None:
        raise NotImplementedError("q_lens (padded queries) is not used by the reference DiT")
    if tuple(window_size) != (-1, -1) or dropout_p:
        raise NotImplementedError("windowed attention and dropout are not used at inference")
    if q_scale is not None:
        q = q * q_scale
    mask = _key_length_mask(k_lens, k.shape[0], k.shape[1], q.device)
    if attn_mask is not None:
        mask = attn_mask if mask is None else (mask & attn_mask)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, is_causal=causal, scale=softmax_scale
    )
    return out.transpose(1, 2).contiguous()


def _key_length_mask(k_lens, batch: int, key_len: int, device) -> torch.Tensor | None:
    """``[B, 1, 1, Lk]`` boolean mask of valid keys, or None when all are valid."""
    if k_lens is None:
        return None
    k_lens = torch.as_tensor(k_lens, device=device).reshape(batch)
    if bool((k_lens >= key_len).all()):
        return None
    return (torch.arange(key_len, device=device) < k_lens[:, None]).view(batch, 1, 1, key_len)


def load_reference(root: Path) -> types.ModuleType:
    """Import the reference's ``wan.modules.model`` from ``root`` with SDPA attention.

    The ``wan`` package ``__init__`` files are bypassed.  Returns the loaded
    ``wan.modules.model`` module (which defines ``WanModel``).
    """
    for name in ("flash_attn", "flash_attn_interface"):
        sys.modules[name] = None  # makes ``import flash_attn`` raise ModuleNotFoundError
    wan_dir = Path(root) / "wan"
    _bare_package("wan", wan_dir)
    _bare_package("wan.modules", wan_dir / "modules")
    loaded = {}
    for name in _MODULES:
        module = _load_file(f"wan.modules.{name}", wan_dir / "modules" / f"{name}.py")
        if name == "attention":
            module.flash_attention = module.attention = sdpa_attention
        loaded[name] = module
    model_mod = loaded["model"]
    # model.py did ``from .attention import flash_attention, attention``.
    model_mod.flash_attention = model_mod.attention = sdpa_attention
    return model_mod


def _bare_package(name: str, directory: Path) -> None:
    """Register an empty package ``name`` whose submodules live in ``directory``."""
    package = types.ModuleType(name)
    package.__path__ = [str(directory)]
    sys.modules[name] = package


def _load_file(name: str, path: Path) -> types.ModuleType:
    """Load ``path`` as module ``name`` (registered in ``sys.modules`` first)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_reference_model(root: Path, cfg: dict) -> torch.nn.Module:
    """Construct the reference ``WanModel`` (a2v_af, float32, eval) for ``cfg``.

    ``cfg`` holds ``dim``, ``ffn_dim``, ``num_heads``, ``num_layers``,
    ``in_dim``, ``out_dim``, ``text_dim``, ``freq_dim`` and ``text_len``.
    """
    model_mod = load_reference(root)
    model = model_mod.WanModel(
        model_type="a2v_af",
        legacy_audio_cross_attn=False,
        **{
            key: cfg[key]
            for key in (
                "dim",
                "ffn_dim",
                "num_heads",
                "num_layers",
                "in_dim",
                "out_dim",
                "text_dim",
                "freq_dim",
                "text_len",
            )
        },
    )
    return model.float().eval()


def reference_forward(model: torch.nn.Module, x, t, text, clip, y, audio, faces, masks):
    """One reference forward, called the way the reference pipeline calls it.

    Takes our batched API's tensors (batch size 1): ``x`` ``[1,16,T,H,W]``,
    ``t`` ``[1]``, ``text`` ``[1,L,text_dim]``, ``clip`` ``[1,257,1280]``,
    ``y`` ``[1,20,T,H,W]`` and per identity ``audio[i]`` ``[1,F,5,12,768]``,
    ``faces[i]`` ``[1,257,1280]``, ``masks[i]`` ``[1,T,H/2,W/2]``.
    Returns ``[1,16,T,H,W]``.
    """
    if x.shape[0] != 1:
        raise ValueError("the reference harness runs batch size 1")
    frames, height, width = x.shape[2:]
    tokens = (frames, height // 2, width // 2)
    out = model(
        [x[0]],
        t=t,
        context=[text[0]],
        seq_len=tokens[0] * tokens[1] * tokens[2],
        clip_fea=clip,
        y=[y[0]],
        audio_ref_features={"audio_list": [a[0] for a in audio], "ref_face_list": list(faces)},
        # The model flattens face_mask_list in place: always pass a fresh list.
        face_mask_list=[m.reshape(1, 1, *tokens) for m in masks],
        use_token_mask=True,
    )
    return out[0].unsqueeze(0)
