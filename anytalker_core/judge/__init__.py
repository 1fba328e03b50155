"""Judging a finished talking video, offline: which voice drives which face, and how alive the listeners are.

- :mod:`.video`: the frames of an mp4 or of frames in memory, one at a time;
- :mod:`.mesh`: MediaPipe's 468-point face mesh through OpenCV's TFLite reader (the model ships in
  ``face_models/``);
- :mod:`.tracks`: every person's face detected (``people.faces``), followed from frame to frame and meshed;
- :mod:`.sync`: mouth opening against each voice's loudness: the sync matrix, the binding, speaking intervals;
- :mod:`.interactivity`: listener eye/brow motion, the paper's interactivity metric with the reference's rules;
- :mod:`.report`, :mod:`.plot`: the verdict as numbers, a table, JSON and a picture;
- :mod:`.evaluation`: :func:`evaluate`, all of it together.
"""

from .evaluation import evaluate
from .report import Report, read_speaking
from .video import JudgeError

__all__ = ["JudgeError", "Report", "evaluate", "read_speaking"]
