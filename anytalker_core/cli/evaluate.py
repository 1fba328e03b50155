"""``evaluate VIDEO --audio A --audio B``: judge a finished video (``judge/``): a table, a plot and the report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_evaluate_parser(commands: Any) -> None:
    from ..people.faces import BACKENDS

    judge = commands.add_parser(
        "evaluate",
        help="judge a talking video: which voice drives which face, and how "
        "alive the listeners are (the paper's interactivity metric)",
    )
    judge.add_argument("video", help="the video to judge (mp4, mov, mkv, webm)")
    judge.add_argument(
        "--audio",
        action="append",
        default=None,
        metavar="TRACK",
        help="one per person, in the order of the faces left to right that the voices should drive "
        "(repeat the flag); 'none' for a listener. Each track must cover the video",
    )
    judge.add_argument(
        "--speaking",
        default=None,
        metavar="JSON",
        help="speaking intervals: a JSON file with [[start_s, end_s], ...] per person, or the "
        "reference's speaker_duration.json (its entry for the video's file name is used); default: "
        "from each track's loudness",
    )
    judge.add_argument("--fps", type=float, default=None, help="frames per second (default: the file's own)")
    judge.add_argument(
        "--out",
        default=None,
        help="where the plot and the report go: OUT.png and OUT.json "
        "(default: beside the video, <name>evaluate_command.png / .json)",
    )
    judge.add_argument("--overwrite", action="store_true", help="replace existing output files")
    judge.add_argument(
        "--face-backend",
        default="auto",
        choices=BACKENDS,
        help="face detector (default: InsightFace when installed, else YuNet, shipped with the pack)",
    )
    judge.add_argument(
        "--face-threshold", type=float, default=None, help="face detection threshold 0..1 (default: the backend's)"
    )


# fmt: on


def evaluate_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..judge import evaluate
    from ..judge.plot import plot
    from ..pipeline.writer import write_png

    video = Path(args.video).expanduser()
    if not video.is_file():
        raise FileNotFoundError(f"VIDEO: file not found: {args.video}")
    out = Path(args.out).expanduser() if args.out else video.with_name(video.stem + "evaluate_command")
    png, report_path = out.with_name(out.name + ".png"), out.with_name(out.name + ".json")
    for path in (png, report_path):
        if path.exists() and not args.overwrite:
            raise FileExistsError(f"{path} already exists; pass --overwrite or choose another --out")
    audio = None if args.audio is None else [None if a.lower() in ("none", "-", "listener") else a for a in args.audio]
    for i, track in enumerate(audio or []):
        if track is not None and not Path(track).expanduser().is_file():
            raise FileNotFoundError(f"--audio {i + 1}: file not found: {track}")
    bar = tqdm(total=None, desc="judging", unit="frame", file=sys.stderr, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.reset(total=total)
        bar.update(done - bar.n)

    try:
        report = evaluate(video, audio, args.speaking, args.fps, face_backend=args.face_backend,
                          face_threshold=args.face_threshold, progress=progress)  # fmt: skip
    finally:
        bar.close()
    print(report.table())
    write_png(png, plot(report), overwrite=args.overwrite)
    report_path.write_text(report.to_json() + "\n")
    print(f"wrote {png} (per person: mouth opening and voice loudness over time, speaking shaded, listener motion)")
    print(f"wrote {report_path} (the report)")
    return 0
