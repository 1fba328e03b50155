"""Who is who: from face boxes or user masks to each identity's routing, face crop and the ``y`` mask channels.

Two ways in, one result (:class:`Routing`):

- :func:`route_from_boxes`: face boxes (from :func:`anytalker_core.faces.detect_faces` or typed by the user), in
  pixels or as fractions of the image (every coordinate <= 1.0 means fractions).
- :func:`route_from_masks`: masks painted or produced by other tools (ComfyUI ``MASK``), at any resolution. The
  face box is the mask's bounding box made square. A single mask holding several separate regions is split into
  one mask per person. A mask batch as long as the clip moves over time.

Rules (the reference's, see "Face routing" in the model spec, plus ours for what it does not cover):

- Person 1 is the leftmost: faces are numbered left to right by their left edge, whatever the source.
- With ``speakers=n`` only the n largest faces are routed, still left to right; people with no voice get none.
- ``order="2,1"`` then re-binds voices to faces: voice i goes to face ``order[i]``.
- Each square box is filled, widened 1.2x in width and 1.1x in height, and resized (bilinear) to the token grid
  ``(H/16, W/16)`` of the video (``masks.py``, exact to the reference's fixtures).
- The face crop for the image encoder is the square box cut from the image at integer bounds, unwidened: the
  reference's ``expand_bbox_and_crop_image(img, box, 1, 1)``.
- Moving masks: latent frame 0 takes video frame 0; latent frame j >= 1 covers video frames 4(j-1)+1 .. 4j (the
  same frames the ``y`` packing and the audio give it) and takes the union (max) of their token masks, so a face
  moving within those frames stays covered. The ``y`` channels use each video frame's own union of the faces.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import timeline
from ..images import as_rgb
from .masks import WIDEN, Box, box_mask, square_box, token_mask, widen_mask, y_mask_channels
from .regions import split_regions

TOKEN_STRIDE = 16  # video pixels per token cell (VAE 8 x patch 2)
OVERLAP_WARN = 0.30  # warn when two face boxes share more than this share of the smaller one
WEAK_TOKEN = 0.5  # warn when a face's strongest token-mask value is below this


class RoutingError(ValueError):
    """The faces or masks cannot be routed; the message names the input and says what to change."""


@dataclass(frozen=True)
class Routing:
    """Each identity's routing, in voice order (identity i gets voice i).

    ``boxes``: square face boxes (x0, y0, x1, y1) in image pixels (frame 0 for moving masks).
    ``masks``: widened routing masks, float32 [H, W] at image size (frame 0 for moving masks).
    ``token_masks``: float32 [T, H/16, W/16] on the video's token grid (what the model's attention reads).
    ``crops``: face crops [h, w, 3] float 0..1 cut from the image (what the image encoder reads).
    ``y_mask``: the 4 mask channels of the condition ``y``, [4, T, H/8, W/8], for everybody together.
    ``faces``: for each identity, its face number left to right before any order override (1-based).
    ``video_hw``: the video's (H, W) in pixels; ``video_frames``: 4(T-1)+1; ``moving``: masks vary over time.
    ``warnings``: human-readable lines (heavy overlaps, ignored regions, dropped faces, weak token masks).
    """

    boxes: tuple[Box, ...]
    masks: tuple[torch.Tensor, ...]
    token_masks: tuple[torch.Tensor, ...]
    crops: tuple[torch.Tensor, ...]
    y_mask: torch.Tensor
    faces: tuple[int, ...]
    video_hw: tuple[int, int]
    video_frames: int
    moving: bool = False
    warnings: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.boxes)

    def describe(self) -> str:
        """One line per identity, for a node's report."""
        lines = []
        for i, (face, box) in enumerate(zip(self.faces, self.boxes)):
            x0, y0, x1, y1 = (int(v) for v in box)
            lines.append(f"voice {i + 1} -> face {face} (box {x0},{y0}-{x1},{y1}, {x1 - x0} px)")
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])


# ---------------------------------------------------------------------------------------------------------------
# inputs


def _as_image(image: Any) -> torch.Tensor:
    """A picture (see ``images.as_rgb``) -> float32 torch [H, W, 3] in 0..1."""
    return as_rgb(image, error=RoutingError).clamp(0, 1)


def _video_grid(image_hw: tuple[int, int], size: Sequence[int] | None) -> tuple[tuple[int, int], tuple[int, int]]:
    """(video_hw, token_hw): the video size defaults to the image's, rounded down to multiples of 16."""
    h, w = (int(v) for v in (size if size is not None else image_hw))
    if h < TOKEN_STRIDE or w < TOKEN_STRIDE:
        raise RoutingError(f"size: the video must be at least 16x16 pixels, got {h}x{w}")
    th, tw = h // TOKEN_STRIDE, w // TOKEN_STRIDE
    return (th * TOKEN_STRIDE, tw * TOKEN_STRIDE), (th, tw)


def _latent_frames(video_frames: int) -> int:
    return timeline.latent_frames(timeline.check_frames(video_frames, "video_frames", error=RoutingError))


def parse_order(order: str | Sequence[int] | None, n: int) -> list[int] | None:
    """``"2,1"`` (or ``[2, 1]``) -> 0-based face indices, checked to be a permutation of 1..n."""
    if order is None or (isinstance(order, str) and not order.strip()):
        return None
    if isinstance(order, str):
        parts = [p for p in order.replace(";", ",").replace(" ", ",").split(",") if p]
        try:
            numbers_ = [int(p) for p in parts]
        except ValueError:
            raise RoutingError(f"order {order!r}: expected face numbers separated by commas, like '2,1'") from None
    else:
        numbers_ = [int(p) for p in order]
    expected = list(range(1, n + 1))
    if sorted(numbers_) != expected:
        wrong = [v for v in numbers_ if v not in expected]
        twice = sorted({v for v in numbers_ if numbers_.count(v) > 1})
        why = (
            f"{wrong[0]} is not a face number (1..{n})"
            if wrong
            else f"{twice[0]} appears twice"
            if twice
            else f"it names {len(numbers_)} faces"
        )
        raise RoutingError(f"order {order!r} must list each of the {n} routed faces once (1..{n}): {why}")
    return [v - 1 for v in numbers_]


# ---------------------------------------------------------------------------------------------------------------
# geometry


def _bbox(binary: np.ndarray) -> Box:
    cols, rows = np.flatnonzero(binary.any(0)), np.flatnonzero(binary.any(1))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def _crop(image: torch.Tensor, box: Box) -> torch.Tensor:
    """The reference's crop at scale 1: the box at integer bounds, at least one pixel."""
    height, width = image.shape[:2]
    x0, y0 = min(int(box[0]), width - 1), min(int(box[1]), height - 1)
    x1, y1 = max(int(box[2]), x0 + 1), max(int(box[3]), y0 + 1)
    return image[y0:y1, x0:x1].clone()


def _overlaps(face_masks: list[torch.Tensor], faces: list[int]) -> list[str]:
    """Warnings for pairs of face boxes sharing more than OVERLAP_WARN of the smaller one (worst frame)."""
    out = []
    for a in range(len(face_masks)):
        for b in range(a + 1, len(face_masks)):
            ma, mb = face_masks[a], face_masks[b]
            shared = (ma * mb).flatten(-2).sum(-1)
            smaller = torch.minimum(ma.flatten(-2).sum(-1), mb.flatten(-2).sum(-1)).clamp(min=1)
            share = float((shared / smaller).max())
            if share > OVERLAP_WARN:
                out.append(
                    f"faces {faces[a]} and {faces[b]} overlap: {share:.0%} of the smaller face box is shared "
                    f"(warning above {OVERLAP_WARN:.0%}); their voices may mix there. Use tighter masks."
                )
    return out


# ---------------------------------------------------------------------------------------------------------------
# the two entry points


def _build(
    image: torch.Tensor,
    face_boxes: list[list[Box]],  # per face: one box (static) or one per video frame
    video_frames: int,
    size: Sequence[int] | None,
    order: str | Sequence[int] | None,
    warnings: list[str],
) -> Routing:
    height, width = image.shape[:2]
    latent_frames = _latent_frames(video_frames)
    video_hw, token_hw = _video_grid((height, width), size)
    latent_hw = (token_hw[0] * 2, token_hw[1] * 2)
    faces = list(range(1, len(face_boxes) + 1))
    face_masks, widened, tokens = [], [], []
    for face, boxes in zip(faces, face_boxes):
        masks = torch.stack([box_mask(b, height, width) for b in boxes])
        wide = torch.stack([widen_mask(m, *WIDEN) for m in masks])
        if len(boxes) == 1:
            masks, wide = masks[0], wide[0]
        tok = token_mask(wide, token_hw, latent_frames)
        x0, y0, x1, y1 = boxes[0]
        if float(tok.flatten(1).amax(1).min()) == 0.0:
            raise RoutingError(
                f"face {face} is too small to route: its box is {x1 - x0:.0f}x{y1 - y0:.0f} px in a "
                f"{width}x{height} image, and one token cell is {width / token_hw[1]:.0f}x{height / token_hw[0]:.0f} "
                f"image px at the video's {video_hw[1]}x{video_hw[0]}: its token mask is empty. Use a higher "
                "resolution or a larger mask."
            )
        if float(tok.max()) < WEAK_TOKEN:
            warnings.append(
                f"face {face} barely reaches the token grid: its strongest token-mask value is {float(tok.max()):.2f} "
                f"(box {x1 - x0:.0f} px, token cell {width / token_hw[1]:.0f} px), so its voice will drive it weakly; "
                "a higher resolution or a larger mask helps"
            )
        face_masks.append(masks)
        widened.append(wide)
        tokens.append(tok)
    warnings.extend(_overlaps(face_masks, faces))
    y = y_mask_channels(widened, latent_hw, video_frames)
    picks = parse_order(order, len(faces))
    if picks is None:
        picks = list(range(len(faces)))
    return Routing(
        boxes=tuple(face_boxes[i][0] for i in picks),
        masks=tuple(widened[i] if widened[i].dim() == 2 else widened[i][0] for i in picks),
        token_masks=tuple(tokens[i] for i in picks),
        crops=tuple(_crop(image, face_boxes[i][0]) for i in picks),
        y_mask=y,
        faces=tuple(faces[i] for i in picks),
        video_hw=video_hw,
        video_frames=int(video_frames),
        moving=any(len(b) > 1 for b in face_boxes),
        warnings=tuple(warnings),
    )


def _keep_speakers(
    items: list, areas: list[float], speakers: int | None, what: str, hint: str, warnings: list[str]
) -> list:
    """The n largest items, still in their (left to right) order; a clear error when there are too few."""
    if speakers is None:
        if not items:
            raise RoutingError(f"no {what} to route: {hint}")
        return items
    if not isinstance(speakers, numbers.Integral) or speakers < 1:
        raise RoutingError(f"speakers is {speakers!r}; expected a positive whole number")
    if len(items) < speakers:
        raise RoutingError(f"found {len(items)} {what} but there are {speakers} speakers: {hint}")
    if len(items) > speakers:
        keep = sorted(sorted(range(len(items)), key=lambda i: -areas[i])[:speakers])
        dropped = [i + 1 for i in range(len(items)) if i not in keep]
        warnings.append(
            f"{len(items)} {what} for {speakers} speakers: routed the {speakers} largest; "
            f"not routed (no voice): {what} {', '.join(map(str, dropped))} (numbered left to right)"
        )
        return [items[i] for i in keep]
    return items


def route_from_boxes(
    image: Any,
    boxes: Sequence[Sequence[float]],
    video_frames: int,
    *,
    speakers: int | None = None,
    order: str | Sequence[int] | None = None,
    size: Sequence[int] | None = None,
) -> Routing:
    """Route faces given as boxes (x0, y0, x1, y1): pixels, or fractions of the image when every number <= 1.0.

    ``image``: [H, W, 3] (or ComfyUI [1, H, W, 3]) uint8 or float 0..1. ``video_frames``: 4n+1.
    ``speakers``: route only the n largest faces (error if fewer). ``order``: e.g. ``"2,1"``.
    ``size``: the video's (H, W); default the image's, rounded down to multiples of 16.
    """
    img = _as_image(image)
    height, width = img.shape[:2]
    _latent_frames(video_frames)
    warnings: list[str] = []
    parsed = []
    for i, box in enumerate(boxes):
        values = [float(v) for v in (box.tolist() if hasattr(box, "tolist") else box)]
        if len(values) != 4:
            raise RoutingError(f"box {i + 1}: expected 4 numbers (x0, y0, x1, y1), got {values}")
        parsed.append(values)
    fractions = bool(parsed) and all(abs(v) <= 1.0 for b in parsed for v in b)
    squares, areas = [], []
    for i, (x0, y0, x1, y1) in enumerate(parsed):
        if fractions:
            x0, x1, y0, y1 = x0 * width, x1 * width, y0 * height, y1 * height
        x0, x1 = max(0.0, x0), min(float(width), x1)
        y0, y1 = max(0.0, y0), min(float(height), y1)
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise RoutingError(
                f"box {i + 1} {tuple(parsed[i])} is empty inside the {width}x{height} image "
                "(expected x0 < x1 and y0 < y1, in pixels or all as fractions 0..1)"
            )
        squares.append((x0, square_box((x0, y0, x1, y1), width, height)))
        areas.append((x1 - x0) * (y1 - y0))
    order_lr = sorted(range(len(squares)), key=lambda i: squares[i][0])  # left edge of the box as given
    squares = [squares[i][1] for i in order_lr]
    areas = [areas[i] for i in order_lr]
    squares = _keep_speakers(
        squares,
        areas,
        speakers,
        "face(s)",
        "lower the detection threshold, or paint one mask per speaker",
        warnings,
    )
    return _build(img, [[b] for b in squares], video_frames, size, order, warnings)


def _as_mask_list(masks: Any, video_frames: int) -> tuple[list[torch.Tensor], bool]:
    """-> (list of [F, h, w] float masks, split). F is 1 (static) or video_frames (moving).

    A list/tuple: one entry per person. A single tensor: [H, W] or [1, H, W] is one mask to split into regions;
    [video_frames, H, W] (video_frames > 1) is one moving mask to split; any other [N, H, W] is N people.
    """

    def one(m: Any, name: str) -> torch.Tensor:
        t = torch.as_tensor(np.array(m) if not isinstance(m, torch.Tensor) else m).float()
        if t.dim() == 2:
            t = t[None]
        if t.dim() == 4 and t.shape[-1] == 1:
            t = t[..., 0]
        if t.dim() != 3 or t.shape[0] not in (1, video_frames) or min(t.shape[-2:]) < 1:
            raise RoutingError(
                f"{name}: expected [H, W], [1, H, W] or [{video_frames} (video_frames), H, W], got {tuple(t.shape)}"
            )
        return t

    if isinstance(masks, (list, tuple)):
        if not masks:
            raise RoutingError("masks: the list is empty; give one mask per speaker, or one mask with every face")
        return [one(m, f"mask {i + 1}") for i, m in enumerate(masks)], False
    t = torch.as_tensor(np.array(masks) if not isinstance(masks, torch.Tensor) else masks).float()
    if t.dim() == 4 and t.shape[-1] == 1:
        t = t[..., 0]
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or min(t.shape) < 1:
        raise RoutingError(f"masks: expected [H, W], [1, H, W] or [N, H, W], got {tuple(t.shape)}")
    if t.shape[0] == 1 or (t.shape[0] == video_frames and video_frames > 1):
        return [t], True
    return [m[None] for m in t], False


def route_from_masks(
    image: Any,
    masks: Any,
    video_frames: int,
    *,
    speakers: int | None = None,
    order: str | Sequence[int] | None = None,
    size: Sequence[int] | None = None,
    keep_order: bool = False,
) -> Routing:
    """Route faces given as masks of any resolution (resized to the image, bilinear, kept above 0.5).

    ``masks``: a ComfyUI MASK ``[H, W]`` / ``[1, H, W]`` (one mask; its separate regions are the people, left to
    right), ``[video_frames, H, W]`` (the same, moving), ``[N, H, W]`` (N people), or a list of masks (one per
    person, each static or ``[video_frames, H, W]``). Each person's face box is the bounding box of their mask
    made square (per frame for moving masks). With ``keep_order`` a list of masks is bound in list order (voice i
    drives mask i, e.g. when each mask was paired with its voice) instead of left to right; ``Routing.faces``
    still numbers the faces left to right. Other arguments as :func:`route_from_boxes`.
    """
    img = _as_image(image)
    height, width = img.shape[:2]
    _latent_frames(video_frames)
    mask_list, split = _as_mask_list(masks, int(video_frames))
    warnings: list[str] = []

    def binary(m: torch.Tensor) -> np.ndarray:  # [F, h, w] -> bool [F, H, W] at the image size
        if m.shape[-2:] != (height, width):
            m = F.interpolate(m[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
        return (m > 0.5).numpy()

    people: list[list[np.ndarray]] = []  # per person, per frame: bool [H, W]
    if split:
        frames = binary(mask_list[0])
        per_frame = [
            split_regions(f, "mask" if len(frames) == 1 else f"mask frame {k}", warnings) for k, f in enumerate(frames)
        ]
        if not per_frame[0]:
            raise RoutingError("masks: the mask is empty (no pixel above 0.5); paint each speaker's face")
        for k, regions in enumerate(per_frame):
            if len(regions) != len(per_frame[0]):
                raise RoutingError(
                    f"masks: frame {k} has {len(regions)} separate region(s) but frame 0 has {len(per_frame[0])}; "
                    "a moving mask must keep each person's region separate in every frame (or give one mask "
                    "per person as a list)"
                )
        people = [[regions[p] for regions in per_frame] for p in range(len(per_frame[0]))]
    else:
        for i, m in enumerate(mask_list):
            frames = binary(m)
            for k, f in enumerate(frames):
                if not f.any():
                    where = f" in frame {k}" if len(frames) > 1 else ""
                    raise RoutingError(
                        f"mask {i + 1} (of {len(mask_list)}) is empty{where}: no pixel above 0.5 after resizing "
                        f"{tuple(m.shape[-2:])} to the image's {height}x{width}"
                    )
            people.append(list(frames))
    boxes = [[square_box(_bbox(f), width, height) for f in frames] for frames in people]
    lefts = [_bbox(frames[0])[0] for frames in people]
    areas = [float(frames[0].sum()) for frames in people]
    lr = sorted(range(len(boxes)), key=lambda i: lefts[i])
    if keep_order and not split:
        if order is not None:
            raise RoutingError("order cannot be combined with keep_order: the list order already binds the voices")
        order = [lr.index(i) + 1 for i in range(len(boxes))]
    boxes, areas = [boxes[i] for i in lr], [areas[i] for i in lr]
    boxes = _keep_speakers(
        boxes,
        areas,
        speakers,
        "mask region(s)" if split else "mask(s)",
        "paint one region per speaker (separate regions of one mask, or one mask each)",
        warnings,
    )
    return _build(img, boxes, video_frames, size, order, warnings)


def route_faces(
    image: Any,
    video_frames: int,
    *,
    speakers: int,
    order: str | Sequence[int] | None = None,
    size: Sequence[int] | None = None,
    backend: str = "auto",
    threshold: float | None = None,
    root: str | None = None,
) -> Routing:
    """Find the faces and route them: the ``speakers`` largest, left to right, then :func:`route_from_boxes`.

    Raises ``FaceError`` when fewer faces than speakers are found (lower ``threshold`` or paint masks).
    """
    from .faces import detect_faces

    boxes = detect_faces(image, n=speakers, backend=backend, threshold=threshold, root=root)
    return route_from_boxes(image, boxes, video_frames, speakers=speakers, order=order, size=size)
