"""Face detection (anytalker_core.faces): the real example photos, n, errors, input handling, backends."""

from __future__ import annotations

import logging
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from anytalker_core.people import faces
from anytalker_core.people.faces import FaceError, detect_faces, find_faces
from golden import SHARED, requires_shared

EXAMPLES = SHARED / "examples"

# Rough face centres (x, y) and face sizes in pixels, read off the photos by eye, left to right.
EXPECTED = {
    "2p-0.png": [((214, 208), 190), ((694, 187), 200)],  # woman left, young man right
    "2p-1.png": [((440, 331), 330), ((1103, 389), 320)],  # man left, woman right (news anchors)
    "1p-0.png": [((650, 212), 110)],  # cowboy, face shadowed by the hat brim
}


def load(name: str) -> np.ndarray:
    return np.asarray(Image.open(EXAMPLES / name).convert("RGB"))


@pytest.fixture(autouse=True)
def no_insightface(monkeypatch, tmp_path):
    """Keep every test on the Haar backend unless it installs a fake InsightFace itself: a developer machine
    with real InsightFace models must not change what these tests check."""
    monkeypatch.setitem(sys.modules, "insightface", None)  # import insightface -> ImportError
    monkeypatch.delenv(faces.INSIGHTFACE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@requires_shared
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_photos(name):
    image = load(name)
    height, width = image.shape[:2]
    result = find_faces(image)
    assert result.backend == "haar"
    expected = EXPECTED[name]
    assert len(result.boxes) == len(expected), f"{name}: {result.boxes}"
    assert result.boxes == detect_faces(image)
    lefts = [b[0] for b in result.raw_boxes]
    assert lefts == sorted(lefts), "not ordered left to right"
    for (x0, y0, x1, y1), ((cx, cy), size) in zip(result.boxes, expected):
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, "box outside the image"
        assert x1 - x0 == pytest.approx(y1 - y0), "box not square"
        side = x1 - x0
        assert x0 <= cx <= x1 and y0 <= cy <= y1, f"{name}: box {(x0, y0, x1, y1)} misses the face at {(cx, cy)}"
        assert abs((x0 + x1) / 2 - cx) < 0.35 * side and abs((y0 + y1) / 2 - cy) < 0.35 * side
        assert 0.6 * size < side < 2.0 * size, f"{name}: box side {side} for a face of about {size}"
    assert len(result.scores) == len(result.boxes)


@requires_shared
def test_n_keeps_the_largest_real():
    image = load("2p-1.png")  # the man's box is the larger one
    (box,) = detect_faces(image, n=1)
    assert box == detect_faces(image)[0]
    image = load("2p-0.png")  # the young man's (right) box is the larger one
    assert detect_faces(image, n=1) == detect_faces(image)[1:]
    assert detect_faces(image, n=2) == detect_faces(image)


@requires_shared
def test_fewer_faces_than_needed_real():
    with pytest.raises(FaceError) as info:
        detect_faces(load("1p-0.png"), n=2)
    message = str(info.value)
    assert "found 1 face but 2 are needed" in message
    assert "lower threshold" in message and "mask" in message
    assert info.value.found == 1 and info.value.needed == 2
    assert isinstance(info.value, ValueError)


@requires_shared
def test_float_uint8_numpy_torch_agree():
    image = load("2p-0.png")
    boxes = detect_faces(image)
    as_float = image.astype(np.float32) / 255
    assert detect_faces(as_float) == boxes
    assert detect_faces(torch.from_numpy(as_float)) == boxes
    assert detect_faces(torch.from_numpy(as_float)[None]) == boxes  # ComfyUI IMAGE batch of one
    assert detect_faces(torch.from_numpy(image.copy())) == boxes


@requires_shared
def test_threshold_maps_to_haar_neighbours():
    image = load("1p-0.png")
    assert len(detect_faces(image, threshold=0.5)) == 1
    assert detect_faces(image, threshold=0.5) == detect_faces(image)
    assert len(detect_faces(image, threshold=1.0)) == 0  # 10 neighbours: the weak shadowed face drops out


def fake_detector(monkeypatch, boxes, scores=None):
    def detect(rgb, threshold):
        return list(boxes), list(scores or [1.0] * len(boxes)), "fake"

    monkeypatch.setattr(faces, "_haar_detect", detect)


def test_n_selection_and_order(monkeypatch):
    image = np.zeros((100, 200, 3), np.uint8)
    fake_detector(monkeypatch, [(150, 10, 170, 30), (10, 10, 40, 50), (80, 5, 130, 45), (60, 80, 65, 85)])
    result = find_faces(image, n=2, backend="haar")
    assert result.raw_boxes == [(10, 10, 40, 50), (80, 5, 130, 45)]  # the two largest, left to right
    assert result.total_found == 4
    assert result.boxes[0] == (5.0, 10.0, 45.0, 50.0)  # squared about the centre (routing.square_box)
    assert [b[0] for b in find_faces(image).raw_boxes] == [10, 60, 80, 150]


def test_no_face_found(monkeypatch):
    fake_detector(monkeypatch, [])
    image = np.zeros((64, 64, 3), np.uint8)
    assert detect_faces(image) == []
    with pytest.raises(FaceError, match="found 0 faces but 1 is needed"):
        detect_faces(image, n=1)


@pytest.mark.parametrize(
    "image, needle",
    [
        (np.zeros((64, 64), np.uint8), "[64, 64]"),
        (np.zeros((64, 64, 4), np.uint8), "[64, 64, 4]"),
        (np.zeros((2, 64, 64, 3), np.float32), "[2, 64, 64, 3]"),
        (np.zeros((3, 64, 64), np.uint8), "[3, 64, 64]"),
        (np.zeros((64, 64, 3), np.int64), "int64"),
        ([[0, 0, 0]], "list"),
        (np.full((64, 64, 3), np.nan, np.float32), "NaN"),
    ],
)
def test_input_validation(image, needle):
    with pytest.raises(ValueError, match="image") as info:
        detect_faces(image)
    assert needle in str(info.value)
    assert not isinstance(info.value, FaceError)


def test_argument_validation():
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="backend"):
        detect_faces(image, backend="dlib")
    with pytest.raises(ValueError, match="threshold"):
        detect_faces(image, threshold=5)
    with pytest.raises(ValueError, match="n:"):
        detect_faces(image, n=0)


def test_missing_cascade_names_the_fix(monkeypatch, tmp_path):
    cv2 = pytest.importorskip("cv2")
    faces._haar_cascade.cache_clear()
    monkeypatch.setattr(cv2.data, "haarcascades", str(tmp_path) + "/")
    try:
        with pytest.raises(FaceError, match="opencv-python-headless>=4.5,<5") as info:
            detect_faces(np.zeros((64, 64, 3), np.uint8), backend="haar")
        assert "OpenCV 5" in str(info.value)
    finally:
        faces._haar_cascade.cache_clear()


# ---------------------------------------------------------------------------------------------- insightface


class FakeDetector:
    def __init__(self, dets):
        self.dets = np.asarray(dets, np.float32)
        self.det_thresh = 0.5

    def prepare(self, ctx_id, input_size):
        pass

    def detect(self, img, input_size, max_num=0):
        assert img.ndim == 3 and img.shape[2] == 3
        return self.dets, None


def install_fake_insightface(monkeypatch, dets):
    module = types.ModuleType("insightface")
    zoo = types.ModuleType("insightface.model_zoo")
    zoo.get_model = lambda path, **kwargs: FakeDetector(dets)
    module.model_zoo = zoo
    monkeypatch.setitem(sys.modules, "insightface", module)
    monkeypatch.setitem(sys.modules, "insightface.model_zoo", zoo)
    faces._insightface_model.cache_clear()


def test_insightface_used_by_auto_when_present(monkeypatch, tmp_path, caplog):
    install_fake_insightface(monkeypatch, [[120, 20, 160, 70, 0.9], [10, 10, 50, 60, 0.2], [60, 60, 70, 70, 0.1]])
    model = tmp_path / "models" / "buffalo_l" / "det_10g.onnx"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"")
    image = np.zeros((100, 200, 3), np.uint8)
    with caplog.at_level(logging.INFO, logger="AnyTalker"):
        result = find_faces(image, root=tmp_path)
    assert result.backend == "insightface" and result.detector == str(model)
    # the default det_thresh is the reference's 0.15: the 0.2 face is kept, the 0.1 one is not
    assert result.raw_boxes == [(10, 10, 50, 60), (120, 20, 160, 70)]
    assert result.scores == pytest.approx([0.2, 0.9])
    assert "insightface found 2" in caplog.text
    assert len(detect_faces(image, threshold=0.05, root=tmp_path)) == 3
    assert len(detect_faces(image, threshold=0.5, root=tmp_path)) == 1
    monkeypatch.setenv(faces.INSIGHTFACE_ENV, str(tmp_path))  # the env var finds it too
    assert find_faces(image, backend="insightface").backend == "insightface"


def test_insightface_without_models_falls_back(monkeypatch, tmp_path, caplog):
    install_fake_insightface(monkeypatch, [])
    fake_detector(monkeypatch, [(10, 10, 40, 40)])
    image = np.zeros((64, 64, 3), np.uint8)
    with caplog.at_level(logging.INFO, logger="AnyTalker"):
        result = find_faces(image, root=tmp_path / "empty")
    assert result.backend == "haar"
    assert "no InsightFace detector model" in result.note and "nothing is downloaded" in result.note
    assert "Haar" in caplog.text
    with pytest.raises(FaceError, match='backend="insightface" cannot run: no InsightFace detector model'):
        detect_faces(image, backend="insightface", root=tmp_path / "empty")


def test_insightface_package_missing_explicit_error():
    with pytest.raises(FaceError, match="insightface package is not importable"):
        detect_faces(np.zeros((64, 64, 3), np.uint8), backend="insightface")


@requires_shared
def test_route_faces_binds_voices_left_to_right_on_a_real_photo():
    from anytalker_core.people.routing import route_faces

    image = load("2p-0.png")
    routing = route_faces(image, 81, speakers=2)
    assert len(routing.token_masks) == 2 and routing.token_masks[0].shape == (21, 480 // 16, 848 // 16)
    left, right = (m.nonzero()[:, 2].float().mean() for m in routing.token_masks)  # mean token column
    assert left < right and all(m.max() > 0.5 for m in routing.token_masks)
    swapped = route_faces(image, 81, speakers=2, order="2,1")
    assert torch.equal(swapped.token_masks[0], routing.token_masks[1])
    with pytest.raises(FaceError, match="3"):
        route_faces(image, 81, speakers=3)
