"""`edgemeter read` fed malformed, hostile and odd images, as a user would run it.

Every image gets one JSON line with a reading or a reason, never a traceback; the exit
status is 1 exactly when an image could not be opened (cli.py); memory and time stay
bounded: each run is a real subprocess under a wrapper that reports its peak RSS, with
an address-space limit so a regression cannot take the shared machine's memory down.
In-process, hypothesis mutates real frames: `load_image` answers an image or an
ImageError, nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from replay import default_window, write_frames

from edgemeter.source import ImageError, load_image

TRUTH = "123456"
# Generous: a Tesseract process with OpenCV is ~100 MB; an 8-bit 48-megapixel frame
# (the largest accepted) adds about 250 MB while it is decoded and converted.
MAX_RSS_MB = 600
# Far above MAX_RSS_MB, so only a runaway allocation hits it (then MemoryError).
ADDRESS_SPACE_LIMIT = 3 << 30
RUN_TIMEOUT_S = 120.0

# Runs the command with an address-space limit, then prints the children's peak RSS.
_WRAPPER = """
import resource, subprocess, sys
limit = int(sys.argv[1])
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
done = subprocess.run(sys.argv[2:], preexec_fn=cap)
print(f"maxrss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}", file=sys.stderr)
sys.exit(done.returncode)
"""


@dataclass(frozen=True)
class ReadRun:
    returncode: int
    lines: list[dict[str, object]]
    stderr: str
    max_rss_mb: float


def read(config: Path, *images: Path | str, timeout_s: float = RUN_TIMEOUT_S) -> ReadRun:
    command = [sys.executable, "-m", "edgemeter", "read", "--config", str(config)]
    wrapper = [sys.executable, "-c", _WRAPPER, str(ADDRESS_SPACE_LIMIT)]
    process = subprocess.Popen(
        [*wrapper, *command, *map(str, images)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, so a timeout ends the reader too
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=10)
        raise
    stderr, _, rss = stderr.rpartition("maxrss_kb=")
    lines = [json.loads(line) for line in stdout.splitlines()]
    return ReadRun(process.returncode, lines, stderr, int(rss) / 1024)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "meter": {"digits": 6},
                "camera": {"source": "files", "path": str(tmp_path / "*.png")},
                "window": default_window(),
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def frame(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    (path,) = write_frames(tmp_path_factory.mktemp("frame"), [int(TRUTH)])
    image = cv2.imread(str(path))
    assert image is not None
    return image


def encoded(image: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png(header: bytes, body: bytes) -> bytes:
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def blank_png(path: Path, width: int, height: int, depth: int = 8, colour: int = 2) -> Path:
    """A valid PNG of zeros, written without ever holding the image in memory."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    row = b"\0" + bytes(width * channels * depth // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", body)
        + _chunk(b"IEND", b"")
    )
    return path


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A 70-byte PNG whose header claims width x height pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(1000))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )
    return path


def jpeg_claiming(path: Path, jpeg: bytes, width: int, height: int) -> Path:
    """A real JPEG with its frame header (SOF0) rewritten to claim other dimensions."""
    sof = jpeg.index(b"\xff\xc0")
    patched = bytearray(jpeg)
    patched[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(patched))
    return path


def assert_one_reason_per_image(run: ReadRun, images: list[Path | str]) -> None:
    assert "Traceback" not in run.stderr
    assert [line["image"] for line in run.lines] == [str(i) for i in images]
    for line in run.lines:
        if line["reading"] is None:
            assert isinstance(line["reason"], str) and line["reason"].strip()
            assert "\n" not in line["reason"]
        else:
            assert line["reason"] is None
    assert run.max_rss_mb < MAX_RSS_MB


def test_truncated_empty_and_garbage_files_each_get_a_reason(
    tmp_path: Path, config: Path, frame: np.ndarray
) -> None:
    rng = np.random.default_rng(6)
    images: list[Path | str] = []
    for ext in (".jpg", ".png"):
        whole = encoded(frame, ext)
        cuts = sorted({1, 2, 4, 8, 16, 64, *np.linspace(100, len(whole) - 1, 24, dtype=int)})
        for cut in cuts:
            path = tmp_path / f"cut-{cut:07d}{ext}"
            path.write_bytes(whole[:cut])
            images.append(path)
    (tmp_path / "empty.jpg").write_bytes(b"")
    for size in (1, 100, 100_000):
        (tmp_path / f"random-{size}.jpg").write_bytes(rng.bytes(size))
    (tmp_path / "notes.png").write_text("this is a text file, not a picture\n" * 50)
    (tmp_path / "a-directory.jpg").mkdir()
    images += [tmp_path / n for n in ("empty.jpg", "notes.png", "a-directory.jpg")]
    images += [tmp_path / f"random-{size}.jpg" for size in (1, 100, 100_000)]
    images.append(tmp_path / "missing.jpg")

    run = read(config, *images)

    assert_one_reason_per_image(run, images)
    assert run.returncode == 1  # some could not be opened
    by_name = {Path(str(line["image"])).name: line for line in run.lines}
    assert "empty file (0 bytes)" in str(by_name["empty.jpg"]["reason"])
    assert "is a directory" in str(by_name["a-directory.jpg"]["reason"])
    assert "file not found" in str(by_name["missing.jpg"]["reason"])
    assert "not a readable image" in str(by_name["notes.png"]["reason"])
    # A cut file decodes partly at best: it is read right or not at all, never wrong.
    read_values = {line["reading"] for line in run.lines if line["reading"] is not None}
    assert read_values <= {TRUTH}
    unread = [line for line in run.lines if line["reading"] is None]
    print(
        f"FUZZ truncated/garbage: images={len(images)} read={len(images) - len(unread)}"
        f" with_reason={len(unread)} max_rss_mb={run.max_rss_mb:.0f}"
    )


def test_odd_but_valid_images_are_read_or_explained(
    tmp_path: Path, config: Path, frame: np.ndarray
) -> None:
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    variants = {
        "frame.jpg": frame,
        "deep-16bit.png": frame.astype(np.uint16) * 257,
        "grey.png": grey,
        "grey-16bit.png": grey.astype(np.uint16) * 257,
        "alpha.png": cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA),
        "one-pixel.png": frame[:1, :1],
    }
    images: list[Path | str] = []
    for name, image in variants.items():
        path = tmp_path / name
        assert cv2.imwrite(str(path), image)
        images.append(path)

    run = read(config, *images)

    assert_one_reason_per_image(run, images)
    assert run.returncode == 0  # every one could be opened
    readings = {Path(str(line["image"])).name: line["reading"] for line in run.lines}
    assert readings == {**dict.fromkeys(variants, TRUTH), "one-pixel.png": None}
    assert "outside the 1x1 frame" in str(run.lines[-1]["reason"])


def test_decompression_bombs_are_refused_before_decoding(
    tmp_path: Path, config: Path, frame: np.ndarray
) -> None:
    images: list[Path | str] = [
        png_bomb(tmp_path / "bomb-100000x100000.png", 100_000, 100_000),
        jpeg_claiming(tmp_path / "bomb-65000x65000.jpg", encoded(frame, ".jpg"), 65_000, 65_000),
        blank_png(tmp_path / "valid-12000x9000.png", 12_000, 9_000),
    ]

    run = read(config, *images)

    reasons = [line["reason"] for line in run.lines]
    print(f"FUZZ bombs: max_rss_mb={run.max_rss_mb:.0f} reasons={reasons}")
    assert_one_reason_per_image(run, images)
    assert run.returncode == 1
    assert all(line["reading"] is None for line in run.lines)


def test_an_oversized_image_is_named_too_large(tmp_path: Path, config: Path) -> None:
    image = png_bomb(tmp_path / "bomb.png", 100_000, 100_000)
    run = read(config, image)
    assert "too large" in str(run.lines[0]["reason"])


def test_the_largest_accepted_frame_stays_within_the_memory_bound(
    tmp_path: Path, config: Path
) -> None:
    image = blank_png(tmp_path / "valid-8000x6000.png", 8000, 6000)  # 48 Mpx, under the limit
    run = read(config, image)
    print(f"FUZZ 8000x6000 8-bit: max_rss_mb={run.max_rss_mb:.0f} reason={run.lines[0]['reason']}")
    assert_one_reason_per_image(run, [image])
    assert run.returncode == 0


def test_a_deep_colour_frame_at_the_pixel_limit_stays_within_the_memory_bound(
    tmp_path: Path, config: Path
) -> None:
    image = blank_png(tmp_path / "rgba16-7000x7000.png", 7000, 7000, depth=16, colour=6)
    run = read(config, image)
    print(f"FUZZ 7000x7000 16-bit RGBA: max_rss_mb={run.max_rss_mb:.0f}")
    assert_one_reason_per_image(run, [image])


def test_a_huge_file_is_refused_without_reading_it(tmp_path: Path, config: Path) -> None:
    image = tmp_path / "sparse-1GiB.jpg"
    with image.open("wb") as handle:
        handle.truncate(1 << 30)  # sparse: no disk used, 1 GiB to whoever reads it
    run = read(config, image)
    print(f"FUZZ 1 GiB file: max_rss_mb={run.max_rss_mb:.0f}")
    assert_one_reason_per_image(run, [image])
    assert run.returncode == 1


def test_a_pipe_or_device_is_refused_not_read(tmp_path: Path, config: Path) -> None:
    fifo = tmp_path / "camera.jpg"
    os.mkfifo(fifo)
    images: list[Path | str] = [fifo, "/dev/zero"]
    run = read(config, *images, timeout_s=20)
    assert_one_reason_per_image(run, images)
    assert run.returncode == 1


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A real PNG or JPEG frame cut, overwritten in places and/or extended."""
    image = draw(st.sampled_from(_SAMPLES))
    data = bytearray(image[: draw(st.integers(0, len(image)))])
    for _ in range(draw(st.integers(0, 8))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data) + draw(st.binary(max_size=64))


_SMALL = np.full((60, 90, 3), 200, np.uint8)
cv2.putText(_SMALL, "042", (5, 45), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 2)
_SAMPLES = [encoded(_SMALL, ".png"), encoded(_SMALL, ".jpg"), encoded(_SMALL, ".bmp")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated_images())
def test_load_image_answers_an_image_or_an_image_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "frame.img"
    path.write_bytes(data)
    try:
        image = load_image(path)
    except ImageError as err:
        assert str(err).strip()
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert image.shape[0] * image.shape[1] <= 50_000_000
