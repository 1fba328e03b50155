"""The judge's speed: seconds per frame of ``at.evaluate`` for two people, and where the time goes.

    python benchmarks/bench_evaluate.py [--repeats 3] [--video V --audio A --audio B]

Prints JSON (and one line per size on stderr). By default it judges the real two-person clip of the tests
(``tests/fixtures/judge/conversation.mp4``, 60 frames at 416x224) and the same frames upscaled to 832x448
(AnyTalker's usual size), in memory. ``--video`` adds a video of your own (with one ``--audio`` per person).
Per size: the median over ``--repeats`` runs of the whole ``evaluate`` per frame (wall and CPU time of the
process), and of its two costly parts alone, the face detector per frame and the face mesh per face.
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

import anytalker_core as at  # noqa: E402
from anytalker_core.judge.mesh import face_mesh  # noqa: E402
from anytalker_core.judge.video import open_video  # noqa: E402
from anytalker_core.people.faces import find_faces  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "judge"


def timed(run) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(name: str, video, audio: list, fps: float | None, repeats: int) -> dict:
    frames = list(open_video(video, fps))
    count = len(frames)
    runs = [timed(lambda: at.evaluate(video, audio, fps=fps)) for _ in range(repeats)]
    detect = [timed(lambda: [find_faces(f) for f in frames])[0] for _ in range(repeats)]
    faces = [find_faces(f).faces for f in frames]
    mesh = [timed(lambda: [face_mesh(f, x.raw_box, x.landmarks[:2]) for f, fs in zip(frames, faces) for x in fs])[0]
            for _ in range(repeats)]  # fmt: skip
    meshes = sum(len(fs) for fs in faces)
    height, width = frames[0].shape[:2]
    return {
        "video": name, "size": f"{width}x{height}", "frames": count, "people": len(audio),
        "seconds_per_frame": round(statistics.median(w for w, _ in runs) / count, 4),
        "cpu_seconds_per_frame": round(statistics.median(c for _, c in runs) / count, 4),
        "detector_seconds_per_frame": round(statistics.median(detect) / count, 4),
        "mesh_seconds_per_face": round(statistics.median(mesh) / max(meshes, 1), 4),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--video", default=None, help="a video of your own to time as well")
    parser.add_argument("--audio", action="append", default=[], help="one per person, with --video")
    args = parser.parse_args()
    voices = [FIXTURE / "left.flac", FIXTURE / "right.flac"]
    clip = np.stack(list(open_video(FIXTURE / "conversation.mp4")))
    upscaled = np.stack([cv2.resize(f, (832, 448), interpolation=cv2.INTER_CUBIC) for f in clip])
    results = [
        measure("conversation.mp4", FIXTURE / "conversation.mp4", voices, None, args.repeats),
        measure("conversation.mp4 upscaled 2x", upscaled, voices, 24.0, args.repeats),
    ]
    if args.video:
        results.append(measure(Path(args.video).name, args.video, args.audio, None, args.repeats))
    for r in results:
        sys.stderr.write(f"{r['video']} ({r['size']}, {r['people']} people): {r['seconds_per_frame']:.3f} s a frame "
                         f"(detector {r['detector_seconds_per_frame']:.3f} s, mesh {r['mesh_seconds_per_face']:.3f} s "
                         "a face)\n")  # fmt: skip
    json.dump({"opencv_threads": cv2.getNumThreads(), "results": results}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
