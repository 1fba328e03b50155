"""Dev script: write the shipped UI-format workflows (``workflows/*.json``) from a compact description.

    python tests/tools/make_workflows.py

Sockets and widget order come from the committed schemas (``tests/fixtures/node_schemas.json`` for our nodes,
``core_node_schemas.json`` for ComfyUI's), so a renamed input breaks ``tests/test_nodes.py`` instead of a user's
graph. Model file names are the ones the README tells users to save.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
SCHEMAS = {
    **json.loads((FIXTURES / "core_node_schemas.json").read_text()),
    **json.loads((FIXTURES / "node_schemas.json").read_text()),
}
WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}

MODEL = "1_3B-single-v1.pth"
TEXT = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
VAE = "wan_2.1_vae.safetensors"
CLIP_VISION = "clip_vision_h.safetensors"
WAV2VEC2 = "wav2vec2-base-960h.safetensors"
NEGATIVE = (
    "The mouth movements are unnatural and not synchronized with the speech; lip motion is delayed or mismatched "
    "with the voice. Stiff, frozen or flickering facial expressions, jittering eyes, twisted necks, distorted "
    "faces, extra fingers, subtitles, captions, words on the bottom."
)


def is_socket(item: dict) -> bool:
    return item["type"] not in WIDGETS and not isinstance(item.get("options"), list)


class Graph:
    def __init__(self) -> None:
        self.nodes: list[dict] = []
        self.links: list[list] = []

    def add(self, kind: str, widgets: list, pos: tuple[int, int], title: str | None = None, **inputs) -> int:
        schema = SCHEMAS[kind]
        node_id = len(self.nodes) + 1
        node = {
            "id": node_id, "type": kind, "pos": list(pos), "size": [320, 120], "flags": {}, "order": node_id - 1,
            "mode": 0,
            "inputs": [{"name": i["id"], "type": i["type"], "link": None} for i in schema["inputs"] if is_socket(i)],
            "outputs": [{"name": o["name"], "type": o["type"], "links": [], "slot_index": k}
                        for k, o in enumerate(schema["outputs"])],
            "properties": {"Node name for S&R": kind}, "widgets_values": widgets,
        }  # fmt: skip
        if title:
            node["title"] = title
        self.nodes.append(node)
        for name, (src, slot) in inputs.items():
            self.link(src, slot, node_id, name)
        return node_id

    def link(self, src: int, slot: int, dst: int, name: str) -> None:
        out = self.nodes[src - 1]["outputs"][slot]
        target = next(i for i in self.nodes[dst - 1]["inputs"] if i["name"] == name)
        assert out["type"] == target["type"], (src, slot, dst, name)
        link_id = len(self.links) + 1
        out["links"].append(link_id)
        target["link"] = link_id
        self.links.append([link_id, src, slot, dst, self.nodes[dst - 1]["inputs"].index(target), out["type"]])

    def dump(self, path: Path, note: str) -> None:
        graph = {
            "last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
            "links": self.links, "groups": [], "config": {}, "extra": {"anytalker_note": note}, "version": 0.4,
        }  # fmt: skip
        path.write_text(json.dumps(graph, indent=1) + "\n")


def workflow(picture: str, voices: list[str | None], prompt: str, mode: str, note: str) -> Graph:
    g = Graph()
    model = g.add("AnyTalkerModelLoader", [MODEL, "default"], (0, 0))
    clip = g.add("CLIPLoader", [TEXT, "wan", "default"], (0, 160))
    positive = g.add("CLIPTextEncode", [prompt], (360, 120), "Prompt", clip=(clip, 0))
    negative = g.add("CLIPTextEncode", [NEGATIVE], (360, 300), "Negative prompt", clip=(clip, 0))
    vae = g.add("VAELoader", [VAE], (0, 320))
    vision = g.add("CLIPVisionLoader", [CLIP_VISION], (0, 440))
    encoder = g.add("AudioEncoderLoader", [WAV2VEC2], (0, 560))
    image = g.add("LoadImage", [picture, "image"], (0, 700))
    faces = g.add("AnyTalkerFaceDetect", [len(voices), "auto", 0.0], (360, 700), image=(image, 0))
    chain = None
    for k, track in enumerate(voices):
        y = 480 + 260 * k
        links = {"face_mask": (faces, 0)}
        if track is not None:
            audio = g.add("LoadAudio", [track, None, None], (720, y), f"Voice of person {k + 1}")
            links["voice"] = (g.add("AnyTalkerVoice", [], (1000, y), audio=(audio, 0)), 0)
        if chain is not None:
            links["identities"] = (chain, 0)
        title = f"Person {k + 1}" + (" (listener)" if track is None else "")
        chain = g.add("AnyTalkerIdentity", [k + 1, 0.0], (1300, y), title, **links)
    video = g.add(
        "AnyTalkerImageToVideo", [0, 0, 0, mode], (1640, 200), positive=(positive, 0), negative=(negative, 0),
        vae=(vae, 0), clip_vision=(vision, 0), audio_encoder=(encoder, 0), start_image=(image, 0),
        identities=(chain, 0),
    )  # fmt: skip
    g.add("PreviewImage", [], (1640, 560), "Who drives which face", images=(video, 4))
    samples = g.add(
        "AnyTalkerSampler", [42, "fixed", 0, 4.5, 0.0, "unipc"], (2000, 0), model=(model, 0),
        positive=(video, 0), negative=(video, 1), latent=(video, 2),
    )  # fmt: skip
    frames = g.add("VAEDecode", [], (2360, 0), samples=(samples, 0), vae=(vae, 0))
    clip_out = g.add("CreateVideo", [24, 8], (2360, 160), images=(frames, 0), audio=(video, 3))
    g.add("SaveVideo", ["video/AnyTalker", "auto", "auto"], (2700, 0), video=(clip_out, 0))
    return g


def conversation(note: str) -> Graph:
    """A two-person conversation of about 20 s, rendered window by window in one node."""
    g = Graph()
    model = g.add("AnyTalkerModelLoader", [MODEL, "default"], (0, 0))
    clip = g.add("CLIPLoader", [TEXT, "wan", "default"], (0, 160))
    prompt = "The image captures two news anchors, a man and a woman, talking with each other in a studio."
    positive = g.add("CLIPTextEncode", [prompt], (360, 120), "Prompt", clip=(clip, 0))
    negative = g.add("CLIPTextEncode", [NEGATIVE], (360, 300), "Negative prompt", clip=(clip, 0))
    vae = g.add("VAELoader", [VAE], (0, 320))
    vision = g.add("CLIPVisionLoader", [CLIP_VISION], (0, 440))
    encoder = g.add("AudioEncoderLoader", [WAV2VEC2], (0, 560))
    image = g.add("LoadImage", ["2p-1.png", "image"], (0, 700))
    faces = g.add("AnyTalkerFaceDetect", [2, "auto", 0.0], (360, 700), image=(image, 0))
    chain = None
    for k in range(2):
        y = 480 + 260 * k
        audio = g.add("LoadAudio", [f"conversation_person_{k + 1}.wav", None, None], (720, y),
                      f"Voice of person {k + 1} (about 20 s)")  # fmt: skip
        voice = g.add("AnyTalkerVoice", [], (1000, y), audio=(audio, 0))
        links = {"face_mask": (faces, 0), "voice": (voice, 0)}
        if chain is not None:
            links["identities"] = (chain, 0)
        chain = g.add("AnyTalkerIdentity", [k + 1, 0.0], (1300, y), f"Person {k + 1}", **links)
    long = g.add(
        "AnyTalkerLongVideo", [0, 0, 0, "pad", 81, 5, 42, "fixed", 0, 4.5, 0.0, "unipc", True, True], (1640, 100),
        model=(model, 0), positive=(positive, 0), negative=(negative, 0), vae=(vae, 0), clip_vision=(vision, 0),
        audio_encoder=(encoder, 0), start_image=(image, 0), identities=(chain, 0),
    )  # fmt: skip
    clip_out = g.add("CreateVideo", [24, 8], (2000, 100), images=(long, 0), audio=(long, 1))
    g.add("SaveVideo", ["video/AnyTalker_long", "auto", "auto"], (2340, 100), video=(clip_out, 0))
    return g


def main() -> int:
    out = REPO / "workflows"
    specs = {
        "anytalker_one_person": (
            "1p-0.png", ["1p-0.wav"], "The man stands in the dusty western street, backlit by the setting sun, and "
            "his determined gaze speaks of a rugged spirit.", "pad", "One person speaking.",
        ),
        "anytalker_two_people_together": (
            "2p-1.png", ["2p-1-left.wav", "2p-1-right.wav"], "The image captures two news anchors, a man and a "
            "woman, reporting the weather in a studio.", "pad",
            "Two people on one timeline: each track plays from the start (pad mode); overlapping speech is fine.",
        ),
        "anytalker_two_people_taking_turns": (
            "2p-0.png", ["person_1.wav", "person_2.wav"], "The two people are talking to each other.", "concat",
            "Two people taking turns (concat mode): person 2's track starts where person 1's ends.",
        ),
        "anytalker_three_people": (
            "three_people.png", ["person_1.wav", "person_2.wav", "person_3.wav"],
            "Three friends are chatting around a table.", "concat",
            "Three people taking turns; chain another AnyTalker Identity for each extra person, or leave a voice "
            "out to make that person a listener.",
        ),
    }  # fmt: skip
    for name, (picture, voices, prompt, mode, note) in specs.items():
        workflow(picture, voices, prompt, mode, note).dump(out / f"{name}.json", note)
    note = ("A two-person conversation of about 20 s (two tracks on one timeline), made in windows of 81 frames "
            "that continue each other; the length follows the audio.")
    conversation(note).dump(out / "anytalker_conversation_20s.json", note)
    sys.stdout.write(f"wrote {len(specs) + 1} workflows to {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
