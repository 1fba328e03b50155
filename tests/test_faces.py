"""Face detection (anytalker_core.people.faces): every face of the example photos and the demo picture at two
sizes, close-ups, the second pass, thresholds, landmarks, n, errors, input handling, and each backend."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import anytalker_core as at
from anytalker_core import demo
from anytalker_core.people import face_detectors, faces
from anytalker_core.people.faces import FaceError, detect_faces, find_faces
from golden import SHARED, requires_shared

EXAMPLES = SHARED / "examples"

# Rough face centres (x, y) and face sizes in pixels at each picture's own size, read off by eye, left to right.
EXPECTED = {
    "2p-0.png": [((214, 208), 190), ((694, 187), 200)],  # woman left, young man right
    "2p-1.png": [((440, 331), 330), ((1103, 389), 320)],  # man left, woman right (news anchors)
    "1p-0.png": [((650, 212), 110)],  # cowboy, face shadowed by the hat brim
}
DEMO_EXPECTED = [((116, 82), 88), ((277, 96), 82)]  # the demo picture (384x256): man left, woman right


def load(name: str) -> np.ndarray:
    return np.asarray(Image.open(EXAMPLES / name).convert("RGB"))


def demo_picture() -> np.ndarray:
    return np.asarray(Image.open(demo.IMAGE).convert("RGB"))


def resized(image: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    scale = side / max(image.shape[:2])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC), scale


def closeup(image: np.ndarray, box, margin: float, side: int) -> np.ndarray:
    """The face in ``box`` cut out with ``margin`` x its size and upscaled to side x side: a close-up."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = int(max(box[2] - box[0], box[3] - box[1]) * margin / 2)
    crop = image[max(0, int(cy) - half) : int(cy) + half, max(0, int(cx) - half) : int(cx) + half]
    return cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(autouse=True)
def no_insightface(monkeypatch, tmp_path):
    """Keep every test off InsightFace unless it installs a fake one itself: a developer machine with real
    InsightFace models must not change what these tests check ("auto" is YuNet here)."""
    monkeypatch.setitem(sys.modules, "insightface", None)  # import insightface -> ImportError
    monkeypatch.delenv(face_detectors.INSIGHTFACE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def check_faces(result, expected, scale: float, width: int, height: int, what: str) -> None:
    """Every expected face found once, left to right, by a square box around it; landmarks inside the box."""
    assert len(result.boxes) == len(expected), f"{what}: {result.boxes}"
    lefts = [b[0] for b in result.raw_boxes]
    assert lefts == sorted(lefts), f"{what}: not ordered left to right"
    for (x0, y0, x1, y1), ((cx, cy), size) in zip(result.boxes, expected):
        cx, cy, size = cx * scale, cy * scale, size * scale
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, f"{what}: box outside the image"
        assert x1 - x0 == pytest.approx(y1 - y0), f"{what}: box not square"
        side = x1 - x0
        assert x0 <= cx <= x1 and y0 <= cy <= y1, f"{what}: box {(x0, y0, x1, y1)} misses the face at {(cx, cy)}"
        assert abs((x0 + x1) / 2 - cx) < 0.35 * side and abs((y0 + y1) / 2 - cy) < 0.35 * side, what
        assert 0.6 * size < side < 2.0 * size, f"{what}: box side {side} for a face of about {size}"
    assert len(result.scores) == len(result.boxes) == len(result.landmarks)
    for face in result.faces:
        x0, y0, x1, y1 = face.raw_box
        if face.landmarks is not None:
            assert len(face.landmarks) == len(faces.LANDMARKS) == 5
            assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in face.landmarks), f"{what}: {face}"


@requires_shared
@pytest.mark.parametrize("side", [640, 1280])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_default_backend_finds_every_face_at_two_sizes(name, side):
    image, scale = resized(load(name), side)
    height, width = image.shape[:2]
    result = find_faces(image)
    assert result.backend == "yunet" and "InsightFace not used" in result.note
    check_faces(result, EXPECTED[name], scale, width, height, f"{name} at {side}")
    assert min(result.scores) > 0.85 and result.threshold == faces.DEFAULT_THRESHOLDS["yunet"] == 0.8
    assert result.boxes == detect_faces(image)


@pytest.mark.parametrize("side", [384, 1280])
def test_default_backend_finds_both_faces_of_the_demo_picture(side):
    image, scale = resized(demo_picture(), side)  # 384: its own size
    result = find_faces(image)
    assert result.backend == "yunet"
    check_faces(result, DEMO_EXPECTED, scale, image.shape[1], image.shape[0], f"demo at {side}")
    assert min(result.scores) > 0.85


def test_landmarks_are_eyes_nose_and_mouth():
    result = at.find_faces(demo_picture(), n=2)
    for face in result.faces:
        (ex0, ey0), (ex1, ey1), (nx, ny), (mx0, my0), (mx1, my1) = face.landmarks
        assert ex0 < ex1 and mx0 < mx1, "image-left eye and mouth corner first"
        assert max(ey0, ey1) < ny < min(my0, my1), "eyes above the nose tip above the mouth"
        assert face.box in result.boxes and face.score in result.scores


@pytest.mark.parametrize("margin", [1.1, 1.4])
@pytest.mark.parametrize("face", [0, 1])
def test_a_closeup_is_found(face, margin):
    """One face of the demo picture upscaled to fill a 1024-px frame: out of YuNet's trained range (10-300 px),
    so the first pass finds nothing above the threshold (or a part of the face), and the second pass finds it."""
    picture = demo_picture()
    image = closeup(picture, find_faces(picture).raw_boxes[face], margin, 1024)
    result = find_faces(image)
    assert result.extra["passes"][1] == (face_detectors.YUNET_SMALL_SIDE, 1)
    (x0, y0, x1, y1), (score,) = result.raw_boxes[0], result.scores
    assert len(result.boxes) == 1 and score > 0.9
    assert x1 - x0 > 1024 / 2 and y1 - y0 > 1024 / 2, "the whole face, not a part of it"
    assert x0 < 512 < x1 and y0 < 512 < y1
    assert find_faces(image, n=1).boxes == result.boxes


@requires_shared
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_closeups_of_the_photos_are_found(name):
    image = load(name)
    for box in find_faces(image).raw_boxes:
        for side in (640, 1024):
            (found,) = find_faces(closeup(image, box, 1.25, side), n=1).raw_boxes
            assert found[2] - found[0] > side / 3 and found[0] < side / 2 < found[2]


def test_threshold_drops_parts_of_a_face_and_keeps_the_face():
    """On a close-up the first pass at the picture's own size finds parts of the face scoring 0.6-0.8 (an ear, a
    chin); the default 0.8 drops them, true faces score 0.9+."""
    picture = demo_picture()
    image = closeup(picture, find_faces(picture).raw_boxes[0], 1.1, 1024)
    parts = face_detectors._yunet_pass(image, 1024, 0.5)
    assert parts and all(0.5 <= s < faces.DEFAULT_THRESHOLDS["yunet"] for _, s, _ in parts)
    assert face_detectors._yunet_pass(image, 1024, faces.DEFAULT_THRESHOLDS["yunet"]) == []
    assert len(face_detectors._yunet_pass(image, 320, 0.8)) == 1  # the whole face, at a small size
    assert find_faces(image, threshold=0.99).boxes == []  # above every score


@requires_shared
def test_threshold_keeps_true_faces_and_drops_false_ones_on_a_photo():
    image = load("1p-0.png")
    assert len(find_faces(image, threshold=0.1).boxes) > 1  # false faces score below 0.2 here
    assert len(find_faces(image).boxes) == 1


def test_thin_pictures_give_no_garbage():
    """OpenCV's FaceDetectorYN returns garbage rows (NaN, 1e27, score 1.0) for inputs with a side of 32 px or
    less, most often after a larger input: such passes are padded, so nothing is found on empty pictures."""
    rng = np.random.default_rng(0)
    picture = demo_picture()
    for k in range(20):
        face_detectors._yunet_pass(picture, 384, 0.5)
        for height, width in ((16, 640), (32, 320), (320, 32), (64, 64)):
            empty = rng.integers(0, 255, (height, width, 3), dtype=np.uint8) if k % 2 else np.zeros((height, width, 3))
            assert find_faces(empty.astype(np.uint8)).boxes == [], (height, width)


def fake_passes(monkeypatch, by_side):
    """Replace YuNet's pass with canned hits per long side; returns the list of sides asked for."""
    asked = []

    def run(rgb, side, threshold):
        asked.append(side)
        return [(b, s, None) for b, s in by_side.get(side, []) if s >= threshold]

    monkeypatch.setattr(face_detectors, "_yunet_pass", run)
    return asked


def test_second_pass_runs_when_faces_are_missing_or_too_large(monkeypatch):
    image = np.zeros((400, 800, 3), np.uint8)
    small, large = ((100, 100, 160, 170), 0.95), ((300, 20, 700, 390), 0.93)
    # enough faces, none too large: one pass
    asked = fake_passes(monkeypatch, {800: [small], 320: [small]})
    assert find_faces(image).extra["passes"] == [(800, 1)] and asked == [800]
    # fewer faces than needed: a second pass at long side 320 adds the face the first missed
    asked = fake_passes(monkeypatch, {800: [small], 320: [((104, 98, 158, 172), 0.9), large]})
    result = find_faces(image, n=2)
    assert asked == [800, 320] and result.extra["passes"] == [(800, 1), (320, 2)]
    assert result.raw_boxes == [small[0], large[0]]  # the overlapping hit counts once: the higher score wins
    # nothing found and no n given: the second pass too
    asked = fake_passes(monkeypatch, {320: [large]})
    assert find_faces(image).raw_boxes == [large[0]] and asked == [800, 320]
    # a face larger than YuNet's range (a close-up): the second pass, and a part of the face gives way
    part = ((400, 200, 680, 380), 0.82)
    asked = fake_passes(monkeypatch, {800: [part], 320: [large]})
    assert find_faces(image, n=1).raw_boxes == [large[0]] and asked == [800, 320]
    # a small picture: the second pass at half its long side
    asked = fake_passes(monkeypatch, {})
    assert find_faces(np.zeros((100, 200, 3), np.uint8)).boxes == [] and asked == [200, 100]


def test_first_pass_is_the_pictures_own_size_up_to_a_limit(monkeypatch):
    asked = fake_passes(monkeypatch, {})
    find_faces(np.zeros((1200, 4000, 3), np.uint8))
    assert asked == [face_detectors.YUNET_MAX_SIDE, face_detectors.YUNET_SMALL_SIDE]


HAAR_FOLDER = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "/nonexistent")
requires_cascade = pytest.mark.skipif(
    not (HAAR_FOLDER / face_detectors.HAAR_FILE).is_file(),
    reason=f"OpenCV {cv2.__version__} ships no Haar cascade (OpenCV 5 wheels); its refusal is tested below",
)


@requires_shared
@requires_cascade
def test_haar_by_name_on_the_photos():
    for name, expected in EXPECTED.items():
        image = load(name)
        result = find_faces(image, backend="haar")
        assert result.backend == "haar" and result.note == ""
        check_faces(result, expected, 1.0, image.shape[1], image.shape[0], f"haar {name}")
        assert result.landmarks == [None] * len(expected)


@requires_shared
def test_n_keeps_the_largest_real():
    image = load("2p-1.png")  # the man's box is the larger one
    (box,) = detect_faces(image, n=1)
    assert box == detect_faces(image)[0]
    assert detect_faces(image, n=2) == detect_faces(image)


@requires_shared
def test_fewer_faces_than_needed_real():
    with pytest.raises(FaceError) as info:
        detect_faces(load("1p-0.png"), n=2)
    message = str(info.value)
    assert "found 1 face but 2 are needed (backend yunet, threshold 0.8)" in message
    assert "lower threshold (e.g. 0.6)" in message and "mask" in message
    assert info.value.found == 1 and info.value.needed == 2
    assert isinstance(info.value, ValueError)


def test_float_uint8_numpy_torch_agree():
    image = demo_picture()
    boxes = detect_faces(image)
    as_float = image.astype(np.float32) / 255
    assert detect_faces(as_float) == boxes
    assert detect_faces(torch.from_numpy(as_float)) == boxes
    assert detect_faces(torch.from_numpy(as_float)[None]) == boxes  # ComfyUI IMAGE batch of one
    assert detect_faces(torch.from_numpy(image.copy())) == boxes


@requires_shared
@requires_cascade
def test_threshold_maps_to_haar_neighbours():
    image = load("1p-0.png")
    assert len(detect_faces(image, backend="haar", threshold=0.5)) == 1
    assert detect_faces(image, backend="haar", threshold=0.5) == detect_faces(image, backend="haar")
    assert len(detect_faces(image, backend="haar", threshold=1.0)) == 0  # 10 neighbours: the shadowed face drops


def test_old_opencv_names_the_fix(monkeypatch):
    monkeypatch.setattr(cv2, "__version__", "4.7.0")
    for backend in ("auto", "yunet"):
        with pytest.raises(FaceError, match="YuNet needs OpenCV 4.8 or newer.*this is OpenCV 4.7.0") as info:
            detect_faces(np.zeros((64, 64, 3), np.uint8), backend=backend)
        assert "opencv-python-headless>=4.8" in str(info.value) and 'backend="haar"' in str(info.value)


def test_the_model_file_ships_with_its_licence():
    folder = face_detectors.YUNET_FILE.parent
    assert face_detectors.YUNET_FILE.stat().st_size == 232_589
    assert "Apache License" in (folder / "LICENSE").read_text()
    assert "Apache License 2.0" in (folder / "README.md").read_text()
    assert face_detectors.yunet_status() == ""


def fake_detector(monkeypatch, boxes, scores=None):
    def detect(rgb, threshold):
        return list(boxes), list(scores or [1.0] * len(boxes)), "fake"

    monkeypatch.setattr(faces, "haar_detect", detect)


def test_n_selection_and_order(monkeypatch):
    image = np.zeros((100, 200, 3), np.uint8)
    fake_detector(monkeypatch, [(150, 10, 170, 30), (10, 10, 40, 50), (80, 5, 130, 45), (60, 80, 65, 85)])
    result = find_faces(image, n=2, backend="haar")
    assert result.raw_boxes == [(10, 10, 40, 50), (80, 5, 130, 45)]  # the two largest, left to right
    assert result.total_found == 4
    assert result.boxes[0] == (5.0, 10.0, 45.0, 50.0)  # squared about the centre (routing.square_box)
    assert [b[0] for b in find_faces(image, backend="haar").raw_boxes] == [10, 60, 80, 150]


@pytest.mark.parametrize("backend", ["haar", "yunet"])
def test_no_face_found(monkeypatch, backend):
    fake_detector(monkeypatch, [])
    image = np.zeros((64, 64, 3), np.uint8)  # YuNet runs for real on the empty picture
    assert detect_faces(image, backend=backend) == []
    with pytest.raises(FaceError, match="found 0 faces but 1 is needed"):
        detect_faces(image, n=1, backend=backend)


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
    face_detectors._haar_cascade.cache_clear()
    monkeypatch.setattr(cv2.data, "haarcascades", str(tmp_path) + "/")
    try:
        with pytest.raises(FaceError, match="opencv-python-headless>=4.8,<5") as info:
            detect_faces(np.zeros((64, 64, 3), np.uint8), backend="haar")
        assert "OpenCV 5" in str(info.value) and 'backend="yunet"' in str(info.value)
        assert detect_faces(np.zeros((64, 64, 3), np.uint8)) == []  # the default never needs the cascade
    finally:
        face_detectors._haar_cascade.cache_clear()


# ---------------------------------------------------------------------------------------------- insightface


class FakeDetector:
    def __init__(self, dets, kps=None):
        self.dets = np.asarray(dets, np.float32)
        self.kps = None if kps is None else np.asarray(kps, np.float32)
        self.det_thresh = 0.5

    def prepare(self, ctx_id, input_size):
        pass

    def detect(self, img, input_size, max_num=0):
        assert img.ndim == 3 and img.shape[2] == 3
        return self.dets, self.kps


def install_fake_insightface(monkeypatch, dets, kps=None):
    module = types.ModuleType("insightface")
    zoo = types.ModuleType("insightface.model_zoo")
    zoo.get_model = lambda path, **kwargs: FakeDetector(dets, kps)
    module.model_zoo = zoo
    monkeypatch.setitem(sys.modules, "insightface", module)
    monkeypatch.setitem(sys.modules, "insightface.model_zoo", zoo)
    face_detectors._insightface_model.cache_clear()


def test_insightface_used_by_auto_when_present(monkeypatch, tmp_path, caplog):
    points = [[(130 + k, 40 + k) for k in range(5)], [(20 + k, 30 + k) for k in range(5)], [(65, 65)] * 5]
    dets = [[120, 20, 160, 70, 0.9], [10, 10, 50, 60, 0.2], [60, 60, 70, 70, 0.1]]
    install_fake_insightface(monkeypatch, dets, points)
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
    assert result.faces[0].landmarks == tuple((20.0 + k, 30.0 + k) for k in range(5))  # kept with their face
    assert "insightface found 2" in caplog.text
    assert len(detect_faces(image, threshold=0.05, root=tmp_path)) == 3
    assert len(detect_faces(image, threshold=0.5, root=tmp_path)) == 1
    monkeypatch.setenv(face_detectors.INSIGHTFACE_ENV, str(tmp_path))  # the env var finds it too
    assert find_faces(image, backend="insightface").backend == "insightface"


def test_insightface_without_models_falls_back_to_yunet(monkeypatch, tmp_path, caplog):
    install_fake_insightface(monkeypatch, [])
    image = np.zeros((64, 64, 3), np.uint8)
    with caplog.at_level(logging.INFO, logger="AnyTalker"):
        result = find_faces(image, root=tmp_path / "empty")
    assert result.backend == "yunet" and result.detector == str(face_detectors.YUNET_FILE)
    assert "no InsightFace detector model" in result.note and "nothing is downloaded" in result.note
    assert "using YuNet" in caplog.text
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
