"""`snapshot`: the frame with the window drawn, and the digits as the OCR sees them."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from replay import default_window, write_frames

from edgemeter import simulate
from edgemeter.classify import ClassifierEngine
from edgemeter.config import Config, OcrConfig, WindowConfig, default_config, parse_config
from edgemeter.ocr import Cells, OcrEngine, Reading, make_engine, preprocess
from edgemeter.snapshot import (
    CELL_COLOUR,
    FRAME_PANEL_WIDTH,
    WINDOW_COLOUR,
    cell_outlines,
    draw_overlay,
    render_snapshot,
    run_snapshot,
)
from edgemeter.window import DigitWindow, crop


@pytest.fixture(scope="module")
def engine() -> OcrEngine:
    return make_engine(OcrConfig())


def files_config(pattern: Path, **window: float) -> Config:
    return parse_config(
        {
            "meter": {"digits": 6},
            "camera": {"source": "files", "path": str(pattern)},
            "window": {**default_window(), **window},
        }
    )


def has_colour(image: np.ndarray, x: float, y: float, colour: tuple[int, int, int]) -> bool:
    """Whether `colour` is within a pixel of (x, y): corners are drawn sub-pixel."""
    xi, yi = round(x), round(y)
    patch = image[max(0, yi - 1) : yi + 2, max(0, xi - 1) : xi + 2].reshape(-1, 3)
    return bool(np.any(np.all(patch == colour, axis=1)))


def test_snapshot_writes_two_panels_with_the_window_and_the_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (frame,) = write_frames(tmp_path / "frames", [12345])
    out = tmp_path / "snap.png"
    status = run_snapshot(files_config(frame), out)
    printed = capsys.readouterr().out
    assert status == 0
    png = cv2.imread(str(out))
    assert png is not None
    assert png.shape[1] > 800  # the 800x600 frame, and the OCR's view beside it
    box = default_window()
    window = DigitWindow(box["x"], box["y"], box["width"], box["height"])
    for x, y in window.outline():
        assert has_colour(png, min(x, 799), min(y, 599), WINDOW_COLOUR), (x, y)
    assert "reading 012345" in printed
    assert str(out) in printed


def test_window_outside_the_frame_still_writes_the_png_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (frame,) = write_frames(tmp_path / "frames", [1])
    out = tmp_path / "snap.png"
    status = run_snapshot(files_config(frame, x=700, width=300), out)
    printed = capsys.readouterr().out
    assert status == 0
    assert "reaches outside the 800x600 frame" in printed
    png = cv2.imread(str(out))
    assert png is not None
    assert has_colour(png, 700, default_window()["y"], WINDOW_COLOUR)  # drawn, clipped


def test_an_unreadable_image_is_a_clear_message_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt = tmp_path / "frame.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    out = tmp_path / "snap.png"
    status = run_snapshot(files_config(corrupt), out)
    captured = capsys.readouterr()
    assert status == 1
    assert "cannot take a frame" in captured.err
    assert "not a readable image" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not out.exists()


def test_summary_gives_the_ocr_reason_when_there_is_no_reading(engine: OcrEngine) -> None:
    frame = simulate.render(
        simulate.default_style(), 12345, simulate.Conditions(), np.random.default_rng(1)
    )
    config = dataclasses.replace(
        default_config(), meter=dataclasses.replace(default_config().meter, digits=5)
    )
    _, summary = render_snapshot(frame.image, config, engine)
    assert summary.startswith("no reading: ")
    assert "expected 5" in summary


def rotated_frame() -> tuple[simulate.SimFrame, DigitWindow]:
    style = dataclasses.replace(simulate.default_style(), rotation=3.5)
    frame = simulate.render(style, 4521, simulate.Conditions(), np.random.default_rng(2))
    x, y, w, h = simulate.default_window()
    return frame, DigitWindow(x, y - 6, w, h + 12, rotation=3.5)


def test_cells_are_mapped_back_through_a_turned_window() -> None:
    frame, window = rotated_frame()
    cells = preprocess(crop(frame.image, window), 6)
    assert isinstance(cells, Cells)
    outlines = cell_outlines(window, cells)
    # Each cell the OCR cut sits on the drum the renderer drew there.
    for corners, (x, y, w, h) in zip(outlines, frame.cells, strict=True):
        cx, cy = corners.mean(axis=0)
        assert x <= cx <= x + w and y <= cy <= y + h


def test_the_classifier_shows_its_own_cuts_on_the_drums_of_a_turned_window() -> None:
    frame, window = rotated_frame()
    reading, cells = ClassifierEngine().read_seen(crop(frame.image, window), 6)
    assert isinstance(reading, Reading)
    assert reading.digits == frame.truth
    assert isinstance(cells, Cells)
    # Where the network's inputs were cut, not Tesseract's cells: each on its drum.
    for corners, (x, y, w, h) in zip(cell_outlines(window, cells), frame.cells, strict=True):
        cx, cy = corners.mean(axis=0)
        assert x <= cx <= x + w and y <= cy <= y + h
    # Each tile is the network's input, dark digit on white as the panel shows glyphs.
    assert all(
        cell.glyphs[0].image.shape == cells.cells[0].glyphs[0].image.shape for cell in cells.cells
    )


def test_overlay_draws_the_turned_outline_and_the_cells(engine: OcrEngine) -> None:
    frame, window = rotated_frame()
    cells = preprocess(crop(frame.image, window), 6)
    assert isinstance(cells, Cells)
    image = draw_overlay(frame.image, window, cells, "004521  confidence 0.99")
    assert image.shape == frame.image.shape
    for x, y in window.outline():
        assert has_colour(image, x, y, WINDOW_COLOUR)
    # Mid-way down a cell's left edge: cells may reach the window's top and bottom.
    tl, _, _, bl = cell_outlines(window, cells)[2]
    assert has_colour(image, (tl[0] + bl[0]) / 2, (tl[1] + bl[1]) / 2, CELL_COLOUR)
    assert not np.shares_memory(image, frame.image)  # the frame is left alone


def test_overlay_of_a_window_wholly_outside_keeps_the_label_in_view() -> None:
    frame = np.full((240, 320), 90, np.uint8)  # grey, as some files are
    image = draw_overlay(frame, DigitWindow(900, 900, 100, 40), None, "window wholly outside")
    assert image.shape == (240, 320, 3)
    assert np.any(np.all(image == WINDOW_COLOUR, axis=2))  # the label's frame


def test_large_camera_frames_are_scaled_to_a_readable_png(engine: OcrEngine) -> None:
    style = dataclasses.replace(
        simulate.default_style(), frame_size=(2304, 1296), center=(1300.0, 700.0), digit_height=110
    )
    frame = simulate.render(style, 98765, simulate.Conditions(), np.random.default_rng(4))
    x, y, w, h = frame.window
    config = dataclasses.replace(default_config(), window=WindowConfig(x=x, y=y, width=w, height=h))
    image, summary = render_snapshot(frame.image, config, engine)
    assert summary.startswith("reading 098765")
    assert FRAME_PANEL_WIDTH < image.shape[1] <= 1600
    scale = FRAME_PANEL_WIDTH / 2304
    assert has_colour(image, x * scale, y * scale, WINDOW_COLOUR)


def test_without_an_engine_the_window_and_cells_are_still_drawn() -> None:
    frame = simulate.render(
        simulate.default_style(), 12345, simulate.Conditions(), np.random.default_rng(1)
    )
    image, summary = render_snapshot(frame.image, default_config(), None)
    assert "no OCR engine" in summary
    assert image.shape[1] > 800


def test_snapshot_command_with_an_unreadable_frame_fails_cleanly(tmp_path: Path) -> None:
    corrupt = tmp_path / "frame.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "meter": {"digits": 6},
                "camera": {"source": "files", "path": str(corrupt)},
                "window": default_window(),
            }
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgemeter",
            "snapshot",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "s.png"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1
    assert "not a readable image" in result.stderr
    assert "Traceback" not in result.stderr
