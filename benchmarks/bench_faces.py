"""Face detection benchmark: hits and time per picture, close-ups, and how steady followed faces are.

    python benchmarks/bench_faces.py [--backend auto] [--repeats 9] [--trials 40] [--parts photos closeups follow]

Prints JSON (and a summary on stderr):

- ``photos``: the example photos of ``../shared/examples`` and the demo picture, resized to a 640-px and a
  1280-px long side and at their own size: faces found (expected: 1, 2, 2, 2), whether each expected face
  centre lies in its box, left to right, the scores, and the median time of ``find_faces`` over ``--repeats``
  runs (OpenCV's own thread count, printed): wall time and CPU time (all threads), the latter steadier when
  other work shares the machine.
- ``closeups``: every face of those pictures cut out with 10-60% margin and upscaled to 640 and 1024 px, so
  that it fills the frame: how many came back with exactly one face, and the passes that ran.
- ``follow``: how far the boxes found for a later window of a long video are from the truth, for three ways of
  finding them: on the window's first frame only, the median over the window's 5 known (motion) frames, and
  the median over the 81 frames of the previous window. The frames: the 2p-1 photo at 832x560, shifted by
  ``v`` px a frame (0: people holding still; 1: a slow drift), each frame with Gaussian noise (sigma 4) and a
  JPEG round trip (quality 80), so that no two frames are the same picture. Truth: the boxes found on the clean
  photo, shifted with it. Error: the mean distance of box centres and the mean difference of box sides, in px.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anytalker_core.people.faces import find_faces  # noqa: E402
from anytalker_core.pipeline.windows import track_boxes  # noqa: E402

EXAMPLES = REPO.parent / "shared" / "examples"
DEMO = REPO / "anytalker_core" / "demo_assets" / "two_anchors.jpg"
# Face centres (x, y) at each picture's own size, read off by eye, left to right.
CENTRES = {
    "1p-0.png": [(650, 212)],
    "2p-0.png": [(214, 208), (694, 187)],
    "2p-1.png": [(440, 331), (1103, 389)],
    "two_anchors.jpg": [(116, 82), (277, 96)],
}


def load(name: str) -> np.ndarray:
    path = DEMO if name == "two_anchors.jpg" else EXAMPLES / name
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def resized(image: np.ndarray, side: int | None) -> tuple[np.ndarray, float]:
    if side is None:
        return image, 1.0
    scale = side / max(image.shape[:2])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, size, interpolation=interpolation), scale


def photos(backend: str, repeats: int) -> list[dict]:
    rows = []
    for name, centres in CENTRES.items():
        for side in (640, 1280, None):
            image, scale = resized(load(name), side)
            find_faces(image, backend=backend)  # warm: the detector is built once
            times, cpu = [], []
            for _ in range(repeats):
                began = time.process_time()
                result = find_faces(image, backend=backend)
                cpu.append(time.process_time() - began)  # every thread's CPU time: steadier on a busy machine
                times.append(result.seconds)
            hits = len(result.boxes) == len(centres) and all(
                b[0] <= cx * scale <= b[2] and b[1] <= cy * scale <= b[3] for b, (cx, cy) in zip(result.boxes, centres)
            )
            rows.append({
                "picture": name, "size": f"{image.shape[1]}x{image.shape[0]}", "backend": result.backend,
                "found": len(result.boxes), "expected": len(centres), "all_hit_in_order": hits,
                "scores": [round(s, 3) for s in result.scores], "ms": round(1000 * statistics.median(times), 1),
                "cpu_ms": round(1000 * statistics.median(cpu), 1),
                "passes": result.extra.get("passes"),
            })  # fmt: skip
    return rows


def closeups(backend: str) -> dict:
    total, right, passes = 0, 0, []
    for name in CENTRES:
        image = load(name)
        for box in find_faces(image, backend=backend).raw_boxes:
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            face = max(box[2] - box[0], box[3] - box[1])
            for margin in (1.1, 1.3, 1.6):
                half = int(face * margin / 2)
                crop = image[max(0, int(cy) - half) : int(cy) + half, max(0, int(cx) - half) : int(cx) + half]
                for out in (640, 1024):
                    up = cv2.resize(crop, (out, out), interpolation=cv2.INTER_CUBIC)
                    result = find_faces(up, backend=backend)
                    total += 1
                    right += len(result.boxes) == 1 and (result.raw_boxes[0][2] - result.raw_boxes[0][0]) > out / 3
                    passes.append(len(result.extra.get("passes", [None])))
    return {"closeups": total, "exactly_one_large_face": right, "two_passes": sum(p == 2 for p in passes)}


def frame(picture: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    moved = cv2.warpAffine(picture, np.float32([[1, 0, shift], [0, 1, 0]]), picture.shape[1::-1],
                           borderMode=cv2.BORDER_REFLECT)  # fmt: skip
    noisy = np.clip(moved + rng.normal(0, 4, moved.shape), 0, 255).astype(np.uint8)
    _, jpeg = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)


def follow(backend: str, trials: int) -> list[dict]:
    picture = cv2.resize(load("2p-1.png"), (832, 560), interpolation=cv2.INTER_AREA)
    truth = find_faces(picture, backend=backend).boxes
    rows = []
    for speed in (0.0, 1.0):
        errors: dict[str, list[tuple[float, float]]] = {"first frame": [], "median of 5 known": [], "median of 81": []}
        seconds: dict[str, list[float]] = {k: [] for k in errors}
        rng = np.random.default_rng(0)
        for trial in range(trials):
            start = 80 + trial  # the window's first frame in the clip; the previous window ends 4 frames later
            base = start - 40  # the picture's own place: shifts stay within -36..+44 px, faces inside the frame
            frames = {t: frame(picture, speed * (t - base), rng) for t in range(start - 76, start + 5)}
            want = [(b[0] + speed * 40, b[1], b[2] + speed * 40, b[3]) for b in truth]  # at the first frame
            ways = {
                "first frame": [frames[start]],
                "median of 5 known": [frames[t] for t in range(start, start + 5)],
                "median of 81": [frames[t] for t in range(start - 76, start + 5)],
            }
            for way, stack in ways.items():
                began = time.perf_counter()
                got = track_boxes(np.stack(stack), want, backend=backend)
                seconds[way].append(time.perf_counter() - began)
                for g, w in zip(got, want):
                    centre = np.hypot((g[0] + g[2] - w[0] - w[2]) / 2, (g[1] + g[3] - w[1] - w[3]) / 2)
                    errors[way].append((float(centre), abs((g[2] - g[0]) - (w[2] - w[0]))))
        for way, errs in errors.items():
            centre, side = np.array([e[0] for e in errs]), np.array([e[1] for e in errs])
            rows.append({
                "speed_px_per_frame": speed, "way": way, "centre_error_px": round(float(centre.mean()), 2),
                "centre_error_p95_px": round(float(np.percentile(centre, 95)), 2),
                "side_error_px": round(float(side.mean()), 2),
                "ms_per_window": round(1000 * statistics.median(seconds[way]), 1),
            })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--parts", nargs="+", default=["photos", "closeups", "follow"],
                        choices=["photos", "closeups", "follow"])  # fmt: skip
    args = parser.parse_args()
    if not EXAMPLES.is_dir():
        sys.exit(f"{EXAMPLES} not found: the example photos live in ../shared/examples")
    report: dict = {"opencv": cv2.__version__, "threads": cv2.getNumThreads()}
    if "photos" in args.parts:
        report["photos"] = photos(args.backend, args.repeats)
    if "closeups" in args.parts:
        report["closeups"] = closeups(args.backend)
    if "follow" in args.parts:
        report["follow"] = follow(args.backend, args.trials)
    print(json.dumps(report, indent=1))
    for row in report.get("photos", []):
        hit = "ok" if row["all_hit_in_order"] else "MISS"
        print(f"{row['picture']:>16} {row['size']:>9} {row['backend']}: {row['found']}/{row['expected']} {hit} "
              f"{row['ms']} ms (cpu {row['cpu_ms']} ms) {row['scores']}", file=sys.stderr)  # fmt: skip
    for row in [report["closeups"]] if "closeups" in report else []:
        print(row, file=sys.stderr)
    for row in report.get("follow", []):
        print(row, file=sys.stderr)


if __name__ == "__main__":
    main()
