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


# The size each node is saved at: at least what both frontends draw it at (measured with
# ``tests/tools/browser_smoke.py --measure`` in 1.27.10 and 1.49.6, and after loading, with LoadImage's preview),
# so that the saved layout is the one on the screen. Heights without the 30 px title bar.
SIZES = {
    "AnyTalkerModelLoader": (320, 90), "CLIPLoader": (320, 110), "CLIPTextEncode": (400, 150),
    "VAELoader": (320, 60), "CLIPVisionLoader": (320, 60), "AudioEncoderLoader": (320, 60), "LoadImage": (320, 340),
    "AnyTalkerFaceDetect": (320, 130), "LoadAudio": (320, 140), "AnyTalkerVoice": (180, 30),
    "AnyTalkerIdentity": (320, 150), "AnyTalkerImageToVideo": (340, 300), "PreviewImage": (340, 340),
    "AnyTalkerSampler": (320, 240), "VAEDecode": (220, 50), "CreateVideo": (320, 110), "SaveVideo": (400, 420),
    "AnyTalkerLongVideo": (340, 540), "AnyTalkerEvaluate": (320, 330),
}  # fmt: skip
TITLE = 30  # the title bar above a node's pos, in both frontends
GAP = 40  # between two nodes: from one's bottom edge to the next one's title bar
GROUP_HEADER = 40  # a group's title band (font 24)


class Graph:
    def __init__(self) -> None:
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.groups: list[dict] = []

    def add(self, kind: str, widgets: list, title: str | None = None, **inputs) -> int:
        schema = SCHEMAS[kind]
        node_id = len(self.nodes) + 1
        node = {
            "id": node_id, "type": kind, "pos": [0, 0], "size": list(SIZES[kind]), "flags": {}, "order": node_id - 1,
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

    def column(self, x: int, y: int, *ids: int) -> int:
        """Stack nodes top to bottom from ``y`` (the first one's title bar); returns where the next would go."""
        for node_id in ids:
            node = self.nodes[node_id - 1]
            node["pos"] = [x, y + TITLE]
            y += TITLE + node["size"][1] + GAP
        return y

    def row(self, x: int, y: int, *ids: int) -> int:
        """Place nodes left to right from ``x``, title bars at ``y``; returns where the next would go."""
        for node_id in ids:
            node = self.nodes[node_id - 1]
            node["pos"] = [x, y + TITLE]
            x += node["size"][0] + GAP
        return x

    def group(self, title: str, *ids: int, color: str = "#3f789e") -> None:
        """A titled box around nodes (their title bars included)."""
        boxes = [(n["pos"][0], n["pos"][1] - TITLE, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
                 for n in (self.nodes[i - 1] for i in ids)]  # fmt: skip
        left, top = min(b[0] for b in boxes) - 10, min(b[1] for b in boxes) - GROUP_HEADER - 10
        right, bottom = max(b[2] for b in boxes) + 10, max(b[3] for b in boxes) + 10
        self.groups.append({"title": title, "bounding": [left, top, right - left, bottom - top], "color": color,
                            "font_size": 24, "flags": {}})  # fmt: skip

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
            "links": self.links, "groups": self.groups, "config": {}, "extra": {"anytalker_note": note},
            "version": 0.4,
        }  # fmt: skip
        path.write_text(json.dumps(graph, indent=1) + "\n")


def inputs_and_people(g: Graph, picture: str, prompt: str, voices: list[str | None], people_x: int) -> tuple:
    """The loaders, prompts, picture and one group per person (voice -> face); returns the nodes the clip node
    takes and the bottom of the people's rows."""
    model = g.add("AnyTalkerModelLoader", [MODEL, "default"])
    clip = g.add("CLIPLoader", [TEXT, "wan", "default"])
    vae = g.add("VAELoader", [VAE])
    vision = g.add("CLIPVisionLoader", [CLIP_VISION])
    encoder = g.add("AudioEncoderLoader", [WAV2VEC2])
    below_loaders = g.column(0, 0, model, clip, vae, vision, encoder)
    positive = g.add("CLIPTextEncode", [prompt], "Prompt", clip=(clip, 0))
    negative = g.add("CLIPTextEncode", [NEGATIVE], "Negative prompt", clip=(clip, 0))
    image = g.add("LoadImage", [picture, "image"])
    faces = g.add("AnyTalkerFaceDetect", [len(voices), "auto", 0.0], image=(image, 0))
    g.column(360, 0, positive, negative)
    g.column(0, below_loaders, image)
    g.column(360, below_loaders, faces)
    chain, y = None, 0
    for k, track in enumerate(voices):
        links = {"face_mask": (faces, 0)}
        row = []
        if track is not None:
            audio = g.add("LoadAudio", [track, None, None], f"Voice of person {k + 1}")
            links["voice"] = (g.add("AnyTalkerVoice", [], audio=(audio, 0)), 0)
            row = [audio, links["voice"][0]]
        if chain is not None:
            links["identities"] = (chain, 0)
        title = f"Person {k + 1}" + (" (listener)" if track is None else "")
        chain = g.add("AnyTalkerIdentity", [k + 1, 0.0], title, **links)
        top = y + GROUP_HEADER + 10
        if row:
            g.row(people_x + 10, top, *row)
        g.column(people_x + 10 + 320 + GAP + 180 + GAP, top, chain)
        side = "the only one" if len(voices) == 1 else "leftmost" if k == 0 else "rightmost" if k == len(voices) - 1 \
            else "from the left"  # fmt: skip
        who = "listens" if track is None else "this voice drives"
        g.group(f"Person {k + 1}: {who} face {k + 1} ({side})", *row, chain)
        y += GROUP_HEADER + 10 + TITLE + max(SIZES["LoadAudio"][1], SIZES["AnyTalkerIdentity"][1]) + 10 + GAP
    sockets = dict(positive=(positive, 0), negative=(negative, 0), vae=(vae, 0), clip_vision=(vision, 0),
                   audio_encoder=(encoder, 0), start_image=(image, 0), identities=(chain, 0))  # fmt: skip
    return model, vae, sockets


PEOPLE_X = 800  # the people's groups: voice, then Voice node, then Identity
CLIP_X = PEOPLE_X + 20 + 320 + 180 + 320 + 2 * GAP + 60  # the clip node, right of the people


def workflow(picture: str, voices: list[str | None], prompt: str, mode: str) -> Graph:
    g = Graph()
    model, vae, sockets = inputs_and_people(g, picture, prompt, voices, PEOPLE_X)
    video = g.add("AnyTalkerImageToVideo", [0, 0, 81, mode, "audio"], **sockets)
    binding = g.add("PreviewImage", [], "Who drives which face", images=(video, 4))
    g.column(CLIP_X, 0, video, binding)
    samples = g.add("AnyTalkerSampler", [42, "fixed", 0, 4.5, 0.0, "unipc"], model=(model, 0), positive=(video, 0),
                    negative=(video, 1), latent=(video, 2))  # fmt: skip
    frames = g.add("VAEDecode", [], samples=(samples, 0), vae=(vae, 0))
    clip_out = g.add("CreateVideo", [24, 8], images=(frames, 0), audio=(video, 3))
    x = CLIP_X + SIZES["AnyTalkerImageToVideo"][0] + GAP
    g.column(x, 0, samples, frames, clip_out)
    x += SIZES["AnyTalkerSampler"][0] + GAP
    g.column(x, 0, g.add("SaveVideo", ["video/AnyTalker", "auto", "auto"], video=(clip_out, 0)))
    judge(g, x + SIZES["SaveVideo"][0] + GAP, (frames, 0), sockets["identities"], mode)
    return g


def judge(g: Graph, x: int, frames: tuple, identities: tuple, mode: str) -> None:
    """AnyTalker Evaluate after the video, with its plot previewed: does each voice drive its own face?"""
    evaluate = g.add("AnyTalkerEvaluate", [24, mode, ""], "Does each voice drive its own face?", images=frames,
                     identities=identities)  # fmt: skip
    g.column(x, 0, evaluate, g.add("PreviewImage", [], "Mouth against voice, per person", images=(evaluate, 0)))


def conversation() -> Graph:
    """A two-person conversation of about 20 s, rendered window by window in one node."""
    g = Graph()
    prompt = "The image captures two news anchors, a man and a woman, talking with each other in a studio."
    tracks = [f"conversation_person_{k + 1}.wav" for k in range(2)]
    model, vae, sockets = inputs_and_people(g, "2p-1.png", prompt, tracks, PEOPLE_X)
    for k in range(2):
        g.nodes[next(i for i, n in enumerate(g.nodes) if n.get("title") == f"Voice of person {k + 1}")]["title"] += (
            " (about 20 s)"
        )
    long = g.add(
        "AnyTalkerLongVideo", [0, 0, 81, "pad", 81, 5, 42, "fixed", 0, 4.5, 0.0, "unipc", True, True, "audio"],
        model=(model, 0), **sockets,
    )  # fmt: skip
    clip_out = g.add("CreateVideo", [24, 8], images=(long, 0), audio=(long, 1))
    save = g.add("SaveVideo", ["video/AnyTalker_long", "auto", "auto"], video=(clip_out, 0))
    x = g.row(CLIP_X, 0, long)
    judge(g, g.row(g.row(x, 0, clip_out), 0, save), (long, 0), sockets["identities"], "pad")
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
        workflow(picture, voices, prompt, mode).dump(out / f"{name}.json", note)
    note = (
        "A two-person conversation of about 20 s (two tracks on one timeline), made in windows of 81 frames "
        "that continue each other; the length follows the audio."
    )
    conversation().dump(out / "anytalker_conversation_20s.json", note)
    sys.stdout.write(f"wrote {len(specs) + 1} workflows to {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
