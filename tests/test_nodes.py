"""The ComfyUI nodes without a host: schemas against a committed snapshot, the shipped workflows against the
schemas, and the nodes' logic with the host's objects replaced by small duck-typed stand-ins.

Regenerate the snapshot after a deliberate change: ``UPDATE_SNAPSHOT=1 python -m pytest tests/test_nodes.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch

import hoststub

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
SNAPSHOT = FIXTURES / "node_schemas.json"
CORE_SNAPSHOT = FIXTURES / "core_node_schemas.json"
PACK = "ComfyUI_AnyTalker_test"


@pytest.fixture
def pack(monkeypatch, tmp_path):
    hoststub.install(monkeypatch, tmp_path / "models")
    spec = importlib.util.spec_from_file_location(PACK, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, PACK, module)
    spec.loader.exec_module(module)
    nodes = importlib.import_module(f"{PACK}.nodes")
    yield module, nodes
    for key in [k for k in sys.modules if k.startswith(PACK + ".")]:
        del sys.modules[key]


def schemas(nodes) -> dict:
    return {node.define_schema().node_id: hoststub.schema_dict(node) for node in nodes.NODE_LIST}


# ------------------------------------------------------------------------------------------------------ schemas


def test_node_schemas_match_the_snapshot(pack):
    _, nodes = pack
    current = schemas(nodes)
    if os.environ.get("UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=1) + "\n")
    assert current == json.loads(SNAPSHOT.read_text()), (
        "node schemas changed; if deliberate, rerun with UPDATE_SNAPSHOT=1 and update the workflows"
    )


def test_every_node_is_documented(pack):
    _, nodes = pack
    for node_id, schema in schemas(nodes).items():
        assert node_id.startswith("AnyTalker") and schema["category"].startswith("AnyTalker")
        assert schema["description"] and "\n" not in schema["description"]
        for item in schema["inputs"] + schema["outputs"]:
            assert item["tooltip"], f"{node_id}: {item} has no tooltip"


def test_entrypoint_registers_every_node_and_the_models_folder(pack):
    import asyncio

    module, nodes = pack
    extension = asyncio.run(module.comfy_entrypoint())
    assert asyncio.run(extension.get_node_list()) == nodes.NODE_LIST
    assert "anytalker" in sys.modules["folder_paths"].folder_names_and_paths


# ---------------------------------------------------------------------------------------------- widget settings
#
# The frontends (1.27.10 and 1.49.6) round a typed int, and step it with the arrows, to min + k * step within
# [min, max]; the host range-checks an input itself only when the node's validate_inputs does not take it. So an
# int widget is right when the values it can reach are exactly the values the node accepts when queued.

# Inputs checked together: the others set so that only the input under test decides.
COMPANIONS = {
    "width": lambda v: {"height": v}, "height": lambda v: {"width": v}, "length": lambda v: {"duration": "length"},
    "window": lambda v: {"motion_frames": 1}, "motion_frames": lambda v: {"window": 161},
}  # fmt: skip


def frontend_int(widget: dict, typed: float) -> int:
    """What both frontends keep of a typed int: ``Math.round((v - min % step) / step) * step + min % step``,
    clamped to [min, max]."""
    import math

    step, low = widget.get("step", 1), widget.get("min", 0)
    offset = math.fmod(low, step)  # JavaScript's %
    value = math.floor((typed - offset) / step + 0.5) * step + offset  # Math.round: halves up
    return int(min(max(value, low), widget["max"]))


def accepts(cls, widget: dict, value) -> bool:
    """Whether the node takes ``value`` for this input when the prompt is queued (its validate_inputs, else the
    host's own min/max check)."""
    import inspect

    own = inspect.signature(cls.validate_inputs).parameters if hasattr(cls, "validate_inputs") else {}
    if widget["id"] not in own:
        return widget.get("min", value) <= value <= widget.get("max", value)
    values = {widget["id"]: value, **COMPANIONS.get(widget["id"], lambda v: {})(value)}
    return cls.validate_inputs(**{k: v for k, v in values.items() if k in own}) is True


def int_widgets(nodes):
    for cls in nodes.NODE_LIST:
        schema = hoststub.schema_dict(cls)
        for widget in schema["inputs"]:
            if widget["type"] == "INT":
                yield cls, schema["node_id"], widget


def test_every_int_widget_reaches_exactly_the_values_its_node_accepts(pack):
    _, nodes = pack
    checked = 0
    for cls, node_id, widget in int_widgets(nodes):
        low, high, step = widget["min"], widget["max"], widget.get("step", 1)
        where = f"{node_id}.{widget['id']} (min {low}, max {high}, step {step})"
        assert (high - low) % step == 0, f"{where}: max is not min + k * step, so the frontend can clamp off the grid"
        assert accepts(cls, widget, widget["default"]) and frontend_int(widget, widget["default"]) == widget["default"]
        near = [*range(low - 3 * step - 2, low + 60 * step), *range(max(low, high - 60 * step), high + 3 * step + 2)]
        for value in near:
            reachable = low <= value <= high and (value - low) % step == 0
            assert accepts(cls, widget, value) == reachable, f"{where}: {value} reachable {reachable}"
            typed = frontend_int(widget, value)
            assert accepts(cls, widget, typed), f"{where}: typing {value} leaves {typed}, which the node refuses"
        checked += 1
    assert checked >= 15


def test_float_widgets_are_range_checked_by_the_host(pack):
    """Float inputs take any value in [min, max] (the frontends keep 0.01s): the host checks the range itself."""
    import inspect

    _, nodes = pack
    for cls in nodes.NODE_LIST:
        own = inspect.signature(cls.validate_inputs).parameters if hasattr(cls, "validate_inputs") else {}
        for widget in hoststub.schema_dict(cls)["inputs"]:
            if widget["type"] == "FLOAT":
                assert widget["id"] not in own and widget["min"] <= widget["default"] <= widget["max"]


def test_lengths_typed_by_hand_stay_and_the_audio_length_is_a_choice(pack):
    """The artist's view: 9 and 17 frames typed into length are kept and run; the arrows step 4n+1; 'as long as
    the audio' is the duration choice, the default, and old workflows (length 0, no duration) keep meaning it."""
    _, nodes = pack
    for cls in (nodes.AnyTalkerImageToVideo, nodes.AnyTalkerLongVideo, nodes.AnyTalkerExtend):
        widgets = {w["id"]: w for w in hoststub.schema_dict(cls)["inputs"]}
        length, duration = widgets["length"], widgets["duration"]
        assert [frontend_int(length, t) for t in (9, 17, 8, 16, 0, 100003)] == [9, 17, 9, 17, 1, 100001]
        assert duration["options"] == ["audio", "length"] and duration["default"] == "audio" and duration["optional"]
        assert cls.validate_inputs(length=9, duration="length") is True
        assert cls.validate_inputs(length=81, duration="audio") is True
        assert cls.validate_inputs(length=0) is True  # a prompt from before duration: 0 = the audio's length
        assert cls.validate_inputs(length=0, duration="audio") is True  # an old workflow's 0, loaded
        assert "use 1 or 5" in cls.validate_inputs(length=0, duration="length")
        assert cls.validate_inputs(length=8, duration="length").startswith("length is 8: use 5 or 9")
        assert "use one of audio, length" in cls.validate_inputs(length=9, duration="frames")
    schema = nodes.schema
    assert schema.clip_frames(9, "length") == 9 and schema.clip_frames(9, "audio") == 0
    assert schema.clip_frames(0, None) == 0 and schema.clip_frames(17, None) == 17


def test_rules_the_widgets_cannot_say_name_the_nearest_valid_values(pack):
    _, nodes = pack
    check = nodes.AnyTalkerLongVideo.validate_inputs
    assert check(width=100, height=64).startswith("width is 100: use 96 or 128")
    assert check(width=4200, height=64).startswith("width is 4200: use 4096")
    assert "give both" in check(width=832, height=0) and "set both to 0" in check(width=832, height=0)
    assert check(window=10).startswith("window is 10: use 9 or 13")
    assert check(window=200).startswith("window is 200: use 161")
    assert check(motion_frames=37).startswith("motion_frames is 37: use 33")
    assert check(window=17, motion_frames=17) == (
        "motion_frames (17) must be shorter than the window (17): use motion_frames 13 or less, or a window of 21 "
        "or more"
    )
    for widget in hoststub.schema_dict(nodes.AnyTalkerLongVideo)["inputs"]:
        if widget["id"] in ("width", "height"):
            assert "both or neither" in widget["tooltip"]
        if widget["id"] == "motion_frames":
            assert "shorter than the window (at most window - 4)" in widget["tooltip"]


# ---------------------------------------------------------------------------------------------------- workflows

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FILE_COMBOS = {"model_name", "image", "audio", "clip_name", "vae_name", "audio_encoder_name", "unet_name"}


def all_schemas(nodes) -> dict:
    core = json.loads(CORE_SNAPSHOT.read_text())
    return {**core, **schemas(nodes)}


def widget_count(schema: dict) -> list[dict]:
    """The widgets in the order the frontend saves their values: the host lists required inputs, then optional."""
    widgets = []
    for item in sorted(schema["inputs"], key=lambda i: bool(i.get("optional"))):
        if item["type"] in WIDGET_TYPES or isinstance(item.get("options"), list):
            widgets.append(item)
            if item.get("control_after_generate"):
                widgets.append({"id": item["id"] + ":control", "type": "CONTROL"})
            if item.get("image_upload"):  # the frontend's upload button keeps the value "image"
                widgets.append({"id": item["id"] + ":upload", "type": "UPLOAD"})
            if item.get("audio_upload"):  # the frontend's player and upload button (saved as null, null)
                widgets += [{"id": item["id"] + f":{k}", "type": "UPLOAD"} for k in ("player", "upload")]
    return widgets


WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))


def test_the_shipped_workflows_exist():
    names = {p.stem for p in WORKFLOWS}
    assert {"anytalker_one_person", "anytalker_two_people_together", "anytalker_two_people_taking_turns",
            "anytalker_three_people", "anytalker_conversation_20s"} <= names  # fmt: skip


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_is_valid_against_the_schemas(pack, path):
    _, nodes = pack
    known = all_schemas(nodes)
    graph = json.loads(path.read_text())
    by_id = {n["id"]: n for n in graph["nodes"]}
    assert len(by_id) == len(graph["nodes"]), "duplicate node ids"
    assert graph["last_node_id"] >= max(by_id)
    for node in graph["nodes"]:
        assert node["type"] in known, f"{path.name}: unknown node type {node['type']} (only core nodes and ours)"
        schema = known[node["type"]]
        widgets = widget_count(schema)
        values = node.get("widgets_values", [])
        assert len(values) == len(widgets), f"{path.name}: {node['type']} has {values}, expects {widgets}"
        for widget, value in zip(widgets, values):
            options = widget.get("options")
            if isinstance(options, list) and widget["id"] not in FILE_COMBOS:
                options = [o["key"] if isinstance(o, dict) else o for o in options]  # dynamic combos
                assert value in options, f"{path.name}: {node['type']}.{widget['id']} = {value!r} not in {options}"
            if widget["type"] in ("INT", "FLOAT"):
                assert isinstance(value, (int, float)) and not isinstance(value, bool)
                assert widget.get("min", value) <= value <= widget.get("max", value), (node["type"], widget, value)
        sockets = [i for i in schema["inputs"] if i not in widgets and i["type"] not in WIDGET_TYPES]
        socket_ids = {i["id"]: i for i in sockets}
        for entry in node.get("inputs", []):
            assert entry["name"] in socket_ids, f"{path.name}: {node['type']} has no socket {entry['name']}"
            assert entry["type"] == socket_ids[entry["name"]]["type"]
        required = {i["id"] for i in sockets if not i["optional"]}
        linked = {e["name"] for e in node.get("inputs", []) if e.get("link") is not None}
        assert required <= linked, f"{path.name}: {node['type']} misses required inputs {required - linked}"
        assert [o["type"] for o in node.get("outputs", [])] == [o["type"] for o in schema["outputs"]]
    for link_id, src, src_slot, dst, dst_slot, kind in graph["links"]:
        out = by_id[src]["outputs"][src_slot]
        inp = by_id[dst]["inputs"][dst_slot]
        assert out["type"] == inp["type"] == kind, f"{path.name}: link {link_id} joins {out['type']} to {inp['type']}"
        assert link_id in out["links"] and inp["link"] == link_id


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_opens_tidy(path):
    """At the sizes it is saved at (at least what the frontends draw, see make_workflows.SIZES), no node covers
    another, title bars included, and no node sticks out of a group; a group per person; the length follows the
    audio. tests/tools/browser_smoke.py measures the same in the real frontends."""
    sys.path.insert(0, str(REPO / "tests" / "tools"))
    try:
        from browser_smoke import overlaps
        from make_workflows import SIZES, TITLE
    finally:
        sys.path.remove(str(REPO / "tests" / "tools"))
    graph = json.loads(path.read_text())
    boxes = {
        "nodes": [{"id": n["id"], "title": n.get("title", n["type"]),
                   "box": [n["pos"][0], n["pos"][1] - TITLE, n["size"][0], n["size"][1] + TITLE]}
                  for n in graph["nodes"]],
        "groups": [{"title": g["title"], "box": g["bounding"]} for g in graph["groups"]],
    }  # fmt: skip
    assert overlaps(boxes) == []
    for node in graph["nodes"]:
        assert node["size"][0] >= SIZES[node["type"]][0] and node["size"][1] >= SIZES[node["type"]][1]
    people = [n for n in graph["nodes"] if n["type"] == "AnyTalkerIdentity"]
    assert [g["title"].split(":")[0] for g in graph["groups"]] == [f"Person {k + 1}" for k in range(len(people))]
    for group, person in zip(graph["groups"], people):
        assert f"face {person['widgets_values'][0]}" in group["title"]
    clip = next(n for n in graph["nodes"] if n["type"] in ("AnyTalkerImageToVideo", "AnyTalkerLongVideo"))
    assert clip["widgets_values"][-1] == "audio"


# ------------------------------------------------------------------------------------------------- node logic


class FakeManagement(types.ModuleType):
    def __init__(self):
        super().__init__("comfy.model_management")
        self.loaded, self.interrupt = [], False

    def load_model_gpu(self, patcher):
        self.loaded.append(patcher)

    def intermediate_device(self):
        return torch.device("cpu")

    def throw_exception_if_processing_interrupted(self):
        if self.interrupt:
            raise KeyboardInterrupt("interrupted")


@pytest.fixture
def host(monkeypatch, pack):
    """Stand-ins for the few host modules the node logic calls (model management, conditioning helper)."""
    mm = FakeManagement()
    comfy = types.ModuleType("comfy")
    comfy.model_management = mm
    clip_vision = types.ModuleType("comfy.clip_vision")

    class Output(dict):
        def __getattr__(self, name):
            return self[name]

    clip_vision.Output = Output
    helpers = types.ModuleType("node_helpers")
    helpers.conditioning_set_values = lambda cond, values: [[c[0], {**c[1], **values}] for c in cond]
    for name, module in (("comfy", comfy), ("comfy.model_management", mm), ("comfy.clip_vision", clip_vision),
                         ("node_helpers", helpers)):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)
    return mm


def test_host_dit_reads_the_hosts_packed_inputs(pack):
    from micro import micro_inputs, micro_model, run

    nodes_model = importlib.import_module(f"{PACK}.nodes.model")
    model = micro_model("af")
    host = nodes_model.HostDiT(model.config)
    host.load_state_dict(model.state_dict())
    host.attention = model.attention  # the host's attention needs the host; same math here
    inputs = micro_inputs(model.config, identities=2)
    expected = run(model, inputs)
    padded = torch.nn.functional.pad(inputs["text"], (0, 0, 0, model.config.text_len - inputs["text"].shape[1]))
    out = host(
        torch.cat([inputs["x"], inputs["y"]], 1), inputs["t"], padded, clip_fea=inputs["clip"],
        anytalker_audio=torch.stack(inputs["audio"], 1), anytalker_faces=torch.stack(inputs["faces"], 1),
        anytalker_masks=torch.stack(inputs["masks"], 1), transformer_options={},
    )  # fmt: skip
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="Image To Video"):
        host(torch.cat([inputs["x"], inputs["y"]], 1), inputs["t"], padded)


def test_host_sampler_equals_our_solver_and_reports_like_k_diffusion(pack, host):
    from anytalker_core.sampling import flow_sigmas
    from anytalker_core.sampling.solvers import sample_unipc

    sampling = importlib.import_module(f"{PACK}.nodes.sampling")
    sigmas, _ = flow_sigmas(6, 5.0)
    x = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))

    def model(xt, sigma, **extra):
        assert extra == {"seed": 3} and sigma.shape == (1,)
        return xt * (1 - sigma.view(-1, 1, 1, 1, 1)) * 0.5

    seen = []
    out = sampling.ksampler_function("unipc")(model, x, sigmas, extra_args={"seed": 3}, callback=seen.append)
    expected = sample_unipc(lambda xt, s: model(xt, s.reshape(1), seed=3), x, sigmas)
    torch.testing.assert_close(out, expected)
    assert [s["i"] for s in seen] == list(range(6)) and set(seen[0]) >= {"x", "i", "sigma", "denoised"}
    host.interrupt = True
    with pytest.raises(KeyboardInterrupt):
        sampling.ksampler_function("euler")(model, x, sigmas, extra_args={"seed": 3})


def test_the_exact_run_hands_the_model_the_schedules_timesteps_and_starts_from_the_noise(pack, host):
    """AnyTalker Sampler: the reference's int64 timesteps (not sigma * 1000) and its start, latents = noise."""
    from anytalker_core.sampling import flow_sigmas
    from anytalker_core.sampling.solvers import sample_unipc

    sampling = importlib.import_module(f"{PACK}.nodes.sampling")
    sigmas, timesteps = flow_sigmas(6, 3.0)
    noise = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    seen = []

    class Model:  # the host's KSamplerX0Inpaint: its noise before the host scaled it by sigma_max
        def __init__(self):
            self.noise = noise

        def __call__(self, xt, sigma, **extra):
            seen.append(extra["model_options"]["transformer_options"]["anytalker_timestep"])
            assert extra["model_options"]["transformer_options"]["kept"] == 1  # the host's options stay
            return xt * 0.5

    scaled = sigmas[0] * noise  # what the host hands a sampler
    extra = {"model_options": {"transformer_options": {"kept": 1}}}
    out = sampling.ksampler_function("unipc", timesteps)(Model(), scaled, sigmas, extra_args=extra)
    assert seen == timesteps.tolist()
    torch.testing.assert_close(out, sample_unipc(lambda xt, s: xt * 0.5, noise, sigmas), rtol=0, atol=0)
    assert extra == {"model_options": {"transformer_options": {"kept": 1}}}  # not changed in place

    nodes_model = importlib.import_module(f"{PACK}.nodes.model")
    from micro import micro_inputs, micro_model, run

    model = micro_model("af")
    hostdit = nodes_model.HostDiT(model.config)
    hostdit.load_state_dict(model.state_dict())
    hostdit.attention = model.attention
    inputs = micro_inputs(model.config, identities=1)
    exact = run(model, dict(inputs, t=torch.tensor([874])))
    packed = dict(
        clip_fea=inputs["clip"],
        anytalker_audio=torch.stack(inputs["audio"], 1),
        anytalker_faces=torch.stack(inputs["faces"], 1),
        anytalker_masks=torch.stack(inputs["masks"], 1),
    )
    x = torch.cat([inputs["x"], inputs["y"]], 1)
    host_float = torch.tensor([874.6])  # sigma * 1000 as the host computes it
    got = hostdit(x, host_float, inputs["text"], transformer_options={"anytalker_timestep": 874}, **packed)
    assert torch.equal(got, exact)
    assert not torch.equal(hostdit(x, host_float, inputs["text"], transformer_options={}, **packed), exact)


class FakeClipVision:
    """The host's CLIP_VISION: ``model(pixel_values, intermediate_output=-2)`` -> (last, penultimate, ...)."""

    def __init__(self, tower):
        self.patcher, self.load_device, self.tower = object(), torch.device("cpu"), tower

    def model(self, pixel_values, intermediate_output):
        assert intermediate_output == -2
        hidden = self.tower(pixel_values=pixel_values, output_hidden_states=True).hidden_states
        return hidden[-1], hidden[-2], None, None


class FakeVae:
    """The host's VAE: ``encode(IMAGE [F, H, W, 3] 0..1) -> raw latent``."""

    def __init__(self, vae):
        self.vae, self.seen = vae, []

    def encode(self, pixels):
        self.seen.append(pixels)
        video = pixels.permute(3, 0, 1, 2)[None] * 2 - 1
        return self.vae.model.encode(video).latent_dist.mode()


def test_people_and_image_to_video_build_the_conditioning(pack, host):
    from anytalker_core import demo
    from anytalker_core.images import read_image
    from anytalker_core.people.audio import load_audio

    _, nodes = pack
    models = demo.tiny_models()
    encoder = types.SimpleNamespace(model=models.audio_encoder.model, patcher=None)
    clip = FakeClipVision(models.image_encoder.model)
    picture = torch.from_numpy(read_image(demo.IMAGE)).float().div(255)[None]
    audio = [{"waveform": load_audio(p)[None, None], "sample_rate": 16000} for p in demo.AUDIO]

    masks, preview = nodes.AnyTalkerFaceDetect.execute(picture, 2, "yunet").args
    assert masks.shape == (2, 256, 384) and preview.shape[0] == 1
    voices = [nodes.AnyTalkerVoice.execute(a).args[0] for a in audio]
    assert voices[0].seconds == pytest.approx(0.9)
    # chained right person first: the voice stays with its own face, whatever the left-to-right order
    chain = nodes.AnyTalkerIdentity.execute(masks, 2, voice=voices[1]).args[0]
    chain = nodes.AnyTalkerIdentity.execute(masks, 1, voice=voices[0], identities=chain).args[0]
    chain = nodes.AnyTalkerIdentity.execute(masks[:1], 1, identities=chain).args[0]  # a listener
    assert len(chain) == 3 and chain[2].voice is None
    with pytest.raises(ValueError, match="face 3"):
        nodes.AnyTalkerIdentity.execute(masks, 3)

    vae = FakeVae(models.vae)
    cond = [[torch.zeros(1, 512, 32), {}]]
    out = nodes.AnyTalkerImageToVideo.execute(
        cond, cond, vae, clip, encoder, picture, chain[:2], width=96, height=64, length=9, mode="pad"
    )  # fmt: skip
    positive, negative, latent, mix, binding = out.args
    extras = positive[0][1]
    assert extras["anytalker_audio"].shape == (1, 2, 9, 5, 2, 32)
    assert extras["anytalker_faces"].shape == (1, 2, 257, 32)
    assert extras["anytalker_masks"].shape == (1, 2, 3, 4, 6)
    assert extras["anytalker_y_mask"].shape == (1, 4, 3, 8, 12)
    assert extras["concat_latent_image"].shape == latent["samples"].shape == (1, 16, 3, 8, 12)
    assert extras["clip_vision_output"].penultimate_hidden_states.shape == (1, 257, 32)
    assert torch.count_nonzero(negative[0][1]["anytalker_audio"]) == 0
    assert torch.equal(negative[0][1]["anytalker_faces"], extras["anytalker_faces"])
    assert mix["sample_rate"] == 44100 and mix["waveform"].shape[:2] == (1, 1)
    assert vae.seen[0].shape == (9, 64, 96, 3)  # the first frame, then grey frames
    assert torch.allclose(vae.seen[0][1:], torch.full_like(vae.seen[0][1:], 0.5))
    # identity 1 (the right person's voice) is bound to the right face: its token mask lies on the right half
    token = extras["anytalker_masks"][0, 0, 0]
    assert token[:, 3:].sum() > token[:, :3].sum()
    with pytest.raises(ValueError, match="multiples of 32"):
        nodes.AnyTalkerImageToVideo.execute(cond, cond, vae, clip, encoder, picture, chain[:2], width=100, height=64)


def test_face_detect_reports_the_detector_and_scores(pack, monkeypatch):
    from anytalker_core import demo
    from anytalker_core.images import read_image

    _, nodes = pack
    monkeypatch.setitem(sys.modules, "insightface", None)  # auto -> YuNet, whatever this machine has installed
    picture = torch.from_numpy(read_image(demo.IMAGE)).float().div(255)[None]
    out = nodes.AnyTalkerFaceDetect.execute(picture, 2, "auto")
    masks, preview = out.args
    assert masks.shape == (2, 256, 384) and preview.shape[0] == 1 and preview.shape[2:] == (384, 3)
    text = out.ui["text"][0]
    assert text.startswith("detector: yunet, threshold 0.8") and "InsightFace not used" in text
    assert text.count("score 0.9") == 2
    assert masks[0].nonzero()[:, 1].float().mean() < masks[1].nonzero()[:, 1].float().mean()  # left to right
    text = nodes.AnyTalkerFaceDetect.execute(picture, 2, "yunet", threshold=0.85).ui["text"][0]
    assert text.startswith("detector: yunet, threshold 0.85")


def moving_box(frames: int, height: int, width: int) -> torch.Tensor:
    """A face-sized square sliding from the left third to the middle over the clip: [frames, height, width]."""
    masks = torch.zeros(frames, height, width)
    for f in range(frames):
        x = 40 + 10 * f
        masks[f, 60:130, x : x + 70] = 1.0
    return masks


def test_identity_moving_mask_reaches_the_routing_frame_by_frame(pack, host):
    from anytalker_core import demo
    from anytalker_core.people.routing import route_from_masks

    _, nodes = pack
    models = demo.tiny_models()
    picture, chain, clip, encoder = people(nodes, models)
    moving = moving_box(9, 256, 384)
    mover = nodes.AnyTalkerIdentity.execute(moving_mask=moving, voice=chain[0].voice).args[0]
    assert mover[0].moving and mover[0].face_mask.shape == (9, 256, 384)
    both = nodes.AnyTalkerIdentity.execute(chain[1].face_mask, 1, voice=chain[1].voice, identities=mover).args[0]

    vae, cond = FakeVae(models.vae), [[torch.zeros(1, 512, 32), {}]]
    extras = nodes.AnyTalkerImageToVideo.execute(cond, cond, vae, clip, encoder, picture, both, width=96, height=64,
                                                 length=9, mode="pad").args[0][0][1]  # fmt: skip
    expected = route_from_masks(picture[0], [moving, chain[1].face_mask], 9, size=(64, 96), keep_order=True)
    assert expected.moving
    assert torch.equal(extras["anytalker_masks"][0, 0], expected.token_masks[0])  # [3 latent frames, 4, 6]
    assert torch.equal(extras["anytalker_masks"][0, 1], expected.token_masks[1])
    assert torch.equal(extras["anytalker_y_mask"][0], expected.y_mask)
    columns = [float((m.sum(0) * torch.arange(6)).sum() / m.sum()) for m in extras["anytalker_masks"][0, 0]]
    assert columns[0] < columns[1] < columns[2]  # the face region follows the mask to the right
    still = extras["anytalker_masks"][0, 1]
    assert torch.equal(still[0], still[2])  # the Face Detect face holds still

    with pytest.raises(ValueError, match="moving_mask holds 9 masks but the clip has 13 frames"):
        nodes.AnyTalkerImageToVideo.execute(cond, cond, vae, clip, encoder, picture, both, width=96, height=64,
                                            length=13, mode="pad")  # fmt: skip
    with pytest.raises(ValueError, match="moving_mask: expected one mask per video frame.*got a batch of 8"):
        nodes.AnyTalkerIdentity.execute(moving_mask=moving[:8])
    with pytest.raises(ValueError, match="connect exactly one of them \\(both are connected\\)"):
        nodes.AnyTalkerIdentity.execute(chain[1].face_mask, 1, moving_mask=moving)
    with pytest.raises(ValueError, match="neither is connected"):
        nodes.AnyTalkerIdentity.execute()


def people(nodes, models):
    from anytalker_core import demo
    from anytalker_core.images import read_image
    from anytalker_core.people.audio import load_audio

    encoder = types.SimpleNamespace(model=models.audio_encoder.model, patcher=None)
    clip = FakeClipVision(models.image_encoder.model)
    picture = torch.from_numpy(read_image(demo.IMAGE)).float().div(255)[None]
    masks = nodes.AnyTalkerFaceDetect.execute(picture, 2, "yunet").args[0]
    chain = None
    for k, path in enumerate(demo.AUDIO):
        voice = nodes.AnyTalkerVoice.execute({"waveform": load_audio(path)[None, None], "sample_rate": 16000}).args[0]
        chain = nodes.AnyTalkerIdentity.execute(masks, k + 1, voice=voice, identities=chain).args[0]
    return picture, chain, clip, encoder


def test_extend_continues_from_the_previous_frames(pack, host):
    from anytalker_core import demo

    _, nodes = pack
    models = demo.tiny_models()
    picture, chain, clip, encoder = people(nodes, models)
    vae = FakeVae(models.vae)
    cond = [[torch.zeros(1, 512, 32), {}]]
    previous = torch.rand(17, 64, 96, 3)
    args = dict(width=96, height=64, length=41, mode="concat", window=17, motion_frames=5)
    positive, negative, latent, trim, left = nodes.AnyTalkerExtend.execute(
        cond, cond, vae, clip, encoder, picture, chain, previous_frames=previous, **args
    ).args
    assert trim == 5 and left == 41 - (12 + 17)  # the window covers frames 12..28
    extras = positive[0][1]
    assert latent["samples"].shape == (1, 16, 5, 8, 12)
    assert torch.all(extras["anytalker_y_mask"][0, :, :2] == 1)  # 5 known frames = latent frames 0 and 1
    assert torch.allclose(vae.seen[-1][:5], previous[-5:], atol=1e-6)  # the last 5 frames, then grey
    assert torch.allclose(vae.seen[-1][5:], torch.full_like(vae.seen[-1][5:], 0.5))
    whole = nodes.AnyTalkerImageToVideo.execute(cond, cond, vae, clip, encoder, picture, chain, width=96, height=64,
                                                length=41, mode="concat").args[0][0][1]["anytalker_audio"]  # fmt: skip
    assert torch.equal(extras["anytalker_audio"], whole[:, :, 12:29])  # the clip's one timeline, sliced
    with pytest.raises(ValueError, match="complete"):
        nodes.AnyTalkerExtend.execute(cond, cond, vae, clip, encoder, picture, chain,
                                      previous_frames=torch.rand(41, 64, 96, 3), **args)  # fmt: skip


def test_long_video_node_renders_every_frame_once(pack, host, monkeypatch):
    from anytalker_core import demo

    _, nodes = pack
    models = demo.tiny_models()
    picture, chain, clip, encoder = people(nodes, models)
    calls, masks_seen = [], []
    sample = types.ModuleType("comfy.sample")
    sample.prepare_noise = lambda latent, seed: torch.zeros_like(latent)

    def sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent, callback=None, **kw):
        calls.append(positive[0][1]["anytalker_audio"].shape[2])
        masks_seen.append(tuple(positive[0][1]["anytalker_masks"].shape))
        callback(0, latent, latent, 1)
        return torch.randn_like(latent)

    sample.sample_custom = sample_custom
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = lambda total: types.SimpleNamespace(update_absolute=lambda value: None)
    samplers = types.ModuleType("comfy.samplers")
    samplers.KSAMPLER = lambda fn: fn
    for name, module in (("comfy.sample", sample), ("comfy.utils", utils), ("comfy.samplers", samplers)):
        monkeypatch.setitem(sys.modules, name, module)
        monkeypatch.setattr(sys.modules["comfy"], name.split(".")[1], module, raising=False)

    class DecodingVae(FakeVae):
        def decode(self, latent):
            video = self.vae.decode(latent)  # normalised latent in, [1, 3, F, H, W] in [-1, 1] out
            return video[0].permute(1, 2, 3, 0).add(1).mul(0.5)[None]

    frames, audio = nodes.AnyTalkerLongVideo.execute(
        None, [[torch.zeros(1, 512, 32), {}]], [[torch.zeros(1, 512, 32), {}]], DecodingVae(models.vae), clip,
        encoder, picture, chain, width=96, height=64, length=41, mode="concat", window=17, motion_frames=5, seed=1,
        steps=2, cfg=4.5, shift=5.0, solver="unipc", color_anchor=True, follow_faces=True,
    ).args  # fmt: skip
    assert calls == [17, 17, 17] and frames.shape == (41, 64, 96, 3)
    assert masks_seen[1:] == [(1, 2, 5, 4, 6)] * 2  # re-routed per window (faces kept when none are found)
    assert audio["waveform"].shape[-1] == pytest.approx(41 / 24 * audio["sample_rate"], abs=2)


def test_color_match_node(pack):
    _, nodes = pack
    reference = torch.rand(1, 32, 48, 3)
    tinted = (reference.repeat(4, 1, 1, 1) * torch.tensor([1.2, 0.8, 0.7])).clamp(0, 1)
    (matched,) = nodes.AnyTalkerColorMatch.execute(tinted, reference, 1.0).args
    error = lambda x: (x.mean((0, 1, 2)) - reference[0].mean((0, 1))).abs().max()  # noqa: E731
    assert matched.shape == tinted.shape and error(matched) < error(tinted) / 3


def test_extend_and_loader_refuse_bad_inputs_clearly(pack, host, tmp_path):
    from anytalker_core import demo

    _, nodes = pack
    models = demo.tiny_models()
    picture, chain, clip, encoder = people(nodes, models)
    vae, cond = FakeVae(models.vae), [[torch.zeros(1, 512, 32), {}]]
    args = dict(width=96, height=64, length=41, mode="concat", window=17, motion_frames=5)
    with pytest.raises(ValueError, match="at least motion_frames"):
        nodes.AnyTalkerExtend.execute(cond, cond, vae, clip, encoder, picture, chain,
                                      previous_frames=torch.rand(3, 64, 96, 3), **args)  # fmt: skip
    with pytest.raises(ValueError, match="previous_frames are 64x32 but the video is 96x64"):
        nodes.AnyTalkerExtend.execute(cond, cond, vae, clip, encoder, picture, chain,
                                      previous_frames=torch.rand(17, 32, 64, 3), **args)  # fmt: skip
    loaders = importlib.import_module(f"{PACK}.nodes.loaders")
    with pytest.raises(FileNotFoundError, match="models/anytalker or models/diffusion_models"):
        loaders.checkpoint_path("missing.pth")


def test_evaluate_node_binds_the_chains_voices_to_their_faces(pack, host, monkeypatch):
    from anytalker_core import demo
    from anytalker_core.people.audio import load_audio
    from judge_frames import FPS, talking_frames, voices

    _, nodes = pack
    shown = []
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = lambda total: types.SimpleNamespace(update_absolute=lambda done, total=None: shown.append(done))
    monkeypatch.setitem(sys.modules, "comfy.utils", utils)
    monkeypatch.setattr(sys.modules["comfy"], "utils", utils, raising=False)
    left, right = voices()
    frames = torch.from_numpy(talking_frames([left, right])).float().div(255)  # [43, 256, 384, 3]
    masks = nodes.AnyTalkerFaceDetect.execute(frames[:1], 2, "yunet").args[0]
    audio = [{"waveform": load_audio(p)[None, None], "sample_rate": 16000} for p in demo.AUDIO]
    said = [nodes.AnyTalkerVoice.execute(a).args[0] for a in audio]
    chain = nodes.AnyTalkerIdentity.execute(masks, 2, voice=said[1]).args[0]  # the right person chained first
    chain = nodes.AnyTalkerIdentity.execute(masks, 1, voice=said[0], identities=chain).args[0]

    insightface = Path(sys.modules["folder_paths"].models_dir) / "insightface"  # InsightFace's models, as Face Detect
    insightface.mkdir(parents=True, exist_ok=True)
    tracks_module = importlib.import_module(f"{PACK}.anytalker_core.judge.tracks")
    roots, find = [], tracks_module.find_faces
    monkeypatch.setattr(tracks_module, "find_faces", lambda *a, **kw: roots.append(kw.get("root")) or find(*a, **kw))
    out = nodes.AnyTalkerEvaluate.execute(frames, FPS, identities=chain, mode="concat")  # the voices take turns
    assert set(roots) == {str(insightface)}
    plot, text = out.args
    assert plot.shape[0] == 1 and plot.shape[-1] == 3 and 0 <= float(plot.min()) and float(plot.max()) <= 1
    report = json.loads(text.split("\n\n", 1)[1])
    assert report["binding"] == [0, 1] and not report["swapped"] and report["frames"] == 43
    assert out.ui["text"][0].startswith("person") and shown[-1] == 43

    tracks = [{"waveform": torch.from_numpy(t)[None, None], "sample_rate": 16000} for t in (right, left)]
    swapped = nodes.AnyTalkerEvaluate.execute(frames, FPS, audio_1=tracks[0], audio_2=tracks[1])
    assert "SWAPPED" in swapped.ui["text"][0]
    unwired = nodes.AnyTalkerEvaluate.execute(frames, FPS)  # says why on the node; the video before it is kept
    assert "connect the Identity chain or the audio inputs (neither is connected)" in unwired.ui["text"][0]
    assert unwired.args[0].shape[-1] == 3
    noise = nodes.AnyTalkerEvaluate.execute(torch.rand(9, 64, 96, 3), FPS, audio_1=tracks[0], audio_2=tracks[1])
    assert noise.args[1].startswith("Cannot judge this video: video: no face found in any of the 9 frames")
