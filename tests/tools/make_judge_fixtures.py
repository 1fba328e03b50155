"""Make the judge's real-footage fixture in ``tests/fixtures/judge/`` from the reference's benchmark.

Run as ``python tests/tools/make_judge_fixtures.py --reference /path/to/AnyTalker`` (a checkout of
HKUST-C4G/AnyTalker, Apache-2.0). From its ``benchmark/interact_11.mp4`` (two people, 832x448, 24 fps, made by
AnyTalker; the right person speaks until 4.16 s, then the left one) and its two separated voice tracks
(``benchmark/audio_left|right/interact_11_*.wav``) it cuts 3.0-5.5 s, where the turn is:

- ``conversation.mp4``: the 60 frames at half size (416x224), H.264 (CRF 30), no audio;
- ``left.flac``, ``right.flac``: the same 2.5 s of each voice, 16 kHz mono;
- ``speaker_duration.json``: the reference's speaking intervals for the cut, in the reference's format, keyed by
  the fixture's file name.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import av
import numpy as np

START, END = 3.0, 5.5  # seconds of interact_11.mp4
OUT = Path(__file__).resolve().parents[1] / "fixtures" / "judge"


def cut_video(source: Path, target: Path) -> int:
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = dst.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 416, 224, "yuv420p"
        stream.options = {"crf": "30", "preset": "veryslow"}
        kept = 0
        for index, frame in enumerate(src.decode(video=0)):
            if START * 24 <= index < END * 24:
                rgb = frame.to_ndarray(format="rgb24")[::2, ::2]
                out = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                dst.mux(stream.encode(out))
                kept += 1
        dst.mux(stream.encode(None))
    return kept


def cut_audio(source: Path, target: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from anytalker_core.people.audio import load_audio

    wave = load_audio(source).numpy()[int(START * 16000) : int(END * 16000)]
    pcm = np.clip(np.round(wave * 32767), -32768, 32767).astype(np.int16)[None]
    with av.open(str(target), "w") as dst:
        stream = dst.add_stream("flac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = 16000
        dst.mux(stream.encode(frame))
        dst.mux(stream.encode(None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, type=Path, help="a checkout of HKUST-C4G/AnyTalker")
    bench = parser.parse_args().reference / "benchmark"
    OUT.mkdir(parents=True, exist_ok=True)
    frames = cut_video(bench / "interact_11.mp4", OUT / "conversation.mp4")
    for side in ("left", "right"):
        cut_audio(bench / f"audio_{side}" / f"interact_11_{side}.wav", OUT / f"{side}.flac")
    intervals = json.loads((bench / "speaker_duration.json").read_text())["interact_11.mp4"]
    shifted = {side: [[round(max(0.0, s - START), 2), round(min(END, e) - START, 2)] for s, e in spans
                      if e > START and s < END] for side, spans in intervals.items()}  # fmt: skip
    (OUT / "speaker_duration.json").write_text(json.dumps({"conversation.mp4": shifted}, indent=1) + "\n")
    sys.stdout.write(f"wrote {frames} frames, two voices and the speaking intervals {shifted} to {OUT}\n")


if __name__ == "__main__":
    main()
