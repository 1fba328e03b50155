"""The Wan2.1 video VAE on ``diffusers`` (``AutoencoderKLWan``), as a :class:`~anytalker_core.condition.VideoVAE`.

The VAE boundary owns the latent normalisation (``condition.normalize_latent``): ``encode`` returns the
posterior mean, normalised per channel, and ``decode`` takes normalised latents and returns pixels in [-1, 1]
(clamped), as the reference's ``WanVAE`` does.

Files (:func:`load_vae`):

- ComfyUI's ``wan_2.1_vae.safetensors`` (``models/vae``) and Wan2.1's ``Wan2.1_VAE.pth``: the original key names,
  converted with diffusers' own single-file converter;
- diffusers-layout files and folders (``config.json`` + weights), e.g. a ``vae`` subfolder of a ``-Diffusers`` repo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

import torch

from .. import timeline
from ..weights import CheckpointError, StateDict, dequantize, from_folder, library_folder, read_tensors

LATENT_CHANNELS = 16

# Wan2.1 VAE per-channel latent statistics: reference wan/modules/vae.py ``WanVAE.__init__``; identical to
# diffusers' AutoencoderKLWan ``latents_mean`` / ``latents_std`` defaults.
WAN21_LATENT_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENT_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip


@runtime_checkable
class VideoVAE(Protocol):
    """A Wan2.1-style video VAE that owns the latent normalisation (the VAE boundary).

    - ``encode(video)``: ``[B, 3, F, H, W]`` in [-1, 1], F = 4n+1 -> *normalised* latent
      ``[B, 16, (F-1)/4+1, H/8, W/8]`` (the VAE's posterior mean, then :func:`normalize_latent`).
    - ``decode(latent)``: normalised latent -> ``[B, 3, F, H, W]`` in [-1, 1] (:func:`denormalize_latent` first;
      the reference clamps the decoded video to [-1, 1]).
    """

    def encode(self, video: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latent: torch.Tensor) -> torch.Tensor: ...


def _latent_stats(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if z.ndim < 4 or z.shape[-4] != LATENT_CHANNELS:
        raise ValueError(f"latent must be [..., {LATENT_CHANNELS}, T, H, W], got {tuple(z.shape)}")
    mean = torch.tensor(WAN21_LATENT_MEAN, dtype=torch.float32, device=z.device).view(-1, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(WAN21_LATENT_STD, dtype=torch.float32, device=z.device).view(-1, 1, 1, 1)
    return mean, inv_std


def normalize_latent(z: torch.Tensor) -> torch.Tensor:
    """Raw VAE latent -> the model's latent: ``(z - mean) * (1 / std)`` per channel (the reference's
    ``scale = [mean, 1.0 / std]``), computed in float32, returned in ``z``'s dtype. Channels at dim -4."""
    mean, inv_std = _latent_stats(z)
    return ((z.to(torch.float32) - mean) * inv_std).to(z.dtype)


def denormalize_latent(z: torch.Tensor) -> torch.Tensor:
    """The model's latent -> raw VAE latent: ``z / (1 / std) + mean`` (the reference divides by the stored
    ``1 / std`` rather than multiplying by std), in float32, returned in ``z``'s dtype."""
    mean, inv_std = _latent_stats(z)
    return (z.to(torch.float32) / inv_std + mean).to(z.dtype)


class WanVideoVAE:
    """``AutoencoderKLWan`` behind the :class:`~anytalker_core.condition.VideoVAE` protocol.

    ``tiled``: decode and encode in spatial tiles (diffusers' tiling), for large frames on small GPUs.
    """

    def __init__(self, model: torch.nn.Module, tiled: bool = False):
        self.model = model.eval().requires_grad_(False)
        if tiled:
            self.model.enable_tiling()

    @property
    def _param(self) -> torch.Tensor:
        return next(self.model.parameters())

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, 3, F, H, W]`` in [-1, 1] -> normalised latent ``[B, 16, (F-1)/4+1, H/8, W/8]`` float32."""
        _check_video(video)
        param = self._param
        mean = self.model.encode(video.to(device=param.device, dtype=param.dtype)).latent_dist.mode()
        return normalize_latent(mean.float())

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latent ``[B, 16, T, h, w]`` -> ``[B, 3, 4(T-1)+1, 8h, 8w]`` float32 in [-1, 1]."""
        param = self._param
        raw = denormalize_latent(latent.float()).to(device=param.device, dtype=param.dtype)
        return self.model.decode(raw).sample.float().clamp_(-1, 1)

    def to(self, device: torch.device | str) -> "WanVideoVAE":
        self.model.to(device)
        return self


def _check_video(video: Any) -> None:
    if not isinstance(video, torch.Tensor) or video.dim() != 5 or video.shape[1] != 3:
        got = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"VAE encode takes a video [B, 3, F, H, W] in [-1, 1], got {got}")
    if not timeline.is_4n1(video.shape[2]) or video.shape[3] % 8 or video.shape[4] % 8:
        raise ValueError(f"VAE encode needs 4n+1 frames and sides that are multiples of 8, got {tuple(video.shape)}")


# ----------------------------------------------------------------------------------------------------- loading


def _diffusers_keys(state: StateDict, source: str) -> StateDict:
    state = {k.removeprefix("vae.").removeprefix("first_stage_model."): v for k, v in state.items()}
    if "encoder.conv_in.weight" in state:
        return state
    if "encoder.conv1.weight" in state:  # the original Wan layout
        from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

        return convert_wan_vae_to_diffusers(state)
    raise CheckpointError(
        f"{source}: not a Wan2.1 VAE (no 'encoder.conv1.weight' or 'encoder.conv_in.weight'); expected "
        "wan_2.1_vae.safetensors or Wan2.1_VAE.pth"
    )


def load_vae(
    source: str | Path | Mapping[str, torch.Tensor],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    tiled: bool = False,
) -> WanVideoVAE:
    """Load the Wan2.1 VAE from a file, a diffusers folder or a state dict (see the module docstring).

    The architecture is Wan2.1's (``dim_mult`` 1, 2, 4, 4, two residual blocks per stage, 16 latent channels);
    its base width is read off the weights. ``dtype``: float32 by default, as the reference runs it.
    """
    from diffusers import AutoencoderKLWan

    folder = library_folder(source)
    if folder is not None:
        model = from_folder(AutoencoderKLWan, folder, "diffusers VAE folder", torch_dtype=dtype)
        return WanVideoVAE(model.to(device), tiled)

    raw, name = read_tensors(source)
    state = _diffusers_keys(dequantize(raw, name), name)
    try:
        base_dim = state["encoder.conv_in.weight"].shape[0]
        z_dim = state["post_quant_conv.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(f"{name}: missing {err.args[0]!r}; is this a Wan2.1 VAE?") from None
    if z_dim != 16:
        raise CheckpointError(f"{name}: a {z_dim}-channel VAE; AnyTalker uses the 16-channel Wan2.1 VAE, not Wan2.2's")
    with torch.device("meta"):
        model = AutoencoderKLWan(base_dim=base_dim, z_dim=z_dim)
    try:
        model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    except RuntimeError as err:
        raise CheckpointError(f"{name}: does not fit the Wan2.1 VAE of base width {base_dim} ({err})") from None
    return WanVideoVAE(model.to(device), tiled)
