"""`edgemeter read`, `--version`, `--help` as a user runs them, with real Tesseract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import yaml
from replay import default_window, write_frames

from edgemeter import __version__


def edgemeter(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgemeter", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def read_config(tmp_path: Path, **window: int) -> Path:
    config = {
        "meter": {"digits": 6},
        "camera": {"source": "files", "path": str(tmp_path / "*.png")},
        "window": {**default_window(), **window},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def lines_of(result: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_read_reads_clean_simulated_frames(tmp_path: Path) -> None:
    values = [12345, 12346, 98765, 407, 500000, 111111, 909090, 3]
    paths = write_frames(tmp_path / "frames", values)
    result = edgemeter("read", "--config", str(read_config(tmp_path)), *map(str, paths))
    assert result.returncode == 0, result.stderr
    lines = lines_of(result)
    assert [line["image"] for line in lines] == [str(p) for p in paths]
    assert [line["reading"] for line in lines] == [f"{v:06d}" for v in values]
    assert all(line["reason"] is None for line in lines)
    assert all(0.0 < float(line["confidence"]) <= 1.0 for line in lines)  # type: ignore[arg-type]


def test_read_gives_reasons_for_bad_images_and_goes_on(tmp_path: Path) -> None:
    (good,) = write_frames(tmp_path / "frames", [4242])
    black = tmp_path / "black.png"
    cv2.imwrite(str(black), np.zeros((600, 800, 3), np.uint8))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    missing = tmp_path / "missing.png"
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.full((100, 100, 3), 200, np.uint8))
    images = [black, corrupt, missing, small, good]
    result = edgemeter("read", "--config", str(read_config(tmp_path)), *map(str, images))
    assert "Traceback" not in result.stderr
    assert result.returncode == 1  # two images could not be opened
    by_image = {line["image"]: line for line in lines_of(result)}
    assert len(by_image) == len(images)
    for bad in (black, corrupt, missing, small):
        assert by_image[str(bad)]["reading"] is None
        assert by_image[str(bad)]["reason"]
    assert "not a readable image" in str(by_image[str(corrupt)]["reason"])
    assert "file not found" in str(by_image[str(missing)]["reason"])
    assert "outside the 100x100 frame" in str(by_image[str(small)]["reason"])
    assert by_image[str(good)]["reading"] == "004242"


def test_read_exits_0_when_every_image_opened_even_without_reading(tmp_path: Path) -> None:
    black = tmp_path / "black.png"
    cv2.imwrite(str(black), np.zeros((600, 800, 3), np.uint8))
    result = edgemeter("read", "--config", str(read_config(tmp_path)), str(black))
    assert result.returncode == 0
    (line,) = lines_of(result)
    assert line["reading"] is None
    assert line["confidence"] == 0.0


def test_window_outside_the_frame_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    (frame,) = write_frames(tmp_path / "frames", [1])
    config = read_config(tmp_path, x=700, width=300)
    result = edgemeter("read", "--config", str(config), str(frame))
    (line,) = lines_of(result)
    assert line["reading"] is None
    assert "reaches outside the 800x600 frame" in str(line["reason"])
    assert "Traceback" not in result.stderr


def test_version_and_help() -> None:
    assert edgemeter("--version").stdout.strip() == f"edgemeter {__version__}"
    help_text = edgemeter("--help").stdout
    for command in ("run", "read", "check-config"):
        assert command in help_text
