"""Face routing: from each person's face box to the masks the model reads (``docs/model.md``, "Face routing").

- the face box made square (side max(w, h) about its centre, moved inside the image) and filled in a mask;
- the mask widened 1.2x in width and 1.1x in height about its centre (content rescaled bilinearly);
- per person, the widened mask resized to the token grid (H/16, W/16 pixels -> latent/2) and repeated over
  the latent frames: the identity's token mask ``[T, h, w]``;
- for everybody together, the 4 mask channels of the condition ``y``: video frame 0 all ones, every later
  frame the sum of the widened masks resized to the latent grid, packed 4 video frames per latent frame.

The arithmetic follows the reference's float32 steps so the masks match its outputs exactly.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .. import timeline

WIDEN = (1.2, 1.1)  # width and height factors of the routing mask around the face box

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


def square_box(box: Box, width: int, height: int) -> Box:
    """A face box made square (side max(w, h) about its centre), moved back inside a width x height image."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(x1 - x0, y1 - y0)
    x0, y0, x1, y1 = cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2
    if x0 < 0:
        x0, x1 = 0, side
    if y0 < 0:
        y0, y1 = 0, side
    if x1 > width:
        x0, x1 = width - side, width
    if y1 > height:
        y0, y1 = height - side, height
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


def box_mask(box: Box, height: int, width: int) -> torch.Tensor:
    """float32 [height, width]: 1 inside the box (pixel bounds truncated to integers), 0 elsewhere."""
    x0, y0, x1, y1 = box
    mask = torch.zeros(height, width)
    mask[int(y0) : int(y1), int(x0) : int(x1)] = 1.0
    return mask


def widen_mask(mask: torch.Tensor, width_scale: float = WIDEN[0], height_scale: float = WIDEN[1]) -> torch.Tensor:
    """Widen a face mask [H, W] about the centre of its bounding box; the content is rescaled into the new box
    (bilinear), which is clamped to the image. An empty mask is returned unchanged."""
    points = torch.nonzero(mask > 0.5)
    if points.numel() == 0 or (width_scale == 1.0 and height_scale == 1.0):
        return mask
    (top, left), (bottom, right) = points.min(dim=0).values, points.max(dim=0).values
    centre_y, centre_x = (top + bottom) / 2.0, (left + right) / 2.0  # float32 tensors, as the reference
    new_h = int((bottom - top + 1) * height_scale)
    new_w = int((right - left + 1) * width_scale)
    height, width = mask.shape
    y0, y1 = max(0, int(centre_y - new_h / 2.0)), min(height - 1, int(centre_y + new_h / 2.0))
    x0, x1 = max(0, int(centre_x - new_w / 2.0)), min(width - 1, int(centre_x + new_w / 2.0))
    widened = torch.zeros_like(mask)
    if y1 > y0 and x1 > x0:
        content = mask[top : bottom + 1, left : right + 1][None, None]
        widened[y0 : y1 + 1, x0 : x1 + 1] = F.interpolate(
            content, size=(y1 - y0 + 1, x1 - x0 + 1), mode="bilinear", align_corners=False
        )[0, 0]
    return widened


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[H, W] -> [h, w], bilinear, align_corners False."""
    return F.interpolate(mask[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]


def token_mask(widened: torch.Tensor, token_hw: tuple[int, int], latent_frames: int) -> torch.Tensor:
    """One person's token mask [T, h, w]: the widened mask resized to the token grid, the same in every frame.

    A moving mask (``widened`` [F, H, W], one per video frame): each video frame resized, and latent frame j takes
    the union (max) of its video frames (``timeline.video_span``), so a face moving within them stays covered."""
    if widened.dim() == 2:
        return resize_mask(widened, token_hw)[None].repeat(latent_frames, 1, 1)
    per_frame = F.interpolate(widened[:, None], size=token_hw, mode="bilinear", align_corners=False)[:, 0]
    return torch.stack([per_frame[timeline.video_span(j)].amax(0) for j in range(latent_frames)])


def y_mask_channels(widened: Sequence[torch.Tensor], latent_hw: tuple[int, int], video_frames: int) -> torch.Tensor:
    """The 4 mask channels of ``y``: [4, T, lat_h, lat_w] for video_frames = 4(T-1)+1.

    Video frame 0 is all ones (the given picture); later frames hold the sum of everybody's widened masks
    resized to the latent grid. Frame 0 is repeated 4 times, then 4 video frames go to each latent frame.
    Moving masks ([video_frames, H, W], mixed with still ones): each video frame's own sum.
    """
    timeline.check_frames(video_frames, "video_frames")
    stride = timeline.STRIDE
    if any(m.dim() == 3 for m in widened):
        return _moving_y_channels(widened, latent_hw, video_frames)
    everyone = torch.zeros(widened[0].shape)
    for mask in widened:  # summed in order, as the reference does
        everyone += mask
    frames = torch.zeros(video_frames, *latent_hw)
    frames[0] = 1.0
    frames[1:] = resize_mask(everyone, latent_hw)
    frames = torch.cat([frames[:1].repeat(stride, 1, 1), frames[1:]])  # [4T, lat_h, lat_w]
    return frames.view(-1, stride, *latent_hw).transpose(0, 1)


def _moving_y_channels(widened: Sequence[torch.Tensor], latent_hw: tuple[int, int], video_frames: int) -> torch.Tensor:
    """:func:`y_mask_channels` when some masks move: the sum per video frame, then the same packing."""
    stride = timeline.STRIDE
    everyone = torch.zeros(video_frames, *widened[0].shape[-2:])
    for mask in widened:
        everyone += mask if mask.dim() == 3 else mask[None]
    frames = F.interpolate(everyone[:, None], size=latent_hw, mode="bilinear", align_corners=False)[:, 0]
    frames[0] = 1.0
    frames = torch.cat([frames[:1].repeat(stride, 1, 1), frames[1:]])
    return frames.view(-1, stride, *latent_hw).transpose(0, 1).contiguous()
