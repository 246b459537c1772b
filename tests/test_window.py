"""The digit window: crops what the config says, and refuses what the frame lacks."""

from __future__ import annotations

import numpy as np
import pytest

from edgemeter.window import DigitWindow, WindowError, crop


def gradient_frame(width: int = 200, height: int = 100) -> np.ndarray:
    xs = np.tile(np.arange(width, dtype=np.uint8), (height, 1))
    return np.dstack([xs, xs, xs])


def test_plain_window_is_the_exact_slice() -> None:
    frame = gradient_frame()
    out = crop(frame, DigitWindow(x=10, y=20, width=50, height=30))
    assert out.shape == (30, 50, 3)
    assert out[0, 0, 0] == 10
    assert out[0, -1, 0] == 59


def test_window_touching_the_frame_edge_is_fine() -> None:
    out = crop(gradient_frame(), DigitWindow(x=150, y=50, width=50, height=50))
    assert out.shape == (50, 50, 3)


@pytest.mark.parametrize(
    ("window", "extent"),
    [
        (DigitWindow(x=180, y=10, width=50, height=30), "reaches outside"),
        (DigitWindow(x=300, y=300, width=50, height=30), "lies wholly outside"),
        (DigitWindow(x=10, y=90, width=50, height=30), "reaches outside"),
    ],
)
def test_window_outside_the_frame_is_a_clear_error(window: DigitWindow, extent: str) -> None:
    with pytest.raises(WindowError) as info:
        crop(gradient_frame(), window)
    message = str(info.value)
    assert extent in message
    assert "200x100 frame" in message
    assert "adjust window.*" in message


def test_rotation_levels_a_tilted_bar() -> None:
    # A bright horizontal bar drawn at +10 degrees (leaning counter-clockwise) comes out level.
    import cv2

    frame = np.zeros((300, 400, 3), np.uint8)
    box = ((200.0, 150.0), (200.0, 20.0), -10.0)  # OpenCV angles are clockwise
    cv2.fillPoly(frame, [cv2.boxPoints(box).astype(np.int32)], (255, 255, 255))
    window = DigitWindow(x=80, y=110, width=240, height=80, rotation=10)
    out = crop(frame, window)
    rows = np.where(out[:, :, 0].mean(axis=1) > 100)[0]
    # Level: the bar covers the same ~20 rows across the whole width.
    assert 15 <= len(rows) <= 25
    assert out[rows.min() + 3, 30:210, 0].min() > 200


def test_rotated_window_corner_outside_is_refused() -> None:
    with pytest.raises(WindowError):
        crop(gradient_frame(), DigitWindow(x=0, y=0, width=200, height=100, rotation=5))


def test_corners_rectify_a_perspective_quadrilateral() -> None:
    xs = np.tile((np.arange(400) // 2).astype(np.uint8), (300, 1))
    frame = np.dstack([xs, xs, xs])  # value = x / 2
    window = DigitWindow(
        x=0, y=0, width=1, height=1, corners=((100, 50), (300, 70), (300, 130), (100, 150))
    )
    out = crop(frame, window)
    assert out.shape[1] == pytest.approx(201, abs=2)
    assert out.shape[0] == pytest.approx(80, abs=2)
    # The crop runs from frame x=100 (value 50) to x=300 (value 150) on every row.
    for row in (2, out.shape[0] // 2, out.shape[0] - 3):
        assert abs(int(out[row, 0, 0]) - 50) <= 2
        assert abs(int(out[row, -1, 0]) - 150) <= 2


def test_grey_frames_are_cropped_too() -> None:
    out = crop(np.zeros((100, 200), np.uint8), DigitWindow(x=0, y=0, width=20, height=10))
    assert out.shape == (10, 20)
