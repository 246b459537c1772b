"""Frame sources and image loading, on real files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgemeter.config import CameraConfig
from edgemeter.source import (
    FilesSource,
    ImageError,
    Picamera2Source,
    SourceEnded,
    SourceError,
    load_image,
    open_source,
)


def write_png(path: Path, value: int, shape: tuple[int, ...] = (20, 30, 3)) -> Path:
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))
    return path


def test_files_source_replays_in_sorted_order_then_ends(tmp_path: Path) -> None:
    for name, value in (("b.png", 20), ("a.png", 10), ("c.png", 30)):
        write_png(tmp_path / name, value)
    source = FilesSource(str(tmp_path / "*.png"))
    source.open()
    seen = [int(source.read().image[0, 0, 0]) for _ in range(3)]
    assert seen == [10, 20, 30]
    with pytest.raises(SourceEnded):
        source.read()


def test_files_source_can_loop(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", 10)
    source = FilesSource(str(tmp_path / "*.png"), loop=True)
    source.open()
    origins = [source.read().origin for _ in range(3)]
    assert origins == [str(tmp_path / "a.png")] * 3


def test_files_source_with_no_match_says_so(tmp_path: Path) -> None:
    source = FilesSource(str(tmp_path / "*.jpg"))
    with pytest.raises(SourceError, match="matches no files"):
        source.open()


def test_corrupt_file_in_a_replay_is_a_source_error_and_the_replay_goes_on(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"not an image")
    write_png(tmp_path / "b.png", 50)
    source = FilesSource(str(tmp_path / "*.png"))
    source.open()
    with pytest.raises(SourceError, match="not a readable image"):
        source.read()
    assert int(source.read().image[0, 0, 0]) == 50


def test_grey_and_alpha_images_load_as_bgr(tmp_path: Path) -> None:
    grey = load_image(write_png(tmp_path / "g.png", 7, (10, 10)))
    rgba = load_image(write_png(tmp_path / "a.png", 9, (10, 10, 4)))
    assert grey.shape == (10, 10, 3)
    assert rgba.shape == (10, 10, 3)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file not found"),
        (b"", "empty file"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a readable image"),
        (b"hello world", "not a readable image"),
    ],
    ids=["missing", "empty", "truncated-png", "text"],
)
def test_bad_image_files_give_a_reason(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "frame.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=message):
        load_image(path)


def test_truncated_jpeg_gives_a_reason_or_a_usable_image(tmp_path: Path) -> None:
    ok, data = cv2.imencode(".jpg", np.full((200, 300, 3), 128, np.uint8))
    assert ok
    path = tmp_path / "cut.jpg"
    path.write_bytes(data.tobytes()[:50])
    with pytest.raises(ImageError):
        load_image(path)


def test_picamera2_missing_is_a_clear_source_error() -> None:
    source = Picamera2Source(CameraConfig(source="picamera2"))
    try:
        import picamera2  # noqa: F401
    except ImportError:
        with pytest.raises(SourceError, match="apt-get install python3-picamera2"):
            source.open()
    else:  # pragma: no cover - only on a Pi
        pytest.skip("picamera2 is installed here: this test is for machines without it")


def test_simulated_source_holds_its_value_for_a_burst() -> None:
    source = open_source(CameraConfig(source="simulated"), digits=6, burst=3)
    source.open()
    truths = [source.read().truth for _ in range(6)]
    assert truths[0] == truths[1] == truths[2]
    assert truths[3] == truths[4] == truths[5]
    assert all(t is not None and len(t) == 6 for t in truths)


def test_a_long_replay_logs_its_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for index in range(40):
        write_png(tmp_path / f"{index:03d}.png", index)
    source = FilesSource(str(tmp_path / "*.png"))
    source.open()
    with caplog.at_level("INFO", logger="edgemeter.source"):
        for _ in range(40):
            source.read()
    progress = [r.getMessage() for r in caplog.records if "replay progress" in r.getMessage()]
    assert progress[0] == "replay progress files=4/40"
    assert progress[-1] == "replay progress files=40/40"
    assert len(progress) == 10
