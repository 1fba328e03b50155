"""The routing preview: the first frame with each identity's mask tinted and numbered, and the face crops.

Artists check who says what here before a long render. Drawn with plain tensors (a built-in 5x7 digit font).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .masks import Box
from .routing import Routing, _as_image

PALETTE = (  # one colour per identity (RGB 0..1), repeated past six
    (0.95, 0.30, 0.25),
    (0.20, 0.60, 0.95),
    (0.30, 0.85, 0.35),
    (0.98, 0.75, 0.15),
    (0.75, 0.40, 0.95),
    (0.15, 0.85, 0.85),
)


_DIGITS = {  # 5x7 bitmap font, rows top to bottom
    "0": ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    "1": ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    "2": ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    "3": ("11110", "00001", "00001", "01110", "00001", "00001", "11110"),
    "4": ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    "5": ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    "6": ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    "7": ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    "8": ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    "9": ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
}


_SMALL = {  # lowercase letters and a few signs for the detector's name and the scores, rows top to bottom
    "a": "00000 00000 01110 00001 01111 10001 01111", "b": "10000 10000 10110 11001 10001 10001 11110",
    "c": "00000 00000 01110 10000 10000 10001 01110", "d": "00001 00001 01101 10011 10001 10001 01111",
    "e": "00000 00000 01110 10001 11111 10000 01110", "f": "00110 01001 01000 11100 01000 01000 01000",
    "g": "00000 01111 10001 10001 01111 00001 01110", "h": "10000 10000 10110 11001 10001 10001 10001",
    "i": "00100 00000 01100 00100 00100 00100 01110", "j": "00010 00000 00110 00010 00010 10010 01100",
    "k": "10000 10000 10010 10100 11000 10100 10010", "l": "01100 00100 00100 00100 00100 00100 01110",
    "m": "00000 00000 11010 10101 10101 10001 10001", "n": "00000 00000 10110 11001 10001 10001 10001",
    "o": "00000 00000 01110 10001 10001 10001 01110", "p": "00000 00000 11110 10001 11110 10000 10000",
    "q": "00000 00000 01101 10011 01111 00001 00001", "r": "00000 00000 10110 11001 10000 10000 10000",
    "s": "00000 00000 01110 10000 01110 00001 11110", "t": "01000 01000 11100 01000 01000 01001 00110",
    "u": "00000 00000 10001 10001 10001 10011 01101", "v": "00000 00000 10001 10001 10001 01010 00100",
    "w": "00000 00000 10001 10001 10101 10101 01010", "x": "00000 00000 10001 01010 00100 01010 10001",
    "y": "00000 00000 10001 10001 01111 00001 01110", "z": "00000 00000 11111 00010 00100 01000 11111",
    ".": "00000 00000 00000 00000 00000 01100 01100", " ": "00000 00000 00000 00000 00000 00000 00000",
}  # fmt: skip
_FONT = {**_DIGITS, **{ch: tuple(rows.split()) for ch, rows in _SMALL.items()}}


def _glyphs(text: str) -> torch.Tensor:
    """Bitmap [7, 6 * len - 1] of the text (digits, lowercase letters, '.', ' '; anything else is a blank)."""
    cols = []
    for k, ch in enumerate(text.lower()):
        if k:
            cols.append(torch.zeros(7, 1))
        cols.append(torch.tensor([[float(c) for c in row] for row in _FONT.get(ch, _FONT[" "])]))
    return torch.cat(cols, dim=1)


def _label(canvas: torch.Tensor, text: str, x: int, y: int, colour: torch.Tensor, scale: int) -> None:
    """A filled badge of the colour with the number in white (dark outline), top-left at (x, y), in place."""
    glyph = _glyphs(text).repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    pad = 2 * scale
    bh, bw = glyph.shape[0] + 2 * pad, glyph.shape[1] + 2 * pad
    height, width = canvas.shape[:2]
    x, y = max(0, min(x, width - bw)), max(0, min(y, height - bh))
    badge = colour.view(1, 1, 3).expand(bh, bw, 3).clone() * 0.85
    badge[: scale // 2 + 1] = badge[-(scale // 2 + 1) :] = 0.05
    badge[:, : scale // 2 + 1] = badge[:, -(scale // 2 + 1) :] = 0.05
    on = glyph > 0
    region = badge[pad : pad + glyph.shape[0], pad : pad + glyph.shape[1]]
    region[on] = 1.0
    canvas[y : y + bh, x : x + bw] = badge[: height - y, : width - x]


def _outline(canvas: torch.Tensor, box: Box, colour: torch.Tensor, thick: int) -> None:
    height, width = canvas.shape[:2]
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(width, int(box[2])), min(height, int(box[3]))
    canvas[y0 : y0 + thick, x0:x1] = colour
    canvas[max(y0, y1 - thick) : y1, x0:x1] = colour
    canvas[y0:y1, x0 : x0 + thick] = colour
    canvas[y0:y1, max(x0, x1 - thick) : x1] = colour


def preview(
    image: Any,
    routing: Routing,
    strip_height: int | None = None,
    *,
    scores: Sequence[float] | None = None,
    caption: str | None = None,
) -> torch.Tensor:
    """The binding at a glance: [H', W, 3] float 0..1 (a ComfyUI IMAGE without the batch axis).

    Top: the first frame with each identity's routing mask tinted in its colour, the square face box outlined
    and the voice number on a badge; with ``scores`` (one per identity) each face's detection score on a badge
    at the bottom of its box, with ``caption`` (e.g. the detector's name) a badge in the bottom-left corner.
    Bottom: the face crops (what the image encoder sees), side by side in voice order, framed in the same
    colours and numbered.
    """
    img = _as_image(image)
    height, width = img.shape[:2]
    scale = max(2, min(height, width) // 90)
    canvas = img.clone() * 0.75 + 0.25 * img.mean(-1, keepdim=True)  # slightly desaturated, tints stand out
    colours = [torch.tensor(PALETTE[i % len(PALETTE)]) for i in range(len(routing))]
    for mask, colour in zip(routing.masks, colours):
        alpha = (mask.clamp(0, 1) * 0.45)[..., None]
        canvas = canvas * (1 - alpha) + colour * alpha
    thick = max(2, scale // 2 + 1)
    small = max(1, scale * 2 // 3)
    for i, (box, colour) in enumerate(zip(routing.boxes, colours)):
        _outline(canvas, box, colour, thick)
        _label(canvas, str(i + 1), int(box[0]) + thick, int(box[1]) + thick, colour, scale)
        if scores is not None and i < len(scores):
            bottom = int(box[3]) - thick - 11 * small  # the badge is 7 + 4 glyph rows of this scale tall
            _label(canvas, f"{scores[i]:.2f}", int(box[0]) + thick, bottom, colour, small)
    if caption:
        _label(canvas, caption, 0, height, torch.tensor((0.35, 0.35, 0.35)), small)
    if not len(routing):
        return canvas
    n = len(routing)
    gap = max(4, width // 100)
    side = strip_height or max(48, min(height // 3, (width - gap * (n + 1)) // n))
    side = min(side, (width - gap * (n + 1)) // n)
    strip = torch.full((side + 2 * gap, width, 3), 0.12)
    total = n * side + (n - 1) * gap
    x = max(gap, (width - total) // 2)
    for i, (crop, colour) in enumerate(zip(routing.crops, colours)):
        tile = (
            F.interpolate(
                crop.permute(2, 0, 1)[None], size=(side, side), mode="bilinear", align_corners=False, antialias=True
            )[0]
            .permute(1, 2, 0)
            .clamp(0, 1)
        )
        strip[gap : gap + side, x : x + side] = tile
        _outline(strip[gap : gap + side, x : x + side], (0, 0, side, side), colour, thick)
        _label(strip[gap : gap + side, x : x + side], str(i + 1), thick, thick, colour, max(2, scale * 3 // 4))
        x += side + gap
    return torch.cat([canvas, strip], dim=0).clamp(0, 1)
