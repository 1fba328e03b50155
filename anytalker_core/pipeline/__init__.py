"""From a picture, voices and a prompt to a video file: conditioning, the window engine and the pipeline.

- :mod:`.condition`: the video size, the first frame, ``y``;
- :mod:`.scene`: :class:`~.scene.Scene`, what every window of one clip shares (the pipeline and the nodes);
- :mod:`.windows`: the window engine (plan, per-window inputs, face following, colour anchoring);
- :mod:`.colors`: colour anchoring; :mod:`.memory`: devices and memory between steps;
- :mod:`.models`: the standalone models and :func:`~.models.load_models`;
- :mod:`.standalone`: :func:`~.standalone.generate` (one pass) and :func:`~.standalone.render` (windows, streamed);
- :mod:`.writer`: the mp4 / PNG writer.
"""

from ..timeline import FPS
from .condition import MAX_AREA
from .models import Models, load_models
from .scene import Scene, build_scene
from .standalone import NEGATIVE_PROMPT, Job, LongVideo, Video, generate, prepare, render, sample_window
from .windows import Window, WindowInputs, WindowRun, plan_windows, window_inputs

__all__ = [
    "FPS", "MAX_AREA", "NEGATIVE_PROMPT", "Job", "LongVideo", "Models", "Scene", "Video", "Window", "WindowInputs",
    "WindowRun", "build_scene", "generate", "load_models", "plan_windows", "prepare", "render", "sample_window",
    "window_inputs",
]  # fmt: skip
