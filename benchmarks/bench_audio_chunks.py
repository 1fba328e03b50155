"""How far chunked wav2vec2 features differ from one pass, on real speech (long tracks are encoded in chunks).

    python benchmarks/bench_audio_chunks.py [--seconds 150] [--weights PATH]

The speech: the example tracks of ``../shared/examples`` joined end to end and repeated to ``--seconds``. The
encoder: wav2vec2-base's architecture, with the real weights when ``--weights`` points at a wav2vec2-base-960h
folder or file, otherwise random weights from a fixed seed (then the numbers show the chunking's effect on this
architecture, not on the trained model). Prints JSON: per chunk setting, the relative error ||chunked - one
pass|| / ||one pass|| over all layers and frames, the worst layer's, and the largest absolute difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
EXAMPLES = REPO.parent / "shared" / "examples"


def main() -> int:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from anytalker_core.people.audio import frame_count, load_audio, normalize_waveform
    from anytalker_core.people.audio_features import AudioEncoder, load_audio_encoder

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--weights", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    if args.weights:
        encoder, weights = load_audio_encoder(args.weights), "real"
    else:
        encoder, weights = AudioEncoder(Wav2Vec2Model(Wav2Vec2Config()).eval()), "random (seed 0)"
    tracks = [load_audio(EXAMPLES / n) for n in ("2p-1-left.wav", "2p-1-right.wav", "1p-0.wav")]
    speech = torch.cat(tracks)
    speech = speech.repeat(int(args.seconds * 16000 // speech.shape[0]) + 1)[: int(args.seconds * 16000)]
    wave = normalize_waveform(speech)
    frames = frame_count(wave.shape[0])
    single = encoder.hidden_states(wave, frames)
    results = []
    for chunk, overlap in ((2880, 240), (1440, 240), (720, 240), (720, 48)):
        chunked = encoder.hidden_states(wave, frames, chunk_frames=chunk, overlap=overlap)
        diff = chunked - single
        per_layer = (diff.norm(dim=(0, 2)) / single.norm(dim=(0, 2))).tolist()
        results.append({
            "chunk_frames": chunk, "overlap_frames": overlap,
            "relative_error": round(float(diff.norm() / single.norm()), 5),
            "worst_layer_relative_error": round(max(per_layer), 5),
            "max_abs_difference": round(float(diff.abs().max()), 4),
        })  # fmt: skip
    sys.stdout.write(json.dumps({"seconds": args.seconds, "frames": frames, "weights": weights,
                                 "results": results}, indent=1) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
