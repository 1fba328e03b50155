"""Dev script: every shipped workflow, as an artist uses it, in the real frontend of a running ComfyUI host.

    pip install playwright        # the Python package only; it drives the system's Chromium (no `playwright install`)
    # start a host that has the smoke models (tests/tools/host_smoke.py prepare), then:
    python tests/tools/browser_smoke.py --url http://127.0.0.1:8188 --out browser_smoke_out
    python tests/tools/browser_smoke.py --measure       # the sizes the frontend draws our nodes at (for the layout)

For each workflow in ``workflows/`` it opens the Templates browser, picks the pack's template, and checks that it
loads with every node known, no load error, and no two nodes (title bar included) or groups overlapping. It swaps
the smoke models and test inputs into the loaders' combo widgets through the graph (the real model files are not
on a test host), then types a small size, the length (9 frames; 17 for the long video) and 2 steps as keystrokes
into the number widgets' own prompt, so the frontend's rounding applies, steps the length with the widget's
arrows and back, picks duration "length" from its menu, presses Run, and waits for the mp4 in the history (with
an audio track) and in the page. It writes a screenshot per workflow after loading and after the run, and ends
with a summary; the exit status is 1 when anything failed.

Headless Chromium at /usr/bin/chromium (Debian's package); one host at a time, the runs take about a minute each
on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
CHROMIUM = "/usr/bin/chromium"
PACK = "ComfyUI-AnyTalker"  # the templates' category: the pack's folder name in custom_nodes

# The smoke models and inputs that host_smoke.py prepare writes, by widget (and node type where names repeat).
SMOKE = {
    ("AnyTalkerModelLoader", "model_name"): "anytalker_smoke.safetensors",
    ("CLIPLoader", "clip_name"): "clip_l_smoke.safetensors",
    ("CLIPLoader", "type"): "stable_diffusion",
    ("VAELoader", "vae_name"): "wan_vae_smoke.safetensors",
    ("CLIPVisionLoader", "clip_name"): "clip_vision_smoke.safetensors",
    ("AudioEncoderLoader", "audio_encoder_name"): "wav2vec2_smoke.safetensors",
}
TRACKS = ["2p-1-left.wav", "2p-1-right.wav"]
# What an artist types: a small size, the length in frames and the steps.
TYPED = {"width": 256, "height": 160, "steps": 2}
LENGTH = {"AnyTalkerImageToVideo": 9, "AnyTalkerLongVideo": 17}
CLIP_NODES = tuple(LENGTH)

# JavaScript run in the page. The graph's nodes as boxes on the canvas, title bar included.
JS_BOXES = """() => {
  const title = LiteGraph.NODE_TITLE_HEIGHT;
  const nodes = app.graph._nodes.map(n => ({id: n.id, type: n.type, title: n.title,
    box: [n.pos[0], n.pos[1] - title, n.size[0], n.size[1] + title],
    known: !!LiteGraph.registered_node_types[n.type]}));
  const groups = (app.graph._groups || app.graph.groups || []).map(g => ({title: g.title,
    box: Array.from(g._bounding || g.bounding)}));
  return {nodes, groups, title};
}"""
JS_WIDGET = """([id, name]) => {
  const n = app.graph.getNodeById(id);
  const w = (n.widgets || []).find(w => w.name === name);
  if (!w) return null;
  app.canvas.ds.scale = 1;
  app.canvas.ds.offset = [-n.pos[0] + 200, -n.pos[1] + 200];
  app.canvas.setDirty(true, true);
  app.canvas.draw(true, true);
  const y = (w.y ?? w.last_y) + (w.computedHeight ?? LiteGraph.NODE_WIDGET_HEIGHT) / 2;
  const rect = app.canvas.canvas.getBoundingClientRect();
  const at = x => app.canvas.ds.convertOffsetToCanvas([n.pos[0] + x, n.pos[1] + y]);
  const [cx, cy] = at(n.size[0] / 2), [lx] = at(22), [rx] = at(n.size[0] - 22);
  const dpr = app.canvas.canvas.width / rect.width;
  return {value: w.value, x: rect.left + cx / dpr, y: rect.top + cy / dpr, left: rect.left + lx / dpr,
          right: rect.left + rx / dpr};
}"""
JS_VALUE = """([id, name]) => {
  const w = (app.graph.getNodeById(id).widgets || []).find(w => w.name === name); return w ? w.value : null; }"""
JS_SET = """([id, name, value]) => {
  const n = app.graph.getNodeById(id); const w = (n.widgets || []).find(w => w.name === name);
  if (!w) return `no widget ${name}`;
  const options = w.options?.values;
  const list = typeof options === 'function' ? options() : options;
  if (Array.isArray(list) && !list.includes(value)) return `${value} is not offered (${list.slice(0, 8)})`;
  w.value = value; w.callback?.(value, app.canvas, n); app.graph.setDirtyCanvas(true, true); return true;
}"""
JS_MEASURE = """(types) => {
  const out = {};
  for (const type of types) {
    const n = LiteGraph.createNode(type);
    if (!n) { out[type] = null; continue; }
    app.graph.add(n);
    out[type] = n.computeSize().map(Math.ceil);
    app.graph.remove(n);
  }
  return {sizes: out, title: LiteGraph.NODE_TITLE_HEIGHT};
}"""


def overlaps(boxes: dict) -> list[str]:
    """Pairs of node boxes that overlap, and groups that cut through a node or another group."""

    def meet(a, b):
        return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]

    def inside(a, g):
        return g[0] <= a[0] and g[1] <= a[1] and a[0] + a[2] <= g[0] + g[2] and a[1] + a[3] <= g[1] + g[3]

    found = []
    nodes, groups = boxes["nodes"], boxes["groups"]
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            if meet(a["box"], b["box"]):
                found.append(f"node '{a['title']}' ({a['id']}) overlaps '{b['title']}' ({b['id']})")
        for g in groups:
            if meet(a["box"], g["box"]) and not inside(a["box"], g["box"]):
                found.append(f"node '{a['title']}' ({a['id']}) sticks out of group '{g['title']}'")
    for i, g in enumerate(groups):
        for h in groups[i + 1 :]:
            if meet(g["box"], h["box"]):
                found.append(f"group '{g['title']}' overlaps group '{h['title']}'")
    return found


class Session:
    """One browser page on the host, with what the page logged."""

    def __init__(self, browser, url: str) -> None:
        self.url, self.errors, self.prompts = url, [], []
        self.page = browser.new_page(viewport={"width": 2560, "height": 1440})
        self.page.set_default_timeout(120_000)  # a shared 2-core machine can stall the page for a while
        self.page.on("pageerror", lambda err: self.errors.append(f"page error: {err}"))
        self.page.on("console", self._console)
        self.page.on("response", self._response)
        self.page.goto(url)
        self.page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=180_000)
        self.page.wait_for_timeout(3000)
        self.version = self.page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ || ''")

    def _console(self, message) -> None:
        text = message.text
        if message.type == "error" and "Failed to load resource" not in text and "before initialization" not in text:
            self.errors.append(f"console: {text[:300]}")

    def _response(self, response) -> None:
        if response.request.method == "POST" and urllib.parse.urlparse(response.url).path.endswith("/prompt"):
            try:
                self.prompts.append(response.json())
            except Exception as err:  # noqa: BLE001 - reported with the run
                self.prompts.append({"error": str(err)})

    def open_template(self, name: str) -> None:
        page = self.page
        page.keyboard.press("Escape")
        button = page.get_by_role("button", name="Templates")
        if button.count():
            button.first.click()
        else:  # frontends without the sidebar button: the Workflow menu
            page.get_by_text("Workflow", exact=True).first.click()
            page.get_by_text("Browse Templates").first.click()
        page.get_by_text(PACK, exact=True).first.click()
        page.wait_for_timeout(1000)
        page.get_by_text(name, exact=True).first.click()
        page.wait_for_timeout(3000)

    def widget(self, node_id: int, name: str) -> dict | None:
        return self.page.evaluate(JS_WIDGET, [node_id, name])

    def value(self, node_id: int, name: str):
        return self.page.evaluate(JS_VALUE, [node_id, name])

    def type_number(self, node_id: int, name: str, value: int) -> object:
        """Click the middle of a number widget, type into the prompt it opens, press Enter; the value it keeps."""
        spot = self.widget(node_id, name)
        if spot is None:
            raise RuntimeError(f"node {node_id} has no widget {name}")
        self.page.mouse.click(spot["x"], spot["y"])
        box = self.page.locator(".graphdialog input.value, .graphdialog textarea.value").first
        box.wait_for(timeout=5000)
        box.press("Control+A")
        box.type(str(value), delay=40)
        box.press("Enter")
        self.page.wait_for_timeout(300)
        return self.value(node_id, name)

    def arrow(self, node_id: int, name: str, side: str) -> object:
        spot = self.widget(node_id, name)
        self.page.mouse.click(spot[side], spot["y"])
        self.page.wait_for_timeout(300)
        return self.value(node_id, name)

    def choose(self, node_id: int, name: str, option: str) -> object:
        """Click a combo widget and the option in the menu it opens."""
        spot = self.widget(node_id, name)
        self.page.mouse.click(spot["x"], spot["y"])
        entry = self.page.locator(".litecontextmenu .litemenu-entry", has_text=option)
        entry.first.wait_for(timeout=5000)
        entry.filter(has_text=option).first.click()
        self.page.wait_for_timeout(300)
        return self.value(node_id, name)

    def fit(self) -> None:
        self.page.keyboard.press("Escape")
        self.page.mouse.click(1280, 1420)  # the canvas, so that the shortcut reaches it
        self.page.evaluate("() => { const c = app.canvas; c.deselectAll?.(); }")
        self.page.keyboard.press(".")
        self.page.wait_for_timeout(800)


def check_workflow(session: Session, path: Path, out: Path) -> list[str]:
    """Open one shipped workflow from the Templates browser, run it with typed values; the problems found."""
    page, problems = session.page, []
    expected = json.loads(path.read_text())
    session.errors.clear()
    session.open_template(path.stem)
    graph = page.evaluate(JS_BOXES)
    types = sorted(n["type"] for n in graph["nodes"])
    if types != sorted(n["type"] for n in expected["nodes"]):
        return [f"the graph on the canvas is not {path.name} (got {len(types)} nodes: {types[:6]}...)"]
    problems += [f"missing node type {n['type']}" for n in graph["nodes"] if not n["known"]]
    if page.get_by_text("missing", exact=False).filter(has_text="node").count():
        problems.append("the frontend reports missing nodes")
    layout = overlaps(graph)  # reported with the run's result: the run goes on
    problems += [f"load: {e}" for e in session.errors]
    session.fit()
    page.screenshot(path=str(out / f"{path.stem}_loaded.png"))

    nodes = {n["id"]: n["type"] for n in graph["nodes"]}
    tracks = iter(TRACKS * 3)
    for node_id, kind in nodes.items():
        for (owner, name), value in SMOKE.items():
            if owner == kind:
                result = page.evaluate(JS_SET, [node_id, name, value])
                if result is not True:
                    problems.append(f"{kind}.{name}: {result}")
        if kind == "LoadAudio":
            page.evaluate(JS_SET, [node_id, "audio", next(tracks)])
    clip = next(i for i, k in nodes.items() if k in CLIP_NODES)
    length = LENGTH[nodes[clip]]
    if session.value(clip, "duration") != "audio":
        problems.append(f"duration is {session.value(clip, 'duration')!r} on load, not 'audio' (as long as the audio)")
    typed = {(clip, "width"): TYPED["width"], (clip, "height"): TYPED["height"], (clip, "length"): length}
    typed.update(
        {(i, "steps"): TYPED["steps"] for i, k in nodes.items() if k in ("AnyTalkerSampler", "AnyTalkerLongVideo")}
    )
    for (node_id, name), value in typed.items():
        kept = session.type_number(node_id, name, value)
        if kept != value:
            problems.append(f"typed {value} into {nodes[node_id]}.{name}; the widget kept {kept}")
    up, down = session.arrow(clip, "length", "right"), session.arrow(clip, "length", "left")
    if (up, down) != (length + 4, length):
        problems.append(f"length's arrows from {length}: up {up}, back down {down} (expected {length + 4}, {length})")
    chosen = session.choose(clip, "duration", "length")
    if chosen != "length":
        problems.append(f"picked duration 'length', the widget shows {chosen!r}")
    if problems:
        page.screenshot(path=str(out / f"{path.stem}_failed.png"))
        return layout + problems

    problems = layout
    session.prompts.clear()
    page.get_by_role("button", name="Run").first.click() if page.get_by_role("button", name="Run").count() else \
        page.get_by_role("button", name="Queue").first.click()  # fmt: skip
    for _ in range(50):
        if session.prompts:
            break
        page.wait_for_timeout(200)
    if not session.prompts or "prompt_id" not in session.prompts[-1]:
        page.screenshot(path=str(out / f"{path.stem}_failed.png"))
        return [f"Run did not queue the prompt: {json.dumps(session.prompts[-1:])[:1500]}"]
    if session.prompts[-1].get("node_errors"):
        return [f"refused nodes: {json.dumps(session.prompts[-1]['node_errors'])[:1500]}"]
    prompt_id, started = session.prompts[-1]["prompt_id"], time.time()
    entry = wait_history(session.url, prompt_id)
    status = (entry or {}).get("status", {})
    if status.get("status_str") != "success":
        errors = [m[1] for m in status.get("messages", []) if m[0] == "execution_error"]
        page.screenshot(path=str(out / f"{path.stem}_failed.png"))
        return [f"run {prompt_id}: {status.get('status_str', 'no answer')} {json.dumps(errors)[:1500]}"]
    videos = [v for output in entry["outputs"].values() for key in ("images", "videos", "gifs")
              for v in output.get(key, []) if str(v.get("filename", "")).endswith(".mp4")]  # fmt: skip
    if not videos:
        return [f"no mp4 in the history's outputs: {json.dumps(entry['outputs'])[:800]}"]
    video = videos[0]
    query = urllib.parse.urlencode({k: video.get(k, "") for k in ("filename", "subfolder", "type")})
    with urllib.request.urlopen(f"{session.url}/view?{query}") as response:
        data = response.read()
    if b"soun" not in data:  # the handler of an audio track ('hdlr' ... 'soun')
        problems.append(f"{video['filename']} has no audio track")
    shown = False
    for _ in range(30):
        shown = page.evaluate("(name) => [...document.querySelectorAll('video, video source')].some(v => "
                              "(v.src || v.currentSrc || '').includes(encodeURIComponent(name)) || "
                              "(v.src || '').includes(name))", video["filename"])  # fmt: skip
        if shown:
            break
        page.wait_for_timeout(500)
    if not shown:
        problems.append(f"{video['filename']} is in the history but not shown in the page")
    session.fit()
    page.screenshot(path=str(out / f"{path.stem}_done.png"))
    say(
        f"  {path.stem}: {video['filename']} ({len(data) // 1024} KiB, {time.time() - started:.0f} s after Run) "
        f"after typing {list(typed.values())}"
    )
    return problems


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def wait_history(url: str, prompt_id: str, seconds: int = 1200) -> dict | None:
    end = time.time() + seconds
    while time.time() < end:
        with urllib.request.urlopen(f"{url}/history/{prompt_id}") as response:
            history = json.load(response)
        if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
            return history[prompt_id]
        time.sleep(2)
    return None


def measure(session: Session) -> dict:
    kinds = sorted({n["type"] for p in WORKFLOWS.glob("*.json") for n in json.loads(p.read_text())["nodes"]})
    return session.page.evaluate(JS_MEASURE, kinds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "anytalker_browser_smoke",
                        help="screenshots go here")  # fmt: skip
    parser.add_argument("--workflow", action="append", help="only these (names without .json)")
    parser.add_argument("--measure", action="store_true", help="print the sizes the frontend gives our nodes")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    paths = sorted(WORKFLOWS.glob("*.json"))
    if args.workflow:
        paths = [p for p in paths if p.stem in args.workflow]
    results = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            session = Session(browser, args.url)
            say(f"{args.url}: frontend {session.version}")
            if args.measure:
                say(json.dumps(measure(session)))
                return 0
            for path in paths:
                if session is None:  # a fresh page per workflow: finished tabs and their videos weigh on the next
                    session = Session(browser, args.url)
                try:
                    results[path.stem] = check_workflow(session, path, args.out)
                except Exception as err:  # noqa: BLE001 - one workflow's failure must not hide the others
                    results[path.stem] = [f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"]
                    try:
                        session.page.screenshot(path=str(args.out / f"{path.stem}_failed.png"))
                    except Exception:  # noqa: BLE001 - the page may be what failed
                        pass
                say(f"{'ok  ' if not results[path.stem] else 'FAIL'} {path.stem}")
                session.page.close()
                session = None
        finally:
            browser.close()
    failed = {name: problems for name, problems in results.items() if problems}
    say(f"\n{len(results) - len(failed)} of {len(results)} workflows passed at {args.url}; screenshots: {args.out}")
    for name, problems in failed.items():
        say(f"FAIL {name}:")
        for problem in problems:
            say(f"  - {problem}")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
