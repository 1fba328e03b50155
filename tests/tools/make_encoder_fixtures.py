"""Make the tiny encoder fixtures in ``tests/fixtures/encoders/`` from the reference implementation.

Run as ``python tests/tools/make_encoder_fixtures.py --reference /path/to/AnyTalker`` (a checkout of
HKUST-C4G/AnyTalker). It writes three pairs of files, float32 throughout, deterministic (fixed seeds):

- ``t5.safetensors`` / ``t5.json``: a tiny umT5 encoder (the reference's ``T5Encoder`` with ``shared_pos=False``),
  its weights as ``weights.<key>`` (the key layout of ``models_t5_umt5-xxl-enc-bf16.pth``), ``in.ids``,
  ``in.mask`` and ``out.context`` = ``model(ids, mask)`` as ``T5EncoderModel.__call__`` calls it.
- ``clip.safetensors`` / ``clip.json``: a tiny ``VisionTransformer`` configured like the ViT-H/14 tower of
  ``clip_xlm_roberta_vit_h_14``, weights as ``weights.visual.<key>``, ``in.image`` [3, H, W] in [-1, 1] and
  ``out.features`` = what ``CLIPModel.visual([image[:, None]])`` returns (the 31-block output, here the
  output of all but the last block).
- ``vae.safetensors`` / ``vae.json``: a tiny ``WanVAE_`` with the ``_video_vae`` config, weights as
  ``weights.<key>`` (the layout of ``Wan2.1_VAE.pth``), ``in.video``, ``out.latent`` (normalised posterior
  mean, what ``WanVAE.encode`` returns) and ``out.decoded`` (what ``WanVAE.decode`` returns for it).

The reference is imported at run time from the checkout (its module files are loaded one by one, bypassing
the heavy package ``__init__`` files); none of its code is copied here. Missing but unused imports (``ftfy``,
``torchvision``) are stubbed, the CUDA-only ``flash_attention`` used by the CLIP tower is replaced with
PyTorch's ``scaled_dot_product_attention`` (the same maths in float32), and the reference's CUDA autocast
contexts are inert on a CPU-only build.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import inspect
import json
import logging
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from reference_harness import sdpa_attention  # noqa: E402  (the stand-in the DiT fixtures use too)

LOG = logging.getLogger("make_encoder_fixtures")

OUT_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "encoders"
MIRROR_GIT_DIR = Path("/work/.mirror/HKUST-C4G+AnyTalker/repo")

# The open-clip (OpenAI CLIP) normalisation the reference's CLIP transforms end with.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

T5_KWARGS = dict(
    vocab=300,
    dim=32,
    dim_attn=32,
    dim_ffn=64,
    num_heads=4,
    num_layers=2,
    num_buckets=32,
    shared_pos=False,
    dropout=0.1,
)
CLIP_KWARGS = dict(
    image_size=224,
    patch_size=14,
    dim=32,
    mlp_ratio=4,
    out_dim=16,
    num_heads=4,
    num_layers=3,
    pool_type="token",
    pre_norm=True,
    post_norm=False,
    activation="gelu",
    attn_dropout=0.0,
    proj_dropout=0.0,
    embedding_dropout=0.0,
    norm_eps=1e-5,
)
VAE_KWARGS = dict(
    dim=4,
    z_dim=16,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    dropout=0.0,
)

SEEDS = {
    "t5": {"weights": 1001, "inputs": 1002},
    "clip": {"weights": 2001, "inputs": 2002},
    "vae": {"weights": 3001, "inputs": 3002},
}


# --------------------------------------------------------------------------------------------------------------
# Loading the reference modules
# --------------------------------------------------------------------------------------------------------------


def _stub_if_missing(name: str, attrs: dict | None = None, made: list[str] | None = None) -> None:
    """Register an empty stand-in module for ``name`` when it cannot be imported; list it in ``made``."""
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
        return
    except ImportError:
        pass
    mod = types.ModuleType(name)
    for k, v in (attrs or {}).items():
        setattr(mod, k, v)
    if "." in name:
        parent, child = name.rsplit(".", 1)
        _stub_if_missing(parent, made=made)
        setattr(sys.modules[parent], child, mod)
    else:
        mod.__path__ = []
    sys.modules[name] = mod
    if made is not None:
        made.append(name)
    LOG.info("stubbed missing module %s (not used by the fixtures)", name)


def _load_module(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@contextlib.contextmanager
def _cpu_current_device():
    """``t5.py`` evaluates ``torch.cuda.current_device()`` as a default argument at import time."""
    if torch.cuda.is_available():
        yield
        return
    original = torch.cuda.current_device
    torch.cuda.current_device = lambda: "cpu"
    try:
        yield
    finally:
        torch.cuda.current_device = original


def load_reference(root: Path) -> dict[str, types.ModuleType]:
    modules_dir = root / "wan" / "modules"
    if not (modules_dir / "t5.py").is_file():
        raise SystemExit(f"{root} does not look like an AnyTalker checkout (no wan/modules/t5.py)")
    for pkg, path in (("wan", root / "wan"), ("wan.modules", modules_dir)):
        mod = types.ModuleType(pkg)
        mod.__path__ = [str(path)]
        sys.modules[pkg] = mod
    made: list[str] = []
    _stub_if_missing("ftfy", {"fix_text": lambda text: text}, made)
    mods = {}
    for name in ("attention", "tokenizers", "xlm_roberta", "t5", "clip", "vae"):
        if name == "clip":  # only clip.py imports torchvision; a stub left behind would confuse transformers
            _stub_if_missing("torchvision.transforms", made=made)
        with _cpu_current_device():
            mods[name] = _load_module(f"wan.modules.{name}", modules_dir / f"{name}.py")
    for name in made:
        sys.modules.pop(name, None)
    mods["clip"].flash_attention = sdpa_attention  # the reference's attention in full precision, as for the DiT
    return mods


def reference_commit(root: Path) -> str:
    for cmd in (
        ["git", "-C", str(root), "rev-parse", "HEAD"],
        ["git", f"--git-dir={MIRROR_GIT_DIR}", "log", "-1", "--format=%H"],
    ):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            continue
        if len(out) == 40:
            return out
    return "unknown"


# --------------------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------------------


def randomise(model: torch.nn.Module, seed: int, rule) -> dict[str, torch.Tensor]:
    """Overwrite every state_dict entry (in sorted key order) with ``rule(key, normal_sample)``."""
    gen = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    new = {}
    for key in sorted(state):
        noise = torch.randn(state[key].shape, generator=gen, dtype=torch.float32)
        new[key] = rule(key, noise).contiguous()
    model.load_state_dict(new, strict=True)
    return new


def t5_rule(key: str, n: torch.Tensor) -> torch.Tensor:
    if key.endswith("pos_embedding.embedding.weight"):
        return 0.5 * n
    if "norm" in key:
        return 1 + 0.1 * n
    return 0.2 * n


def clip_rule(key: str, n: torch.Tensor) -> torch.Tensor:
    if "norm" in key and key.endswith("weight"):
        return 1 + 0.1 * n
    if key.endswith("bias"):
        return 0.02 * n
    return 0.05 * n


def vae_rule(key: str, n: torch.Tensor) -> torch.Tensor:
    if key.endswith("gamma"):
        return 1 + 0.1 * n
    if key.endswith("bias"):
        return 0.02 * n
    fan_in = 1
    for s in n.shape[1:]:
        fan_in *= s
    return n / fan_in**0.5


# --------------------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------------------


def _write(name: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    for k, v in tensors.items():
        assert v.dtype in (torch.float32, torch.int64), (k, v.dtype)
    save_file(tensors, str(OUT_DIR / f"{name}.safetensors"), metadata={"fixture": name})
    (OUT_DIR / f"{name}.safetensors").chmod(0o644)
    meta = dict(meta)
    meta["shapes"] = {k: list(v.shape) for k, v in tensors.items() if not k.startswith("weights.")}
    meta["num_weights"] = sum(1 for k in tensors if k.startswith("weights."))
    (OUT_DIR / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    size = (OUT_DIR / f"{name}.safetensors").stat().st_size
    LOG.info("wrote %s.safetensors (%d bytes) and %s.json", name, size, name)


def make_t5(ref, common: dict) -> None:
    t5 = ref["t5"]
    torch.manual_seed(SEEDS["t5"]["weights"])
    model = t5.T5Encoder(**T5_KWARGS).eval().requires_grad_(False)
    weights = randomise(model, SEEDS["t5"]["weights"], t5_rule)

    gen = torch.Generator().manual_seed(SEEDS["t5"]["inputs"])
    length, lens = 12, [12, 7]
    ids = torch.zeros(2, length, dtype=torch.int64)
    mask = torch.zeros(2, length, dtype=torch.int64)
    for b, n in enumerate(lens):
        ids[b, : n - 1] = torch.randint(2, T5_KWARGS["vocab"], (n - 1,), generator=gen)
        ids[b, n - 1] = 1  # EOS
        mask[b, :n] = 1
    with torch.no_grad():
        context = model(ids, mask)  # as T5EncoderModel.__call__ does; it then keeps u[:len] per sequence
    tensors = {f"weights.{k}": v for k, v in weights.items()}
    tensors.update({"in.ids": ids, "in.mask": mask, "out.context": context.float()})
    meta = dict(common)
    meta.update(
        reference_class="wan.modules.t5.T5Encoder",
        constructor_kwargs=T5_KWARGS,
        layer_norm_eps=model.norm.eps,
        seeds=SEEDS["t5"],
        weight_rule="sorted keys, one torch.Generator(seed=weights): pos_embedding.embedding.weight 0.5*N, "
        "*norm* 1+0.1*N, else 0.2*N",
        pad_id=0,
        eos_id=1,
        real_rows=lens,
        note="out.context rows beyond real_rows[b] are padding positions (the reference computes them but "
        "T5EncoderModel.__call__ drops them).",
    )
    _write("t5", tensors, meta)


def make_clip(ref, common: dict) -> None:
    clip = ref["clip"]
    torch.manual_seed(SEEDS["clip"]["weights"])
    visual = clip.VisionTransformer(**CLIP_KWARGS).eval().requires_grad_(False)
    weights = randomise(visual, SEEDS["clip"]["weights"], clip_rule)

    gen = torch.Generator().manual_seed(SEEDS["clip"]["inputs"])
    coarse = torch.randn(1, 3, 6, 8, generator=gen)
    image = torch.tanh(1.5 * F.interpolate(coarse, size=(96, 128), mode="bicubic", align_corners=False))[0]

    mean = torch.tensor(CLIP_MEAN).view(-1, 1, 1)
    std = torch.tensor(CLIP_STD).view(-1, 1, 1)

    def normalize(x: torch.Tensor) -> torch.Tensor:  # torchvision's Normalize on a tensor (not in place)
        return (x - mean) / std

    # Call the reference's CLIPModel.visual itself on a stand-in ``self`` holding the tiny tower.
    shim = types.SimpleNamespace(
        dtype=torch.float32,
        model=types.SimpleNamespace(image_size=CLIP_KWARGS["image_size"], visual=visual),
        transforms=types.SimpleNamespace(transforms=[normalize]),
    )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        features = clip.CLIPModel.visual(shim, [image.clone()[:, None, :, :]])
    assert features.dtype == torch.float32 and list(features.shape) == [1, 257, CLIP_KWARGS["dim"]]

    tensors = {f"weights.visual.{k}": v for k, v in weights.items()}
    tensors.update({"in.image": image, "out.features": features})
    meta = dict(common)
    meta.update(
        reference_class="wan.modules.clip.VisionTransformer (XLMRobertaCLIP.visual)",
        constructor_kwargs=CLIP_KWARGS,
        seeds=SEEDS["clip"],
        weight_rule="sorted keys, one torch.Generator(seed=weights): *norm*.weight 1+0.1*N, *bias 0.02*N, else 0.05*N",
        image_rule="tanh(1.5 * bicubic(randn[1,3,6,8] from Generator(seed=inputs), (96,128), align_corners=False))",
        preprocess={
            "resize": [224, 224],
            "mode": "bicubic",
            "align_corners": False,
            "then": "x*0.5+0.5",
            "mean": CLIP_MEAN,
            "std": CLIP_STD,
        },
        output="CLIPModel.visual([in.image[:, None]]) = visual(videos, use_31_block=True): all blocks but the "
        "last, no post_norm; float32, no autocast; flash_attention replaced by scaled_dot_product_attention",
    )
    _write("clip", tensors, meta)


def _wan21_mean_std(vae_mod) -> tuple[list[float], list[float]]:
    """The 16-channel latent mean/std lists, read from the reference's ``WanVAE.__init__`` source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(vae_mod.WanVAE.__init__)))
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("mean", "std") and isinstance(node.value, ast.List):
                found[node.targets[0].id] = ast.literal_eval(node.value)
    return found["mean"], found["std"]


def make_vae(ref, common: dict) -> None:
    vae = ref["vae"]
    torch.manual_seed(SEEDS["vae"]["weights"])
    model = vae.WanVAE_(**VAE_KWARGS).eval().requires_grad_(False)
    weights = randomise(model, SEEDS["vae"]["weights"], vae_rule)

    gen = torch.Generator().manual_seed(SEEDS["vae"]["inputs"])
    coarse = torch.randn(1, 3, 3, 4, 6, generator=gen)
    video = torch.tanh(1.5 * F.interpolate(coarse, size=(5, 32, 48), mode="trilinear", align_corners=False))

    # Build the reference's WanVAE wrapper around the tiny model (its checkpoint loader is bypassed), so that
    # encode/decode run the wrapper's own code: scale = [mean, 1/std], .float(), .clamp_(-1, 1), clear_cache.
    original = vae._video_vae
    vae._video_vae = lambda pretrained_path=None, z_dim=None, device="cpu", **kwargs: model
    try:
        wrapper = vae.WanVAE(z_dim=VAE_KWARGS["z_dim"], vae_pth=None, dtype=torch.float32, device="cpu")
    finally:
        vae._video_vae = original
    mean, std = _wan21_mean_std(vae)
    assert torch.equal(wrapper.mean, torch.tensor(mean)) and torch.equal(wrapper.std, torch.tensor(std))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        latent = wrapper.encode([video[0].clone()])[0]
        decoded = wrapper.decode([latent.clone()])[0]
    latent, decoded = latent[None], decoded[None]
    assert latent.dtype == torch.float32 and decoded.dtype == torch.float32

    tensors = {f"weights.{k}": v for k, v in weights.items()}
    tensors.update({"in.video": video, "out.latent": latent, "out.decoded": decoded})
    meta = dict(common)
    meta.update(
        reference_class="wan.modules.vae.WanVAE_ (wrapped by wan.modules.vae.WanVAE)",
        constructor_kwargs=VAE_KWARGS,
        seeds=SEEDS["vae"],
        weight_rule="sorted keys, one torch.Generator(seed=weights): *gamma 1+0.1*N, *bias 0.02*N, "
        "conv weights N/sqrt(fan_in) (fan_in = prod(shape[1:]))",
        video_rule="tanh(1.5 * trilinear(randn[1,3,3,4,6] from Generator(seed=inputs), (5,32,48), "
        "align_corners=False))",
        latent_mean=mean,
        latent_std=std,
        output="out.latent = (mu - mean) / std (WanVAE.encode: model.encode(x, [mean, 1/std])); "
        "out.decoded = WanVAE.decode([latent]) = model.decode(z, scale).float().clamp_(-1, 1); batch dim restored",
    )
    _write("vae", tensors, meta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="checkout of HKUST-C4G/AnyTalker")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    torch.set_grad_enabled(False)
    ref = load_reference(args.reference.resolve())
    common = {
        "reference": "HKUST-C4G/AnyTalker",
        "reference_commit": reference_commit(args.reference),
        "torch": torch.__version__,
        "dtype": "float32",
    }
    make_t5(ref, common)
    make_clip(ref, common)
    make_vae(ref, common)
    return 0


if __name__ == "__main__":
    sys.exit(main())
