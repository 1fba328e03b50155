"""The AnyTalker DiT as a native ComfyUI ``MODEL``: built from the host's layers, wrapped like a Wan model.

- :class:`HostDiT` is ``AnyTalkerDiT`` with the call signature the host's ``BaseModel`` uses for Wan
  (``x`` = noisy latent and the 20 ``y`` channels concatenated, ``timestep``, ``context``, ``clip_fea`` and our
  ``anytalker_*`` conditioning). Parameter names and the ``blocks`` layout are Wan's, so Wan LoRAs load through
  ``LoraLoaderModelOnly``; every attention, the identity attention included, goes through
  :func:`host_attention` (the host's ``optimized_attention``, looked up at call time so SageAttention-style
  patches reach it). Pure torch: importable without the host.
- It honours the host's seams as the host's own Wan model does (:class:`HostHooks`): the forward runs through
  the host's ``WrapperExecutor`` with the ``DIFFUSION_MODEL`` wrappers (EasyCache, ...); per block
  ``patches_replace["dit"][("double_block", i)]`` with Wan's argument dict, ``patches["double_block"]``, the
  attention patches (``attn1_patch``, ``attn2_patch``, ``attn1_output_patch``, ``attn2_output_patch``); every
  attention gets ``transformer_options`` (with ``block_index``, ``total_blocks``, ``grid_sizes``), so an
  ``optimized_attention_override`` reaches all of them. A host without a seam (0.3.64) simply never uses it.
- Every sampling run opens the DiT's context cache (:func:`context_cache_wrapper`, an ``OUTER_SAMPLE`` wrapper):
  the conditioning's keys and values are computed at the first step only, within a tenth of the free memory.
- :func:`load_model` builds it with ``comfy.ops`` layers (low-VRAM partial loading, fp8 storage) inside a
  ``model_base.WAN21`` subclass (latent format Wan21, the host's flow sampling with shift 5 for KSampler; AnyTalker
  Sampler runs the reference's exact schedule) and returns a
  ``ModelPatcher``, so KSampler, previews and the memory manager treat it like any Wan model.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import torch

from ..anytalker_core.encoders.vae import normalize_latent
from ..anytalker_core.model.config import AnyTalkerConfig
from ..anytalker_core.model.dit import AnyTalkerDiT
from ..anytalker_core.model.hooks import ForwardHooks
from ..anytalker_core.model.parallel import FrameSplit

log = logging.getLogger("AnyTalker")

CONDITION_KEYS = ("anytalker_audio", "anytalker_faces", "anytalker_masks")
WEIGHT_DTYPES = ("default", "bf16", "fp16", "fp8_e4m3fn", "fp8_e5m2")
CACHE_SHARE = 0.1  # of the free device memory (after the weights) a run's context cache may hold


def host_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask=None, transformer_options: dict | None = None
) -> torch.Tensor:
    """``[B, L, D]`` q, k, v -> ``[B, L, D]`` through the host's current ``optimized_attention``; with the
    forward's ``transformer_options``, whose ``optimized_attention_override`` the host applies."""
    from comfy.ldm.modules import attention

    if transformer_options is None:
        return attention.optimized_attention(q, k, v, heads, mask=mask)
    return attention.optimized_attention(q, k, v, heads, mask=mask, transformer_options=transformer_options)


# The host's names of our patch points (anytalker_core.model.hooks.PATCH_POINTS): Wan's own (attn1_patch,
# attn2_patch: one dict argument) and the attention-output patches of the host's other models (two arguments).
WAN_PATCHES = {"self_attention": "attn1_patch", "after_cross_attention": "attn2_patch"}
OUTPUT_PATCHES = {"self_attention_output": "attn1_output_patch", "cross_attention_output": "attn2_output_patch"}


class HostHooks(ForwardHooks):
    """The host's seams in one forward, read from its ``transformer_options`` as its Wan model reads them.

    ``x_input``: the forward's input [B, 36, T, H, W] (``patches["double_block"]`` get it as ``x``).
    """

    def __init__(self, options: dict, x_input: torch.Tensor, heads: int, total_blocks: int):
        self.options, self.x_input, self.heads = options, x_input, heads
        self.patches = options.get("patches", {})
        self.replace = options.get("patches_replace", {}).get("dit", {})
        options["total_blocks"] = total_blocks
        options["block_type"] = "double"

    def attention(self, attention: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if attention is not host_attention:  # replaced by hand (tests, a pack's own kernel): used as given
            return attention
        options = self.options

        def with_options(q, k, v, heads, mask=None):
            return host_attention(q, k, v, heads, mask=mask, transformer_options=options)

        return with_options

    def block(self, index: int, block: torch.nn.Module, x: torch.Tensor, e0: torch.Tensor, ctx: Any) -> torch.Tensor:
        options = self.options
        options["block_index"] = index
        options["grid_sizes"] = torch.Size(ctx.grid)
        replace = self.replace.get(("double_block", index))
        if replace is None:
            x = block(x, e0, ctx)
        else:

            def original_block(args: dict) -> dict:
                inner = ctx if args["txt"] is ctx.text else dataclasses.replace(ctx, text=args["txt"])
                return {"img": block(args["img"].clone(), args["vec"], inner)}  # our blocks update in place

            args = {"img": x, "txt": ctx.text, "vec": e0, "pe": ctx.rope, "transformer_options": options}
            x = replace(args, {"original_block": original_block})["img"]
        for patch in self.patches.get("double_block", ()):
            args = {"img": x, "x": self.x_input, "vec": e0, "block_index": index, "img_offset": 0,
                    "transformer_options": options}  # fmt: skip
            x = patch(args)["img"]
        return x

    def patch(self, point: str, x: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
        if point in WAN_PATCHES:
            for patch in self.patches.get(WAN_PATCHES[point], ()):
                x = patch({"x": x, **extras, "transformer_options": self.options})
        elif self.patches.get(OUTPUT_PATCHES[point]):
            extra_options = {k: v for k, v in self.options.items() if k not in ("patches", "patches_replace")}
            extra_options.update(n_heads=self.heads, dim_head=x.shape[-1] // self.heads)
            for patch in self.patches[OUTPUT_PATCHES[point]]:
                x = patch(x, extra_options)
        return x


@torch.compiler.disable  # data-dependent length: one clean graph break, before the blocks
def _text_rows(context: torch.Tensor, text_len: int) -> torch.Tensor:
    """The host pads the umT5 output to 512 rows with zeros; drop trailing all-zero rows (the model zero-pads
    again and merges the padding into one key, the same softmax) and keep at most ``text_len`` rows."""
    context = context[:, :text_len]
    used = (context.abs().amax(dim=(0, 2)) > 0).nonzero()
    return context[:, : int(used[-1]) + 1] if len(used) else context[:, :1]


class HostDiT(AnyTalkerDiT):
    """``AnyTalkerDiT`` with the host's Wan call signature (see the module docstring).

    ``sequence_group``: a ``torch.distributed`` process group whose ranks run every forward together, each on
    its own latent frames (``anytalker_core/model/parallel.py``, the host's hooks inside); set by Raylight's
    sequence-parallel inject (``nodes/raylight.py``). None: the whole clip in this process.
    """

    sequence_group: Any = None

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        clip_fea: torch.Tensor | None = None,
        transformer_options: dict | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """x: [B, 36, T, H, W] (16 latent + 20 condition channels); ``anytalker_*`` keywords: see ``_forward``.

        Runs through the host's ``DIFFUSION_MODEL`` wrappers, as its Wan model does (the options dict last)."""
        options = {} if transformer_options is None else transformer_options
        try:
            import comfy.patcher_extension as extension
        except ImportError:  # no host (the tests): nothing can wrap the model
            return self._forward(x, timestep, context, clip_fea, options, **kwargs)
        wrappers = extension.get_all_wrappers(extension.WrappersMP.DIFFUSION_MODEL, options)
        executor = extension.WrapperExecutor.new_class_executor(self._forward, self, wrappers)
        return executor.execute(x, timestep, context, clip_fea, options, **kwargs)

    def _forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        clip_fea: torch.Tensor | None,
        transformer_options: dict,
        anytalker_audio: torch.Tensor | None = None,
        anytalker_faces: torch.Tensor | None = None,
        anytalker_masks: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Identities stacked on dim 1: audio [B, N, F, 5, 12, 768], faces [B, N, 257, 1280],
        masks [B, N, T, H/2, W/2]."""
        if clip_fea is None:
            raise ValueError(
                "AnyTalker got no image features: build the conditioning with the 'AnyTalker Image To Video' node "
                "(it attaches the picture's CLIP vision features, the face masks and the voices)"
            )
        fixed = transformer_options.get("anytalker_timestep")
        if fixed is not None:  # our sampler's exact run: the schedule's int64 timestep, as the reference passes it
            timestep = torch.full_like(timestep, float(fixed))
        latent_channels = self.config.out_dim
        identities = {}
        if anytalker_audio is not None:
            identities = dict(
                audio=list(anytalker_audio.unbind(1)),
                faces=list(anytalker_faces.unbind(1)),
                masks=list(anytalker_masks.unbind(1)),
            )
        hooks: ForwardHooks = HostHooks(transformer_options, x, self.config.num_heads, len(self.blocks))
        if self.sequence_group is not None:
            hooks = FrameSplit(self.config.num_heads, len(self.blocks), self.sequence_group, inner=hooks)
        return super().forward(
            x[:, :latent_channels], timestep, text=_text_rows(context, self.config.text_len), clip=clip_fea,
            y=x[:, latent_channels:], hooks=hooks, **identities,
        )  # fmt: skip


def build_host_dit(
    anytalker: dict, dtype: torch.dtype | None = None, device=None, operations=None, **_: Any
) -> HostDiT:
    """The ``unet_model`` factory the host's ``BaseModel`` calls with ``unet_config`` as keywords."""
    cfg = AnyTalkerConfig(**anytalker)
    model = HostDiT(cfg, operations=operations or torch.nn, attention=host_attention, device=device, dtype=dtype)
    model.dtype = dtype  # the host reads the weight dtype from here (BaseModel.get_dtype)
    return model


def _host_classes() -> tuple[type, type]:
    """The host classes (model config, model), defined on first use so that importing this file needs no host."""
    global _CLASSES
    if _CLASSES is not None:
        return _CLASSES
    import comfy.conds
    import comfy.latent_formats
    import comfy.model_base
    import comfy.supported_models_base
    import comfy.utils

    class AnyTalkerWan(comfy.model_base.WAN21):
        """A Wan 2.1 i2v model whose DiT is AnyTalker's; ``y`` carries AnyTalker's face-mask channels."""

        def __init__(self, model_config, model_type=comfy.model_base.ModelType.FLOW, device=None):
            base = comfy.model_base.BaseModel
            base.__init__(self, model_config, model_type, device=device, unet_model=build_host_dit)
            self.image_to_video = True
            self.diffusion_model.compute_dtype = self.manual_cast_dtype

        def concat_cond(self, **kwargs):
            noise = kwargs["noise"]
            y_mask, image = kwargs.get("anytalker_y_mask"), kwargs.get("concat_latent_image")
            if y_mask is None or image is None:
                raise ValueError(
                    "AnyTalker needs its image-to-video conditioning (start frame latent and face-mask channels): "
                    "connect positive/negative from the 'AnyTalker Image To Video' node"
                )
            if tuple(image.shape[-3:]) != tuple(noise.shape[-3:]):
                raise ValueError(
                    f"the latent is {list(noise.shape[-3:])} (frames, height, width) but the AnyTalker conditioning "
                    f"was made for {list(image.shape[-3:])}: use the LATENT from the same 'AnyTalker Image To Video'"
                )
            device = kwargs["device"]
            y = torch.cat([y_mask.to(device), normalize_latent(image.to(device))], dim=1)
            return comfy.utils.resize_to_batch_size(y, noise.shape[0])

        def extra_conds(self, **kwargs):
            out = super().extra_conds(**kwargs)
            for key in CONDITION_KEYS:
                if kwargs.get(key) is not None:
                    out[key] = comfy.conds.CONDRegular(kwargs[key])
            return out

    class AnyTalkerWanConfig(comfy.supported_models_base.BASE):
        unet_config: dict = {}
        unet_extra_config: dict = {}
        sampling_settings = {"shift": 5.0}  # KSampler's flow shift; AnyTalker Sampler uses the reference's schedule
        latent_format = comfy.latent_formats.Wan21
        memory_usage_factor = 1.0
        supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]

        def get_model(self, state_dict, prefix="", device=None):
            return AnyTalkerWan(self, device=device)

    _CLASSES = (AnyTalkerWanConfig, AnyTalkerWan)
    return _CLASSES


_CLASSES: tuple[type, type] | None = None


def context_cache_budget(patcher: Any) -> int:
    """Bytes a run's context cache may hold: :data:`CACHE_SHARE` of the device's free memory once the
    weights still to be loaded are there."""
    import comfy.model_management as mm

    pending = patcher.model_size() - patcher.loaded_size()
    return max(0, int((mm.get_free_memory(patcher.load_device) - pending) * CACHE_SHARE))


def context_cache_wrapper(executor, *args, **kwargs):
    """``OUTER_SAMPLE`` wrapper: one sampling run (any sampler node) with the DiT's context cache open.

    Not when hooks may change the weights between steps (per-step LoRA strengths): the cache would go stale.
    """
    guider = executor.class_obj
    patcher = guider.model_patcher
    dit = getattr(patcher.model, "diffusion_model", None)
    conds = getattr(guider, "conds", None) or {}
    hooked = getattr(patcher, "hook_patches", None) or any("hooks" in c for cs in conds.values() for c in cs)
    if not isinstance(dit, AnyTalkerDiT) or hooked:
        return executor(*args, **kwargs)
    with dit.context_cache(context_cache_budget(patcher)) as cache:
        out = executor(*args, **kwargs)
    log.info("AnyTalker context cache: %s", cache.summary())
    return out


def load_model(path: str, weight_dtype: str = "default", disable_dynamic: bool = False) -> Any:
    """An AnyTalker checkpoint -> a host ``ModelPatcher`` (see the module docstring).

    The patcher can rebuild itself (``cached_patcher_init``): the host's multi-GPU work units and
    ``clone(disable_dynamic=True)`` (TorchCompileModel on a dynamic-VRAM host) load a fresh copy this way.
    """
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.patcher_extension

    from ..anytalker_core.model.loader import check_keys, read_state_dict, resolve_config

    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype {weight_dtype!r}: expected one of {', '.join(WEIGHT_DTYPES)}")
    state, name = read_state_dict(path)
    cfg = resolve_config(state, None, name)
    with torch.device("meta"):
        check_keys({k: v.shape for k, v in AnyTalkerDiT(cfg).state_dict().items()}, state, name)

    config_cls, _ = _host_classes()
    fields = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    model_config = config_cls({"anytalker": fields})
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    stored = next(iter(state.values())).dtype
    requested = {
        "bf16": torch.bfloat16, "fp16": torch.float16, "fp8_e4m3fn": torch.float8_e4m3fn,
        "fp8_e5m2": torch.float8_e5m2,
    }.get(weight_dtype)  # fmt: skip
    params = sum(t.numel() for t in state.values())
    unet_dtype = requested or mm.unet_dtype(
        model_params=params, supported_dtypes=model_config.supported_inference_dtypes, weight_dtype=stored
    )
    manual_cast = mm.unet_manual_cast(unet_dtype, load_device, model_config.supported_inference_dtypes)
    try:
        model_config.set_inference_dtype(unet_dtype, manual_cast, device=load_device)
    except TypeError:  # ComfyUI before the dynamic-VRAM loader
        model_config.set_inference_dtype(unet_dtype, manual_cast)
    model = model_config.get_model(state, "")
    patcher_cls = comfy.model_patcher.ModelPatcher
    if not disable_dynamic:
        patcher_cls = getattr(comfy.model_patcher, "CoreModelPatcher", patcher_cls)
    patcher = patcher_cls(model, load_device=load_device, offload_device=offload_device)
    if not mm.is_device_cpu(offload_device):
        model.to(offload_device)
    dynamic = bool(getattr(patcher, "is_dynamic", lambda: False)())
    if dynamic:
        model.load_model_weights(state, "", assign=True)
    else:
        model.load_model_weights(state, "")
    patcher.cached_patcher_init = (load_model, (path, weight_dtype))
    patcher.add_wrapper_with_key(
        comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, "anytalker_context_cache", context_cache_wrapper
    )
    return patcher
