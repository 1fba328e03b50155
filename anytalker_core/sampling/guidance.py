"""Classifier-free guidance over the solvers: :func:`sample` drives an AnyTalker model as the reference's
``WanAF2V.generate`` does (see ``docs/model.md``), and :func:`null_audio` / :func:`negative_cond` build the
reference's unconditional inputs.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .defaults import GUIDANCE, default_shift_for_latent, default_steps
from .schedule import check_schedule_args, flow_sigmas, timestep_lookup
from .solvers import Callback, ShouldStop, get_solver

__all__ = ["negative_cond", "null_audio", "sample"]


# ---------------------------------------------------------------------------------------------------------
# the unconditional inputs


def null_audio(audio: torch.Tensor | Sequence[torch.Tensor] | None) -> torch.Tensor | list[torch.Tensor] | None:
    """The reference's null audio: zeros of the same shapes (dtype and device) as ``audio``.

    ``audio`` is one tensor (a list of them gives a list, identity by identity); None gives None.
    The model still runs its audio projections on these zeros, so they are not the same as no audio.
    """
    if audio is None:
        return None
    if isinstance(audio, torch.Tensor):
        return torch.zeros_like(audio)
    if isinstance(audio, Sequence) and all(isinstance(a, torch.Tensor) for a in audio):
        return [torch.zeros_like(a) for a in audio]
    raise TypeError(f"audio must be a tensor or a list of tensors, got {type(audio).__name__}")


def negative_cond(cond: Mapping[str, Any], text: torch.Tensor | None = None) -> dict[str, Any]:
    """``cond`` with its audio replaced by :func:`null_audio` and, when given, its text by ``text``.

    With the negative prompt's ``text`` this is the reference's uncond (faces, masks, clip and y kept); with
    ``text=None`` it is the audio-free pass of :func:`sample`'s ``audio_guidance``.
    """
    out = dict(cond)
    if "audio" in out:
        out["audio"] = null_audio(out["audio"])
    if text is not None:
        out["text"] = text
    return out


# ---------------------------------------------------------------------------------------------------------
# guidance and the model


_KEYS = ("text", "clip", "y", "audio", "faces", "masks")


def _check_cond(name: str, cond: Any) -> dict[str, Any]:
    if not isinstance(cond, Mapping):
        raise TypeError(f"{name} must be a dict of the model's keyword inputs ({', '.join(_KEYS)})")
    unknown = sorted(set(cond) - set(_KEYS))
    if unknown:
        raise ValueError(f"{name} has unknown keys {unknown}; expected some of {list(_KEYS)}")
    missing = [k for k in ("text", "clip", "y") if k not in cond]
    if missing:
        raise ValueError(f"{name} is missing {missing}")
    return dict(cond)


def _batchable(conds: list[dict[str, Any]]) -> bool:
    keys = set(conds[0])
    if any(set(c) != keys for c in conds):
        return False
    for k in keys:
        vals = [c[k] for c in conds]
        if any(v is None for v in vals):
            if not all(v is None for v in vals):
                return False
            continue
        if isinstance(vals[0], torch.Tensor):
            if not all(isinstance(v, torch.Tensor) and v.dim() == vals[0].dim() for v in vals):
                return False
            shapes = [tuple(v.shape) for v in vals]
            if k == "text":  # any length: zero-padded to a common one (the model zero-pads it anyway)
                shapes = [(s[0],) + s[2:] for s in shapes]
            if len(set(shapes)) != 1:
                return False
        else:
            lists = [list(v) for v in vals]
            if len({len(v) for v in lists}) != 1:
                return False
            for per_identity in zip(*lists):
                if len({tuple(t.shape) for t in per_identity}) != 1:
                    return False
    return True


def _concat(conds: list[dict[str, Any]]) -> dict[str, Any]:
    """One batch of several conditionings: tensors along batch, the identity lists identity by identity.

    Texts of different lengths are zero-padded to the longest: the model zero-pads the text to text_len
    before its MLP and attends every row, so explicit zero rows give the same result.
    """
    out: dict[str, Any] = {}
    for k in conds[0]:
        vals = [c[k] for c in conds]
        if vals[0] is None:
            out[k] = None
        elif isinstance(vals[0], torch.Tensor):
            if k == "text":
                length = max(v.shape[1] for v in vals)
                vals = [torch.nn.functional.pad(v, (0, 0, 0, length - v.shape[1])) for v in vals]
            out[k] = torch.cat(vals, dim=0)
        else:
            out[k] = [torch.cat(list(per_identity), dim=0) for per_identity in zip(*[list(v) for v in vals])]
    return out


def _velocity_fn(model: Callable, conds: list[dict[str, Any]], batch: bool) -> Callable:
    """``velocities(x, t) -> [v per conditioning]``, one batched model call when the inputs allow it.

    The batched conditioning is assembled once here, not at every step.
    """
    if batch and len(conds) > 1 and _batchable(conds):
        n, batched = len(conds), _concat(conds)

        def velocities(x: torch.Tensor, t: torch.Tensor) -> list[torch.Tensor]:
            return list(model(x.repeat(n, *[1] * (x.dim() - 1)), t.repeat(n), **batched).chunk(n, dim=0))

        return velocities
    return lambda x, t: [model(x, t, **c) for c in conds]


@torch.no_grad()
def sample(
    model: Callable,
    noise: torch.Tensor,
    steps: int | None = None,
    shift: float | None = None,
    guidance: float = GUIDANCE,
    cond: Mapping[str, Any] | None = None,
    uncond: Mapping[str, Any] | None = None,
    solver: str = "unipc",
    callback: Callback | None = None,
    *,
    audio_guidance: float | None = None,
    should_stop: ShouldStop | None = None,
    batch_cfg: bool = True,
) -> torch.Tensor:
    """Sample a latent ``[B, 16, T, H, W]`` from ``noise`` of that shape, as the reference's generate does.

    Defaults are the reference's (:mod:`.defaults`): ``steps`` None = 40 for a 1.3B (``af``) model, 20 for a 14B
    (``legacy``) one (read from ``model.config.variant``); ``shift`` None = 3 for a 480p clip, 5 otherwise (read
    from the noise's size); ``guidance`` 4.5.

    ``cond`` and ``uncond`` are dicts of the model's keyword inputs (``text``, ``clip``, ``y``, ``audio``,
    ``faces``, ``masks``); the reference's uncond is the negative text with every identity's audio zeroed
    and the same faces, masks, clip and y (:func:`negative_cond`). At every step the model gets the timestep
    as an int64 tensor (``flow_sigmas(steps, shift)``) and the guided velocity is

    - ``guidance == 1``: ``cond`` alone (one pass, ``uncond`` may be None);
    - otherwise: ``uncond + guidance * (cond - uncond)``;
    - with ``audio_guidance`` set (three passes): ``uncond + guidance * (noaudio - uncond)
      + audio_guidance * (cond - noaudio)``, where ``noaudio`` is ``cond`` with its audio zeroed (text kept).
      ``guidance`` is then the text scale. With ``audio_guidance == guidance`` this is plain guidance.

    The passes of one step run as one batched model call (``batch_cfg``, default True) when the inputs have
    the same identities and shapes (texts of different lengths are zero-padded, as the model does anyway);
    otherwise one call each. The solver (one of :data:`~.solvers.SOLVER_NAMES`: ``unipc``, ``euler`` or
    ``dpmpp_2m``) steps on ``x0 = x - sigma * v``.
    ``callback(step, total, x0)`` is called after every step; ``should_stop()`` before every step, and when
    it returns True :class:`~.solvers.SamplingCancelled` is raised.
    """
    solve = get_solver(solver)
    if not isinstance(noise, torch.Tensor) or noise.dim() != 5:
        raise ValueError(f"noise must be a tensor [B, 16, T, H, W], got {getattr(noise, 'shape', type(noise))}")
    if steps is None:
        steps = default_steps(getattr(getattr(model, "config", None), "variant", None))
    if shift is None:
        shift = default_shift_for_latent(tuple(noise.shape[-2:]))
    check_schedule_args(steps, shift)
    for name, g in (("guidance", guidance), ("audio_guidance", audio_guidance)):
        if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float)) or not np.isfinite(g)):
            raise ValueError(f"{name} must be a finite number, got {g!r}")
    if cond is None:
        raise ValueError("cond is required: a dict of the model's keyword inputs")
    cond = _check_cond("cond", cond)
    plain = audio_guidance is None and float(guidance) == 1.0
    if plain:
        passes = [cond]
    else:
        if uncond is None:
            raise ValueError("uncond is required when guidance != 1 or audio_guidance is set")
        uncond = _check_cond("uncond", uncond)
        passes = [cond, uncond] if audio_guidance is None else [cond, negative_cond(cond), uncond]

    sigmas, timesteps = flow_sigmas(steps, shift)
    x = noise.to(torch.float32)
    timestep = timestep_lookup(sigmas, timesteps)
    velocities = _velocity_fn(model, passes, batch_cfg)

    def denoise(xt: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        t_int = timestep(float(sigma.reshape(-1)[0]))
        t = torch.full((xt.shape[0],), t_int, dtype=torch.int64, device=xt.device)
        v = velocities(xt, t)
        if plain:
            pred = v[0]
        elif audio_guidance is None:
            pred = v[1] + guidance * (v[0] - v[1])
        else:
            full, noaudio, unc = v
            pred = unc + guidance * (noaudio - unc) + audio_guidance * (full - noaudio)
        pred = pred.to(torch.float32)
        return xt - sigma.to(xt).reshape(-1, *[1] * (xt.dim() - 1)) * pred

    return solve(denoise, x, sigmas, callback=callback, should_stop=should_stop)
