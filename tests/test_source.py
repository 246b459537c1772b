"""Frame sources and image loading, on real files; the checks that tell a live camera
from a black or frozen one."""

from __future__ import annotations

import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgemeter.config import CameraConfig, SimulatedConfig
from edgemeter.source import (
    BLACK,
    FilesSource,
    FrameCheck,
    FrameHealth,
    ImageError,
    OpenCVSource,
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


# --- is the camera really delivering? ---------------------------------------------------


def scene(seed: int, noise: int = 2) -> np.ndarray:
    """The same lit scene each time, with fresh sensor noise per seed."""
    base = np.full((240, 320, 3), 120, np.int16)
    base[80:160, 60:260] = 30  # a dark counter window
    jitter = np.random.default_rng(seed).integers(-noise, noise + 1, base.shape)
    image: np.ndarray = np.clip(base + jitter, 0, 255).astype(np.uint8)
    return image


def test_a_live_camera_is_never_frozen() -> None:
    check = FrameCheck(frozen_after_s=10, live=True)
    verdicts = [check.check(scene(seed), now=float(seed)) for seed in range(30)]
    assert verdicts == [FrameHealth(fresh=True, fault=None)] * 30


def test_the_same_picture_is_frozen_only_after_the_limit() -> None:
    check = FrameCheck(frozen_after_s=10, live=True)
    stuck = scene(1)
    first = check.check(stuck, now=100.0)
    early = check.check(stuck.copy(), now=109.9)
    late = check.check(stuck.copy(), now=110.0)
    assert first == FrameHealth(fresh=True, fault=None)
    assert early == FrameHealth(fresh=False, fault=None)  # a repeat: not news, not yet a fault
    assert late.fresh is False
    assert late.fault is not None and late.fault.kind == "frozen"
    assert late.fault.reason == "the camera is frozen (the same picture for 10 s)"
    assert "check the camera cable" in late.fault.fix


def test_a_frozen_picture_with_a_ticking_clock_overlay_is_still_frozen() -> None:
    check = FrameCheck(frozen_after_s=5, live=True)
    stuck = scene(1)
    check.check(stuck, now=0.0)
    for second in range(1, 7):
        clocked = stuck.copy()
        cv2.putText(clocked, f"12:00:{second:02d}", (5, 20), 0, 0.5, (255, 255, 255))
        health = check.check(clocked, now=float(second))
    assert health.fault is not None and health.fault.kind == "frozen"


def test_a_frozen_camera_recovers_when_the_picture_changes() -> None:
    check = FrameCheck(frozen_after_s=1, live=True)
    check.check(scene(1), now=0.0)
    assert check.check(scene(1), now=5.0).fault is not None
    assert check.check(scene(2), now=6.0) == FrameHealth(fresh=True, fault=None)
    assert check.check(scene(3), now=7.0) == FrameHealth(fresh=True, fault=None)


def test_black_frames_are_a_fault_but_never_frozen() -> None:
    check = FrameCheck(frozen_after_s=1, live=True)
    black = np.zeros((240, 320, 3), np.uint8)
    verdicts = [check.check(black, now=float(t)) for t in range(10)]
    # Darkness is not a hung camera: still news for the watchdog, reported as black.
    assert verdicts == [FrameHealth(fresh=True, fault=BLACK)] * 10
    assert "lighting" in BLACK.fix


def test_a_dim_but_lit_counter_is_not_black() -> None:
    check = FrameCheck(frozen_after_s=1, live=True)
    dim = np.full((240, 320, 3), 8, np.uint8)
    dim[100:140, 100:220] = 70  # the lit drums
    assert check.check(dim, now=0.0) == FrameHealth(fresh=True, fault=None)


def test_a_replay_of_files_may_repeat_a_picture() -> None:
    check = FrameCheck(frozen_after_s=1, live=False)
    stuck = scene(1)
    verdicts = [check.check(stuck, now=float(t)) for t in range(10)]
    assert verdicts == [FrameHealth(fresh=True, fault=None)] * 10


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 50.0), min_size=1, max_size=20), st.floats(0.1, 30.0))
def test_no_frame_is_called_frozen_before_the_limit(gaps: list[float], limit: float) -> None:
    check = FrameCheck(frozen_after_s=limit, live=True)
    stuck, now = scene(1), 0.0
    check.check(stuck, now)
    for gap in gaps:
        now += gap
        frozen = check.check(stuck, now).fault is not None
        assert frozen == (now >= limit)


def test_simulated_frames_have_sensor_noise_so_they_are_never_frozen() -> None:
    source = open_source(
        CameraConfig(source="simulated", simulated=SimulatedConfig(per_frame=0)), 6
    )
    check = FrameCheck(frozen_after_s=0.5, live=True)
    verdicts = [check.check(source.read().image, now=float(t)) for t in range(4)]
    assert verdicts == [FrameHealth(fresh=True, fault=None)] * 4


def test_a_stream_that_refuses_connections_is_a_source_error_naming_the_fix() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/stream.mjpg"
    source = OpenCVSource(url, timeout_s=1.0)
    with pytest.raises(SourceError, match="powered and reachable"):
        source.read()
    assert source.capture is None  # the next read opens it again
