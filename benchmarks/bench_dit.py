"""Benchmark the AnyTalker DiT forward: ours against the public reference, side by side.

Measures, for 1, 2 and 3 identities at the "mid config" (real 1.3B block sizes
with 2 blocks, latent ``[1,16,6,32,56]``, variant ``af``, 30 text tokens,
float32, 2 threads):

* the forward time, in ``--runs`` interleaved rounds (see below);
* the peak memory above the weights and inputs during one cold forward
  (resident set on CPU, measured in a separate child whose glibc malloc
  returns freed blocks at once, see ``EXACT_MALLOC_ENV``; allocator on CUDA);
* the forward's FLOPs (``torch.utils.flop_counter.FlopCounterMode``) and the
  achieved GFLOP/s, against a plain float32 matmul timed in the same rounds
  (the machine's practical ceiling);

and checks the targets: ours at most 0.8x the reference's time at the largest
identity count, each extra identity at most 6% of a one-identity forward
(ours), ours' peak memory above the weights at most half the reference's.

Timing.  The speed of a small shared machine drifts by 10-30% over minutes,
so timings taken one after another do not compare.  One timing child builds
every model (ours and the reference, same weight rule) and the inputs of every
identity count, counts each (implementation, identity count)'s FLOPs, runs
each once to warm up, then runs ``--runs`` rounds: each round runs every
combination once, plus one ceiling matmul, in an order rotated by one
position from the previous round and reversed every other round.  Comparisons are paired: the ours/reference
time ratio and ours' cost per extra identity are computed within each round,
and the targets use their medians over the rounds (section ``paired``).

Memory.  Every (implementation, identity count) gets its own fresh child for
the memory peak, so that allocations do not mix.  The parent prints the
assembled JSON on stdout and a short summary on stderr.  The reference is
imported at run time from a checkout (see ``reference_harness.py``); without
one only ours runs.

Usage::

    python benchmarks/bench_dit.py --reference /tmp/anytalker_ref > bench.json
    python benchmarks/bench_dit.py --only reference --reference /tmp/anytalker_ref
    python benchmarks/bench_dit.py --ids 1,3 --runs 5 --mask dense-random
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(BENCH_DIR), str(REPO_ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import reference_harness as rh  # noqa: E402  (needs the path set-up above)

# Real Wan2.1-1.3B block sizes, only 2 blocks.
MID_CONFIG = dict(
    variant="af",
    dim=1536,
    ffn_dim=8960,
    num_heads=12,
    num_layers=2,
    in_dim=36,
    out_dim=16,
    text_dim=4096,
    freq_dim=256,
    text_len=512,
)
LATENT_SHAPE = (1, 16, 6, 32, 56)  # B, C, T, H, W: 21 video frames at 256x448
COND_CHANNELS = 20  # y: mask (4) + reference-frame latents (16)
TEXT_TOKENS = 30
CLIP_TOKENS, CLIP_DIM = 257, 1280
AUDIO_WINDOW, AUDIO_LAYERS, AUDIO_DIM = 5, 12, 768
FACE_BOX = (6, 6)  # rows x cols of the token grid covered by a face

MAX_TIME_RATIO = 0.8  # ours / reference at the largest identity count
MAX_EXTRA_ID_FRACTION = 0.06  # per extra identity, of a one-identity forward
MAX_MEMORY_RATIO = 0.5  # ours / reference, peak above the weights

IMPLEMENTATIONS = ("ours", "reference")
MATMUL_TASK = "matmul"  # label of the ceiling matmul in the timing rounds

# Environment of the memory children.  glibc's malloc by default raises its mmap
# threshold (up to 32 MiB) as blocks are freed and then keeps freed memory in its
# heap, so the resident peak of a forward swings by +-100 MiB from run to run.
# A fixed threshold hands every block over 128 KiB straight back to the system,
# so VmHWM measures the live tensors.  It costs ~10% speed, hence the timing
# child keeps the default allocator.
EXACT_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line (``--child``, ``--impls`` and ``--n-ids`` are internal).

    ``--child ours|reference`` is a memory child for one implementation at
    ``--n-ids`` identities; ``--child timing`` is the interleaved timing child
    for the implementations in ``--impls`` at every count in ``--ids``.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", default="1,2,3", help="comma-separated identity counts (default 1,2,3)")
    parser.add_argument(
        "--runs", type=int, default=9, help="timing rounds; each times every (implementation, identity count) once"
    )
    parser.add_argument(
        "--reference", default=None, help="AnyTalker reference checkout (default: $ANYTALKER_REFERENCE)"
    )
    parser.add_argument(
        "--mask",
        choices=("faces", "dense-random"),
        default="faces",
        help="face-region rectangles (default) or rand>0.5 everywhere",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--only", choices=("ours", "reference", "both"), default="both")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and inputs")
    parser.add_argument(
        "--matmul-size", type=int, default=3072, help="n of the n x n x n float32 matmul used as ceiling"
    )
    parser.add_argument("--child", choices=IMPLEMENTATIONS + ("timing",), help=argparse.SUPPRESS)
    parser.add_argument("--n-ids", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--impls", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.ids = sorted({int(n) for n in args.ids.split(",") if n.strip()})
    args.impls = tuple(impl for impl in args.impls.split(",") if impl)
    if set(args.impls) - set(IMPLEMENTATIONS):
        parser.error(f"--impls takes names from {IMPLEMENTATIONS}")
    if not args.ids or min(args.ids) < 1:
        parser.error("--ids needs positive identity counts")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def child_argv(args: argparse.Namespace, task: str, n_ids: int, impls: tuple) -> list[str]:
    """Command line re-running this script as the child ``task`` (see :func:`parse_args`)."""
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        task,
        "--n-ids",
        str(n_ids),
        "--impls",
        ",".join(impls),
        "--ids",
        ",".join(map(str, args.ids)),
        "--runs",
        str(args.runs),
        "--mask",
        args.mask,
        "--threads",
        str(args.threads),
        "--device",
        args.device,
        "--seed",
        str(args.seed),
        "--matmul-size",
        str(args.matmul_size),
    ]
    if args.reference:
        argv += ["--reference", str(args.reference)]
    return argv


# ----------------------------------------------------------------------------
# Inputs and weights
# ----------------------------------------------------------------------------


@dataclass
class Inputs:
    """One forward's inputs in our API's layout (batch size 1)."""

    x: torch.Tensor
    t: torch.Tensor
    text: torch.Tensor
    clip: torch.Tensor
    y: torch.Tensor
    audio: list
    faces: list
    masks: list


def face_box_mask(index: int, n_ids: int, frames: int, rows: int, cols: int) -> torch.Tensor:
    """``[1,T,rows,cols]`` mask: 1 inside identity ``index``'s face box, else 0.

    Identities stand side by side: box ``index`` of ``n_ids`` is centred
    horizontally in its own 1/n_ids-wide strip and vertically in the frame,
    the same box in every frame, as the pipeline's face-region masks are.
    """
    box_rows, box_cols = FACE_BOX
    top = (rows - box_rows) // 2
    centre = (index + 0.5) * cols / n_ids
    left = min(max(round(centre - box_cols / 2), 0), cols - box_cols)
    mask = torch.zeros(1, frames, rows, cols)
    mask[:, :, top : top + box_rows, left : left + box_cols] = 1.0
    return mask


def make_inputs(n_ids: int, mask_mode: str, seed: int, device: str) -> Inputs:
    """Seeded random inputs for ``n_ids`` identities at the mid config.

    Identity ``i``'s audio, face and (dense-random) mask come from their own
    seed, so they are the same whatever the identity count.
    """
    batch, _, frames, height, width = LATENT_SHAPE
    audio_frames = 4 * (frames - 1) + 1
    rows, cols = height // 2, width // 2
    gen = torch.Generator().manual_seed(seed)
    shared = dict(
        x=torch.randn(LATENT_SHAPE, generator=gen),
        t=torch.rand(batch, generator=gen) * 1000.0,
        text=torch.randn(batch, TEXT_TOKENS, MID_CONFIG["text_dim"], generator=gen),
        clip=torch.randn(batch, CLIP_TOKENS, CLIP_DIM, generator=gen),
        y=torch.randn(batch, COND_CHANNELS, frames, height, width, generator=gen),
    )
    audio, faces, masks = [], [], []
    for i in range(n_ids):
        gen_i = torch.Generator().manual_seed(seed + 1000 + i)
        audio.append(torch.randn(batch, audio_frames, AUDIO_WINDOW, AUDIO_LAYERS, AUDIO_DIM, generator=gen_i))
        faces.append(torch.randn(batch, CLIP_TOKENS, CLIP_DIM, generator=gen_i))
        if mask_mode == "dense-random":
            masks.append((torch.rand(batch, frames, rows, cols, generator=gen_i) > 0.5).float())
        else:
            masks.append(face_box_mask(i, n_ids, frames, rows, cols))
    identities = {k: [u.to(device) for u in v] for k, v in dict(audio=audio, faces=faces, masks=masks).items()}
    return Inputs(**{k: v.to(device) for k, v in shared.items()}, **identities)


def init_weights(model, seed: int) -> None:
    """Deterministic init: normal(0, 0.02) everywhere, norms' weights 1 and biases 0.

    Norm modules are recognised by class name, so the same rule applies to
    ours and the reference whatever their parameter names.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            is_norm = "norm" in type(module).__name__.lower()
            for name, param in module.named_parameters(recurse=False):
                if is_norm:
                    param.fill_(1.0 if name == "weight" else 0.0)
                else:
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.02)


# ----------------------------------------------------------------------------
# Implementations
# ----------------------------------------------------------------------------


def build_model(impl: str, reference: str | None):
    """Construct ``impl``'s model at the mid config (float32, eval, CPU)."""
    if impl == "ours":
        import anytalker_core as at

        return at.AnyTalkerDiT(at.AnyTalkerConfig(**MID_CONFIG)).float().eval()
    root, reason = rh.find_reference(reference)
    if root is None:
        raise RuntimeError(reason)
    return rh.build_reference_model(root, MID_CONFIG)


def forward(impl: str, model, inputs: Inputs):
    """One forward of ``impl`` on ``inputs``; returns ``[1,16,T,H,W]``."""
    if impl == "ours":
        return model(
            inputs.x,
            inputs.t,
            text=inputs.text,
            clip=inputs.clip,
            y=inputs.y,
            audio=inputs.audio,
            faces=inputs.faces,
            masks=inputs.masks,
        )
    return rh.reference_forward(
        model, inputs.x, inputs.t, inputs.text, inputs.clip, inputs.y, inputs.audio, inputs.faces, inputs.masks
    )


# ----------------------------------------------------------------------------
# Measurements (run inside a child)
# ----------------------------------------------------------------------------


class PeakMemory:
    """Peak memory of one region above a baseline, in MiB.

    CPU: resident set from ``/proc/self/status``; the peak (VmHWM) is reset
    by writing 5 to ``/proc/self/clear_refs``.  CUDA: the caching
    allocator's allocated bytes and their peak.
    """

    def __init__(self, device: str):
        self.device = device
        self.baseline = 0
        self.method = (
            "torch.cuda.max_memory_allocated"
            if device == "cuda"
            else "VmHWM - VmRSS, VmHWM reset via /proc/self/clear_refs"
        )

    def start(self) -> None:
        """Take the baseline and reset the peak."""
        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.baseline = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            return
        self.baseline = _proc_status_kib("VmRSS") * 1024
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        if _proc_status_kib("VmHWM") > _proc_status_kib("VmRSS") + 64 * 1024:
            raise RuntimeError("writing /proc/self/clear_refs did not reset VmHWM")

    def stop(self) -> dict:
        """Baseline and peak above it, in MiB."""
        if self.device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = _proc_status_kib("VmHWM") * 1024
        return {
            "baseline_mb": _mib(self.baseline),
            "peak_mb": _mib(peak),
            "peak_mem_above_weights_mb": _mib(peak - self.baseline),
        }


def _proc_status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status``."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _mib(n_bytes: float) -> float:
    """Bytes to MiB, rounded to 0.1."""
    return round(n_bytes / 2**20, 1)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def count_flops(run) -> int:
    """FLOPs of ``run()`` as counted by ``FlopCounterMode``.

    PyTorch has no formula for the CPU fused attention kernel
    (``_scaled_dot_product_flash_attention_for_cpu``), which would count
    as zero: it gets the same formula as the CUDA fused kernels.
    """
    from torch.utils.flop_counter import FlopCounterMode

    cpu_sdpa = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    with FlopCounterMode(display=False, custom_mapping={cpu_sdpa: _sdpa_flops}) as counter:
        run()
    return counter.get_total_flops()


def _sdpa_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of attention: ``Q @ K^T`` plus ``P @ V`` (``[B, heads, L, d]`` shapes)."""
    batch, heads, q_len, head_dim = q_shape
    k_len, v_dim = k_shape[-2], v_shape[-1]
    return 2 * batch * heads * q_len * k_len * (head_dim + v_dim)


def time_once(run, device: str) -> float:
    """Wall-clock seconds of one call of ``run()``."""
    _sync(device)
    start = time.perf_counter()
    run()
    _sync(device)
    return time.perf_counter() - start


def build_initialised(impl: str, args: argparse.Namespace):
    """``impl``'s model with :func:`init_weights` applied, on ``args.device``."""
    model = build_model(impl, args.reference)
    init_weights(model, args.seed)
    return model.to(args.device)


def prepare_forward(impl: str, model, n_ids: int, args: argparse.Namespace):
    """Inputs for ``n_ids`` identities; return ``(run, outputs)``.

    ``run()`` does one no-grad forward of ``impl``'s ``model`` and leaves
    its result in ``outputs[0]``.
    """
    inputs = make_inputs(n_ids, args.mask, args.seed, args.device)
    outputs = []

    def run():
        with torch.no_grad():
            outputs[:] = [forward(impl, model, inputs)]

    return run, outputs


def measure_memory(args: argparse.Namespace) -> dict:
    """Child task: peak memory above the weights (+ inputs) of one cold forward.

    The parent starts this child with glibc's mmap threshold fixed
    (:data:`EXACT_MALLOC_ENV`), so that freed blocks go back to the system at
    once and the resident set follows the live tensors.
    """
    model = build_initialised(args.child, args)
    run, _ = prepare_forward(args.child, model, args.n_ids, args)
    memory = PeakMemory(args.device)
    memory.start()
    run()
    return dict(memory.stop(), method=memory.method)


def measure_timing(args: argparse.Namespace) -> dict:
    """Child task: interleaved timing of every (implementation, identity count).

    Builds each implementation's model once and every combination's inputs,
    counts each combination's FLOPs, warms each up with one forward (and the
    ceiling matmul with one product), then runs ``args.runs`` rounds (see
    :func:`interleaved_rounds`).  A combination that fails to build, count
    or warm up gets an ``error`` entry and is left out of the rounds.

    Returns ``{"by_ids": {impl: {n: entry}}, "matmul": ceiling, "orders":
    [order of each round]}``; ``runs_s`` lists are in round order.
    """
    tasks, combos, by_ids = setup_forwards(args)
    tasks[MATMUL_TASK] = matmul_task(args)
    tasks[MATMUL_TASK]()
    times, orders = interleaved_rounds(tasks, args.runs, args.device)
    for label, (impl, n_ids, model, flops, outputs) in combos.items():
        by_ids[impl][str(n_ids)] = timing_entry(n_ids, times[label], flops, model, outputs[0])
    n = args.matmul_size
    matmul_times = times[MATMUL_TASK]
    median = statistics.median(matmul_times)
    matmul = {
        "n": n,
        "median_s": round(median, 4),
        "runs_s": [round(t, 4) for t in matmul_times],
        "gflops_per_s": round(2 * n**3 / 1e9 / median, 1),
        "gflops_per_s_min": round(2 * n**3 / 1e9 / max(matmul_times), 1),
        "gflops_per_s_max": round(2 * n**3 / 1e9 / min(matmul_times), 1),
    }
    return {"by_ids": by_ids, "matmul": matmul, "orders": orders}


def setup_forwards(args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """Models, inputs, FLOP counts and warm-ups of every (impl, n_ids) of the timing child.

    Returns ``(tasks, combos, by_ids)``: ``tasks`` maps a label
    (``"ours/2"``) to its ``run``, in the rounds' base order (identity count,
    then implementation); ``combos`` maps the label to ``(impl, n_ids,
    model, flops, outputs)``; ``by_ids`` holds the ``error`` entries of the
    combinations that failed.
    """
    tasks, combos, by_ids, models = {}, {}, {impl: {} for impl in args.impls}, {}
    for impl in args.impls:
        try:
            models[impl] = build_initialised(impl, args)
        except Exception as exc:  # reported per entry; the other implementation still runs
            by_ids[impl] = {str(n): {"error": f"build: {type(exc).__name__}: {exc}"} for n in args.ids}
    for n_ids in args.ids:
        for impl, model in models.items():
            try:
                run, outputs = prepare_forward(impl, model, n_ids, args)
                flops = count_flops(run)
                run()
            except Exception as exc:  # reported per entry; the other combinations still run
                by_ids[impl][str(n_ids)] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            label = f"{impl}/{n_ids}"
            tasks[label] = run
            combos[label] = (impl, n_ids, model, flops, outputs)
    return tasks, combos, by_ids


def matmul_task(args: argparse.Namespace):
    """The practical ceiling: ``run()`` does one float32 n x n x n matmul."""
    n, device = args.matmul_size, args.device
    gen = torch.Generator().manual_seed(args.seed)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)

    def run():
        torch.mm(a, b)

    return run


def interleaved_rounds(tasks: dict, rounds: int, device: str) -> tuple[dict, list]:
    """Time every task once per round, in a rotated order, reversed every other round.

    Round ``r`` starts at the ``r``-th task of the base order (modulo the
    number of tasks), and odd rounds run that order backwards, so no task
    always runs first, last or after the same task, and the tasks compared
    within a round ran seconds apart.  Returns ``({label: [seconds per
    round]}, [labels in the order of each round])``.
    """
    labels = list(tasks)
    times, orders = {label: [] for label in labels}, []
    for index in range(rounds):
        shift = index % len(labels)
        order = labels[shift:] + labels[:shift]
        if index % 2:
            order.reverse()
        for label in order:
            times[label].append(time_once(tasks[label], device))
        orders.append(order)
    return times, orders


def timing_entry(n_ids: int, times: list, flops: int, model, out: torch.Tensor) -> dict:
    """One combination's report: median and per-round times, FLOPs, output checks."""
    median = statistics.median(times)
    return dict(
        n_ids=n_ids,
        median_s=round(median, 4),
        runs_s=[round(t, 4) for t in times],
        gflop=round(flops / 1e9, 2),
        gflops_per_s=round(flops / 1e9 / median, 1),
        params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        output_shape=list(out.shape),
        output_finite=bool(torch.isfinite(out).all()),
        output_std=round(float(out.float().std()), 4),
    )


def child_main(args: argparse.Namespace) -> None:
    """Run one child task and print its result as one JSON line on stdout."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    result = measure_timing(args) if args.child == "timing" else measure_memory(args)
    print(json.dumps(result), flush=True)


# ----------------------------------------------------------------------------
# Parent: orchestration, targets, report
# ----------------------------------------------------------------------------


def run_child(args: argparse.Namespace, task: str, n_ids: int = 1, impls: tuple = ()) -> dict:
    """Run one child and return its JSON, or ``{"error": ...}`` when it failed.

    Memory children (``task`` an implementation) run with :data:`EXACT_MALLOC_ENV`;
    the timing child keeps the default allocator.
    """
    env = dict(os.environ, **EXACT_MALLOC_ENV) if task in IMPLEMENTATIONS else None
    proc = subprocess.run(child_argv(args, task, n_ids, impls), capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])


def probe_ours() -> str | None:
    """Why ours cannot run (``anytalker_core`` missing or incomplete), or None."""
    try:
        import anytalker_core as at
    except Exception as exc:  # any import-time failure means "cannot run"
        return f"cannot import anytalker_core: {type(exc).__name__}: {exc}"
    missing = [name for name in ("AnyTalkerConfig", "AnyTalkerDiT") if not hasattr(at, name)]
    return f"anytalker_core has no {', '.join(missing)}" if missing else None


def select_implementations(args: argparse.Namespace) -> tuple[dict, dict]:
    """Which implementations run, and why the others do not.

    Returns ``(runnable, skipped)``: ``runnable`` maps a name to a
    description of its source, ``skipped`` maps a name to the reason.
    """
    wanted = IMPLEMENTATIONS if args.only == "both" else (args.only,)
    runnable, skipped = {}, {}
    for impl in IMPLEMENTATIONS:
        if impl not in wanted:
            skipped[impl] = f"excluded by --only {args.only}"
            continue
        if impl == "ours":
            reason, source = probe_ours(), {"module": "anytalker_core"}
        else:
            root, reason = rh.find_reference(args.reference)
            source = {"path": str(root)}
        if reason:
            skipped[impl] = reason
        else:
            runnable[impl] = source
    return runnable, skipped


def device_reason(device: str) -> str | None:
    """Why ``device`` cannot be used, or None."""
    if device == "cuda" and not torch.cuda.is_available():
        return "--device cuda given but CUDA is not available"
    return None


def paired_statistics(results: dict, orders: list) -> dict:
    """Comparisons made within each timing round, then summarised over the rounds.

    ``time_ratio``: ours/reference per round at every common identity count
    (``n_ids`` names the largest, the one the target checks).
    ``extra_identity``, per implementation: per round, the cost of one extra
    identity as a fraction of that round's one-identity forward, from 1 to
    the largest count (``fraction``) and between consecutive counts
    (``per_step_fraction``, medians).
    """
    ours, ref = (_successful(results.get(impl) or {}) for impl in IMPLEMENTATIONS)
    return {
        "rounds": len(orders),
        "orders": orders,
        "time_ratio": _paired_ratios(ours, ref),
        "extra_identity": {impl: _paired_extra_ids(_successful(by_ids)) for impl, by_ids in results.items()},
    }


def _paired_ratios(ours: dict, ref: dict) -> dict:
    """Per-round ours/reference time ratios at each common identity count."""
    common = sorted(set(ours) & set(ref))
    if not common:
        return {"reason": "needs ours and the reference at a common identity count"}
    by_ids = {str(n): _spread([o / r for o, r in zip(ours[n]["runs_s"], ref[n]["runs_s"])], 4) for n in common}
    return {"n_ids": common[-1], "by_ids": by_ids}


def _paired_extra_ids(by_n: dict) -> dict:
    """Per-round cost of an extra identity, as a fraction of the round's one-identity forward."""
    if 1 not in by_n or len(by_n) < 2:
        return {"reason": "needs 1 and at least one more identity count"}
    counts = sorted(by_n)
    times = {n: by_n[n]["runs_s"] for n in counts}

    def fractions(a: int, b: int) -> list:
        return [(tb - ta) / (b - a) / t1 for ta, tb, t1 in zip(times[a], times[b], times[1])]

    return {
        "max_ids": counts[-1],
        "fraction": _spread(fractions(1, counts[-1]), 4),
        "per_step_fraction": {
            f"{a}->{b}": round(statistics.median(fractions(a, b)), 4) for a, b in zip(counts, counts[1:])
        },
    }


def _spread(values: list, digits: int) -> dict:
    """Median, range and the values themselves (one per round), rounded."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "per_round": [round(v, digits) for v in values],
    }


def check_targets(results: dict, paired: dict) -> dict:
    """Evaluate the three targets; each records the numbers it compares."""
    ours, ref = (_successful(results.get(impl) or {}) for impl in IMPLEMENTATIONS)
    return {
        "time_vs_reference": _time_target(ours, ref, paired["time_ratio"]),
        "extra_identity_cost": _extra_id_target(ours, paired["extra_identity"].get("ours")),
        "peak_memory_vs_reference": _memory_target(ours, ref),
    }


def _successful(by_ids: dict) -> dict:
    """The entries that did not fail, keyed by identity count as int."""
    return {int(n): entry for n, entry in by_ids.items() if "error" not in entry}


def _time_target(ours: dict, ref: dict, ratios: dict) -> dict:
    """Ours at most MAX_TIME_RATIO x the reference's time, at the most identities.

    The check uses the median over rounds of the within-round ratio; the
    two medians and their ratio are reported alongside.
    """
    if "reason" in ratios:
        return {"passed": None, "reason": ratios["reason"]}
    n = ratios["n_ids"]
    paired = ratios["by_ids"][str(n)]
    return {
        "n_ids": n,
        "ours_s": ours[n]["median_s"],
        "reference_s": ref[n]["median_s"],
        "ratio": paired["median"],
        "ratio_range": [paired["min"], paired["max"]],
        "ratio_of_medians": round(ours[n]["median_s"] / ref[n]["median_s"], 4),
        "max_ratio": MAX_TIME_RATIO,
        "passed": paired["median"] <= MAX_TIME_RATIO,
    }


def _extra_id_target(ours: dict, extra: dict | None) -> dict:
    """Ours' average cost per extra identity at most MAX_EXTRA_ID_FRACTION of one.

    The check uses the median over rounds of the within-round slope from 1
    to the largest identity count; the per-step medians are reported alongside.
    """
    if extra is None or "reason" in extra:
        return {"passed": None, "reason": "needs ours at 1 and at least one more identity count"}
    top, fraction = extra["max_ids"], extra["fraction"]
    return {
        "one_id_s": ours[1]["median_s"],
        "max_ids": top,
        "max_ids_s": ours[top]["median_s"],
        "fraction": fraction["median"],
        "fraction_range": [fraction["min"], fraction["max"]],
        "per_step_fraction": extra["per_step_fraction"],
        "max_fraction": MAX_EXTRA_ID_FRACTION,
        "passed": fraction["median"] <= MAX_EXTRA_ID_FRACTION,
    }


def _memory_target(ours: dict, ref: dict) -> dict:
    """Ours' peak above the weights at most MAX_MEMORY_RATIO x the reference's, each count.

    The check uses the exact (fixed mmap threshold) peaks of the memory children.
    """
    common = sorted(set(ours) & set(ref))
    if not common:
        return {"passed": None, "reason": "needs ours and the reference at a common identity count"}
    by_ids = {}
    for n in common:
        mine, theirs = ours[n]["peak_mem_above_weights_mb"], ref[n]["peak_mem_above_weights_mb"]
        ratio = mine / theirs if theirs > 0 else float("inf")
        by_ids[str(n)] = {
            "ours_mb": mine,
            "reference_mb": theirs,
            "ratio": round(ratio, 3),
            "passed": ratio <= MAX_MEMORY_RATIO,
        }
    return {"by_ids": by_ids, "max_ratio": MAX_MEMORY_RATIO, "passed": all(v["passed"] for v in by_ids.values())}


def config_record(args: argparse.Namespace) -> dict:
    """The benchmark's configuration, for the report."""
    return {
        "model": MID_CONFIG,
        "latent_shape": list(LATENT_SHAPE),
        "text_tokens": TEXT_TOKENS,
        "ids": args.ids,
        "runs": args.runs,
        "timing": "one child; per round every (implementation, identity count) and one matmul "
        "run once, the order rotated by one position each round and reversed every other round",
        "mask": args.mask,
        "face_box": list(FACE_BOX) if args.mask == "faces" else None,
        "threads": args.threads,
        "device": args.device,
        "dtype": "float32",
        "matmul_size": args.matmul_size,
        "seed": args.seed,
        "torch": torch.__version__,
    }


def parent_main(args: argparse.Namespace) -> dict:
    """Measure everything in children and assemble the report."""
    report = {"config": config_record(args)}
    reason = device_reason(args.device)
    if reason:
        runnable, skipped = {}, dict.fromkeys(IMPLEMENTATIONS, reason)
    else:
        runnable, skipped = select_implementations(args)
    load_start = _loadavg()
    timing = run_timing(args, tuple(runnable))
    results = {impl: {} for impl in runnable}
    for n_ids in args.ids:
        for impl in runnable:
            entry = merge_measurements(_timing_part(timing, impl, n_ids), run_child(args, impl, n_ids))
            results[impl][str(n_ids)] = entry
            _log(f"{impl} ids={n_ids}: {_short(entry)}")
    report["matmul_ceiling"] = None if timing is None else timing.get("matmul", timing)
    report["loadavg_1min"] = {"start": load_start, "end": _loadavg()}
    for by_ids in results.values():
        for entry in by_ids.values():
            _add_ceiling_fraction(entry, report["matmul_ceiling"])
    for impl in IMPLEMENTATIONS:
        report[impl] = {"source": runnable[impl], "by_ids": results[impl]} if impl in runnable else None
    report["reason"] = "; ".join(f"{impl}: {why}" for impl, why in skipped.items()) or None
    report["paired"] = paired_statistics(results, (timing or {}).get("orders", []))
    report["targets"] = check_targets(results, report["paired"])
    return report


def run_timing(args: argparse.Namespace, impls: tuple) -> dict | None:
    """Run the interleaved timing child for ``impls`` (None when there is none to time)."""
    if not impls:
        return None
    _log(f"timing child: {', '.join(impls)} x ids {args.ids} + matmul, {args.runs} rounds ...")
    start = time.perf_counter()
    timing = run_child(args, "timing", impls=impls)
    _log(
        f"timing child done in {time.perf_counter() - start:.0f} s"
        + (f": ERROR {timing['error']}" if "error" in timing else "")
    )
    return timing


def _timing_part(timing: dict, impl: str, n_ids: int) -> dict:
    """The timing child's entry for ``(impl, n_ids)``, or its error."""
    if "error" in timing:
        return timing
    return timing["by_ids"].get(impl, {}).get(str(n_ids), {"error": "missing from the timing child"})


def merge_measurements(timing: dict, memory: dict) -> dict:
    """One result entry from the timing child's entry and a memory child's JSON."""
    errors = [f"{name}: {part['error']}" for name, part in (("timing", timing), ("memory", memory)) if "error" in part]
    if errors:
        return {"error": "; ".join(errors)}
    return dict(
        timing,
        peak_mem_above_weights_mb=memory["peak_mem_above_weights_mb"],
        baseline_mb=memory["baseline_mb"],
        peak_mb=memory["peak_mb"],
        peak_mem_method=memory["method"] + " with " + " ".join(f"{k}={v}" for k, v in EXACT_MALLOC_ENV.items()),
    )


def _loadavg() -> float:
    """1-minute load average (other work on the machine skews the timings)."""
    with open("/proc/loadavg") as handle:
        return float(handle.read().split()[0])


def _add_ceiling_fraction(entry: dict, ceiling: dict | None) -> None:
    """Add the forward's GFLOP/s as a fraction of the matmul ceiling (median over rounds)."""
    if ceiling and "gflops_per_s" in entry and "gflops_per_s" in ceiling:
        entry["fraction_of_matmul_ceiling"] = round(entry["gflops_per_s"] / ceiling["gflops_per_s"], 3)


def _short(entry: dict) -> str:
    """One-line description of a merged result entry."""
    if "error" in entry:
        return "ERROR " + entry["error"]
    return (
        f"median {entry['median_s']:.3f} s (rounds {min(entry['runs_s']):.3f}-"
        f"{max(entry['runs_s']):.3f}), peak +{entry['peak_mem_above_weights_mb']:.0f} MiB,"
        f" {entry['gflop']:.0f} GFLOP at {entry['gflops_per_s']:.0f} GFLOP/s"
    )


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def summary(report: dict) -> str:
    """Short human-readable summary of the report."""
    cfg, ceiling = report["config"], report["matmul_ceiling"] or {}
    lines = [
        f"AnyTalker DiT mid config, {cfg['device']} fp32, {cfg['threads']} threads, "
        f"mask={cfg['mask']}, {cfg['runs']} interleaved rounds; matmul ceiling "
        f"{ceiling.get('gflops_per_s', 'n/a')} GFLOP/s (median; rounds "
        f"{ceiling.get('gflops_per_s_min', 'n/a')}-{ceiling.get('gflops_per_s_max', 'n/a')});"
        f" load average {report['loadavg_1min']['start']} -> {report['loadavg_1min']['end']}"
    ]
    for impl in IMPLEMENTATIONS:
        if report[impl] is None:
            continue
        for n, entry in report[impl]["by_ids"].items():
            lines.append(f"  {impl:9s} ids={n}: {_short(entry)}")
    if report["reason"]:
        lines.append(f"  skipped: {report['reason']}")
    lines += _paired_lines(report["paired"])
    for name, target in report["targets"].items():
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[target["passed"]]
        detail = {k: v for k, v in target.items() if k not in ("passed", "by_ids")}
        if "by_ids" in target:
            detail["ratios"] = {n: v["ratio"] for n, v in target["by_ids"].items()}
        lines.append(f"  target {name}: {verdict} {json.dumps(detail)}")
    return "\n".join(lines)


def _paired_lines(paired: dict) -> list[str]:
    """Summary lines of the within-round comparisons."""
    lines = []
    for n, spread in paired["time_ratio"].get("by_ids", {}).items():
        lines.append(f"  paired ours/reference ids={n}: median {spread['median']} (rounds {spread['per_round']})")
    for impl, extra in paired["extra_identity"].items():
        if "fraction" in extra:
            lines.append(
                f"  paired extra identity {impl}: median {extra['fraction']['median']} of a"
                f" one-identity forward per identity, 1->{extra['max_ids']} (rounds"
                f" {extra['fraction']['per_round']}); per step {json.dumps(extra['per_step_fraction'])}"
            )
    return lines


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return
    report = parent_main(args)
    print(json.dumps(report, indent=2))
    _log(summary(report))


if __name__ == "__main__":
    main()
