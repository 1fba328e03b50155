"""Bad input on purpose: every loader refuses files that would run code, and any file content, with one line;
the command line checks everything cheap before the first weight loads and names the flag; paths stay inside
their folders."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import anytalker_core as at
from anytalker_core import demo
from anytalker_core.cli import main
from anytalker_core.encoders.image import load_image_encoder
from anytalker_core.encoders.text import load_text_encoder
from anytalker_core.encoders.vae import load_vae
from anytalker_core.people.audio import AudioError
from anytalker_core.people.audio_features import load_audio_encoder
from test_nodes import PACK, pack  # noqa: F401  (pack: the node pack on a stand-in host)

pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol", "ignore:.*weights_only.*")


class Payload:
    """Unpickling this calls ``fn(*args)``: what a malicious checkpoint does."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def payloads(marker: Path) -> dict[str, Payload]:
    return {
        "os.system": Payload(os.system, (f"touch {marker}",)),
        "subprocess.Popen": Payload(subprocess.Popen, (["touch", str(marker)],)),
        "builtins.eval": Payload(builtins.eval, (f"open({str(marker)!r}, 'w')",)),
    }


def write(path: Path, obj, kind: str) -> Path:
    """``kind``: ``zip`` (torch's format), ``old`` (torch < 1.6's), ``pickle`` (a plain pickle)."""
    if kind == "zip":
        torch.save(obj, path)
    elif kind == "old":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    return path


LOADERS = {
    "dit": lambda p: at.load_dit(p),
    "wav2vec2": lambda p: load_audio_encoder(p),
    "text encoder": lambda p: load_text_encoder(p),
    "image encoder": lambda p: load_image_encoder(p),
    "vae": lambda p: load_vae(p),
}
ERRORS = (at.CheckpointError, AudioError)


@pytest.mark.parametrize("kind", ["zip", "old", "pickle"])
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_files_that_would_run_code_are_refused_by_every_loader(tmp_path, loader, kind):
    marker = tmp_path / "ran"
    for name, payload in payloads(marker).items():
        path = write(tmp_path / f"evil_{kind}.bin", {"model": {"w": torch.zeros(2)}, "x": payload}, kind)
        with pytest.raises(ERRORS) as err:
            LOADERS[loader](path)
        message = str(err.value)
        assert "would run code" in message and "not loaded" in message, (loader, name, message)
        assert "weights_only" not in message and "False" not in message  # never the advice to load it unsafely
        assert not marker.exists(), f"{loader} ran the payload {name}"


def test_library_folders_refuse_code_too(tmp_path):
    """Hugging Face / diffusers folders go through the libraries' own loaders: they must refuse code as well."""
    marker = tmp_path / "ran"
    cases = {
        "wav2vec2": ("pytorch_model.bin", load_audio_encoder),
        "vae": ("diffusion_pytorch_model.bin", load_vae),
        "clip": ("pytorch_model.bin", load_image_encoder),
    }
    for folder, (weights, loader) in cases.items():
        root = tmp_path / folder
        root.mkdir()
        (root / "config.json").write_text("{}")
        write(root / weights, {"w": torch.zeros(2), "x": payloads(marker)["os.system"]}, "zip")
        with pytest.raises(ERRORS) as err:
            loader(root)
        assert "\n" not in str(err.value) and not marker.exists(), (folder, str(err.value))


def garbage_files(folder: Path) -> dict[str, Path]:
    files = {
        "empty": b"",
        "text": b"hello, this is a note\n",
        "wav": b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40),
        "png": b"\x89PNG\r\n\x1a\n" + bytes(40),
        "random": np.random.default_rng(0).bytes(4096),
    }
    paths = {}
    for name, data in files.items():
        for suffix in (".pth", ".safetensors"):
            path = folder / f"{name}{suffix}"
            path.write_bytes(data)
            paths[f"{name}{suffix}"] = path
    zipped = folder / "truncated.pth"
    torch.save({"w": torch.zeros(100)}, zipped)
    zipped.write_bytes(zipped.read_bytes()[:200])
    paths["truncated.pth"] = zipped
    return paths


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_any_file_content_gives_one_line(tmp_path, loader):
    for name, path in garbage_files(tmp_path).items():
        with pytest.raises(ERRORS) as err:
            LOADERS[loader](path)
        message = str(err.value)
        assert str(path) in message and "\n" not in message, (loader, name, message)
        assert len(message) < 400, message
    assert "is an empty file" in str(pytest.raises(ERRORS, LOADERS[loader], tmp_path / "empty.pth").value)


def test_inspect_says_what_a_file_is_not(tmp_path, capsys):
    files = garbage_files(tmp_path)
    for name, path in files.items():
        assert main(["inspect", str(path)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    main(["inspect", str(files["wav.pth"])])
    assert "it is a WAV audio file" in capsys.readouterr().err


def test_shard_index_cannot_point_outside_its_folder(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    (tmp_path / "secret.safetensors").write_bytes(b"")
    index = {"weight_map": {"blocks.0.x": "../secret.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(at.CheckpointError, match="points outside"):
        at.read_state_dict(folder)


def test_shards_linked_into_their_folder_load(tmp_path):
    """A Hugging Face cache snapshot: the folder holds links to blobs kept elsewhere."""
    from safetensors.torch import save_file

    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshot"
    blobs.mkdir(), snapshot.mkdir()
    save_file({"blocks.0.x": torch.ones(2)}, str(blobs / "abc123"))
    (snapshot / "model-00001-of-00001.safetensors").symlink_to(blobs / "abc123")
    index = {"weight_map": {"blocks.0.x": "model-00001-of-00001.safetensors"}}
    (snapshot / "model.safetensors.index.json").write_text(json.dumps(index))
    assert torch.equal(at.read_state_dict(snapshot)[0]["blocks.0.x"], torch.ones(2))


# ------------------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from test_pipeline import save_real_files

    folder = tmp_path_factory.mktemp("models")
    return save_real_files(demo.tiny_models(), folder)


def generate_args(files, out: Path, **changes) -> list[str]:
    flags = {
        "--image": str(demo.IMAGE), "--audio": [str(a) for a in demo.AUDIO], "--out": str(out),
        "--dit": str(files["dit"]), "--wav2vec2": str(files["wav2vec2"]), "--text-encoder": str(files["text"]),
        "--image-encoder": str(files["clip"]), "--vae": str(files["vae"]), "--device": "cpu", "--steps": "2",
        "--size": "96x64",
    }  # fmt: skip
    flags.update(changes)
    args = ["generate"]
    for flag, value in flags.items():
        if value is None:
            continue
        for v in value if isinstance(value, list) else [value]:
            args += [flag, v]
    return args


def blank_picture(tmp_path: Path) -> str:
    from anytalker_core.pipeline.writer import write_png

    return str(write_png(tmp_path / "blank.png", np.full((128, 192, 3), 128, np.uint8), overwrite=True))


CASES = [
    ({"--steps": "0"}, "--steps is 0"),
    ({"--size": "100x70"}, "--size 100x70: width and height must be positive multiples of 32 (width 96 or 128"),
    ({"--vae": "missing_vae.safetensors"}, "--vae: not found: missing_vae.safetensors"),
    ({"--offsets": "0,abc"}, "--offsets: value 2 'abc' is not a number of seconds"),
    ({"--window": "10"}, "--window is 10; the model needs 4n+1 video frames (1, 5, 9, ..., 81, at least 5): use 9 or "),
    ({"--frames": "80"}, "--frames is 80"),
    ({"--device": "foo"}, "--device 'foo' is not a device"),
    ({"--shift": "-1"}, "--shift is -1.0"),
    ({"--order": "3,1"}, "order"),
    ({"--text-encoder": "WAV"}, "--text-encoder"),
    ({"--image": "NOT_A_PICTURE"}, "--image"),
    ({"--audio": ["NOT_AUDIO", "NOT_AUDIO"]}, "--audio 1"),
    ({"--image": "BLANK"}, "found 0 faces but 2 are needed"),
]


@pytest.mark.parametrize("changes, expected", CASES, ids=[f"{k}={v}" for c, _ in CASES for k, v in c.items()])
def test_generate_fails_in_one_line_before_any_weight_loads(files, tmp_path, monkeypatch, capsys, changes, expected):
    from anytalker_core import pipeline

    def no_loading(*args, **kwargs):
        raise AssertionError("models were loaded before the inputs were checked")

    monkeypatch.setattr(pipeline, "load_models", no_loading)
    wav = tmp_path / "voice.wav"
    wav.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40))
    text = tmp_path / "note.txt"
    text.write_text("not a picture, not audio")
    blank = blank_picture(tmp_path)
    values = {"WAV": str(wav), "NOT_A_PICTURE": str(text), "NOT_AUDIO": str(text), "BLANK": blank}
    pick = values.get
    changes = {k: [pick(x, x) for x in v] if isinstance(v, list) else pick(v, v) for k, v in changes.items()}
    assert main(generate_args(files, tmp_path / "out.mp4", **changes)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err
    assert not (tmp_path / "out.mp4").exists()


def test_out_under_a_file_and_cuda_on_a_cpu_torch(files, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    assert main(generate_args(files, tmp_path / "taken" / "out.mp4")) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(generate_args(files, tmp_path / "out.mp4", **{"--device": "cuda"})) == 2
        assert "sees no CUDA GPU; use --device cpu" in capsys.readouterr().err


def test_the_demo_replaces_its_own_default_output(tmp_path, monkeypatch, capsys):
    from anytalker_core import cli

    runs = []

    def run(args, *rest, **options):  # the render itself is tested in test_pipeline; here only the file policy
        runs.append((args.out, args.overwrite))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_bytes(b"video")
        return 0

    monkeypatch.setattr(cli.render, "run", run)
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--steps", "1"]) == 0
    assert main(["demo", "--steps", "1"]) == 0  # a re-run replaces its own output
    assert runs == [(str(cli.DEMO_OUT), True)] * 2 and (tmp_path / cli.DEMO_OUT).is_file()
    out = tmp_path / "mine.mp4"
    out.write_bytes(b"keep")
    assert main(["demo", "--steps", "1", "--out", str(out)]) == 2  # a file the user named is never replaced
    assert out.read_bytes() == b"keep" and "--overwrite" in capsys.readouterr().err


def test_the_model_loader_node_keeps_names_inside_its_folders(pack, tmp_path):  # noqa: F811
    import importlib

    loaders = importlib.import_module(f"{PACK}.nodes.loaders")
    folder = tmp_path / "models" / "diffusion_models"
    folder.mkdir(parents=True)
    (folder / "ok.pth").write_bytes(b"x")
    (tmp_path / "models" / "outside.pth").write_bytes(b"x")
    assert loaders.checkpoint_path("ok.pth") == str(folder / "ok.pth")
    with pytest.raises(ValueError, match="points outside models/diffusion_models"):
        loaders.checkpoint_path("../outside.pth")
    shared = tmp_path / "shared_disk"
    shared.mkdir()
    (shared / "linked.pth").write_bytes(b"x")
    (folder / "linked.pth").symlink_to(shared / "linked.pth")  # models kept elsewhere and linked in, as artists do
    assert loaders.checkpoint_path("linked.pth") == str(folder / "linked.pth")


NODE_CASES = [
    ("AnyTalkerImageToVideo", {"width": 100, "height": 64, "length": 0}, "width is 100: use 96 or 128 (a multiple"),
    ("AnyTalkerImageToVideo", {"width": 96, "height": 0, "length": 0}, "give both"),
    ("AnyTalkerImageToVideo", {"width": 0, "height": 0, "length": 8}, "length is 8: use 5 or 9 (4n+1 frames"),
    ("AnyTalkerExtend", {"width": 0, "height": 0, "length": 0, "window": 10, "motion_frames": 5}, "window is 10"),
    (
        "AnyTalkerLongVideo",
        {"width": 0, "height": 0, "length": 41, "window": 17, "motion_frames": 17},
        "motion_frames (17) must be shorter than the window (17)",
    ),
]


@pytest.mark.parametrize("node, values, expected", NODE_CASES)
def test_nodes_refuse_bad_values_when_the_prompt_is_queued(pack, node, values, expected):  # noqa: F811
    _, nodes = pack
    cls = next(n for n in nodes.NODE_LIST if n.define_schema().node_id == node)
    assert expected in cls.validate_inputs(**values)
    good = {k: {"width": 96, "height": 64, "length": 41, "window": 17, "motion_frames": 5}[k] for k in values}
    assert cls.validate_inputs(**good) is True
    assert cls.validate_inputs() is True  # inputs fed by links are checked when the node runs


def test_a_file_of_another_model_says_what_it_is_not(files):
    with pytest.raises(at.CheckpointError, match="not a umT5 text encoder"):
        load_text_encoder(files["vae"])
    with pytest.raises(at.CheckpointError, match="does not look like an AnyTalker/Wan DiT checkpoint"):
        at.load_dit(files["text"])


def test_importing_the_package_loads_nothing_heavy():
    """``python -m anytalker_core`` answers Ctrl-C in one line even while torch loads: the package imports none."""
    import subprocess
    import sys

    code = "import anytalker_core, sys; print('torch' in sys.modules, anytalker_core.load_dit.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1]).stdout.split()  # fmt: skip
    assert out == ["False", "load_dit"]
