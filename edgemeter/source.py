"""Frame sources: where pictures of the counter come from.

Every source has the same small interface (`open`, `read`, `close`) and yields
`Frame`s: a BGR image with the wall-clock time it was taken. A source that has run
out of frames raises `SourceEnded`; a camera hiccup raises `SourceError` with a
message a user can act on, and the caller decides whether to retry. Camera libraries
are imported inside the source that needs them, so the package runs on any machine.

`FrameCheck` judges the frames a camera does deliver: a black frame, or the same
picture over and over (a stuck driver, a frozen IP camera), is no reading and, when
frozen, no sign of life either. What to do about it (log, report, the watchdog) is the
daemon's business.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np

from edgemeter.config import CameraConfig

log = logging.getLogger(__name__)

# Larger images are refused before decoding: a 100-megapixel "photo" is an attack or a
# mistake, and decoding it would take a Pi's memory.
MAX_IMAGE_PIXELS = 50_000_000
# The largest file worth reading: an uncompressed 8-bit BGR image at the pixel limit,
# plus headers. Anything bigger is not a frame, and is never read into memory whole.
MAX_IMAGE_BYTES = 3 * MAX_IMAGE_PIXELS + (1 << 20)


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # HxWx3 uint8, BGR (OpenCV's order)
    ts: datetime  # UTC, when the frame was taken
    origin: str  # file path, device or "simulated", for logs
    truth: str | None = None  # known digits, simulated frames only


class SourceError(Exception):
    """A frame could not be had now; the source may recover."""


class SourceMissing(SourceError):
    """The software the configured source needs is not installed: no retry can help."""


class SourceEnded(Exception):
    """The source has no more frames (end of a file replay)."""


class ImageError(Exception):
    """An image file cannot be used; the message says why."""


class FrameSource(Protocol):
    def open(self) -> None: ...
    def read(self) -> Frame: ...
    def close(self) -> None: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Three-channel uint8, whatever the decoder gave (grey, BGRA, 16-bit)."""
    if image.dtype != np.uint8:
        # 16-bit PNGs/TIFFs: keep the top byte rather than clipping.
        image = (
            (image / 257).astype(np.uint8) if image.dtype == np.uint16 else image.astype(np.uint8)
        )
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file to BGR; raise ImageError naming the problem."""
    path = Path(path)
    data = _read_image_file(path)
    buffer = np.frombuffer(data, dtype=np.uint8)
    # OPENCV_IO_MAX_IMAGE_PIXELS (set in edgemeter/__init__) makes the decoder refuse a
    # small file that claims gigapixels before it allocates them. IMREAD_COLOR decodes
    # straight to 8-bit BGR: a 16-bit RGBA file at the pixel limit would otherwise take
    # gigabytes on its way there. Orientation tags are ignored: the window is set in
    # the frame as the camera delivers it.
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as err:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(err):
            raise ImageError(
                f"image too large: it claims more than {MAX_IMAGE_PIXELS} pixels (a camera"
                f" frame has a few million): {path}"
            ) from err
        raise ImageError(
            f"not a usable image ({str(err).strip().splitlines()[-1]}): {path}"
        ) from err
    if image is None or image.size == 0:
        raise ImageError(f"not a readable image (corrupt, truncated or unknown format): {path}")
    if image.shape[0] * image.shape[1] > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"image too large ({image.shape[1]}x{image.shape[0]}), at most"
            f" {MAX_IMAGE_PIXELS} pixels: {path}"
        )
    return as_bgr(image)


def _read_image_file(path: Path) -> bytes:
    """The bytes of a regular image file of plausible size; ImageError otherwise."""
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(f"is a directory, not an image: {path}")
        if not stat.S_ISREG(info.st_mode):
            # A FIFO would block the read for ever, /dev/zero would fill the memory.
            raise ImageError(f"not a regular file (a device, pipe or socket): {path}")
        if info.st_size > MAX_IMAGE_BYTES:
            raise ImageError(
                f"file too large ({info.st_size} bytes; an image of at most"
                f" {MAX_IMAGE_PIXELS} pixels fits in {MAX_IMAGE_BYTES}): {path}"
            )
        with path.open("rb") as handle:
            data = handle.read(MAX_IMAGE_BYTES + 1)
    except FileNotFoundError as err:
        raise ImageError(f"file not found: {path}") from err
    except OSError as err:
        raise ImageError(f"cannot read {path}: {err.strerror or err}") from err
    if not data:
        raise ImageError(f"empty file (0 bytes): {path}")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"file too large (grew past {MAX_IMAGE_BYTES} bytes): {path}")
    return data


class FilesSource:
    """A sorted glob of image files: replays of recorded frames, for tests and tuning."""

    def __init__(self, pattern: str, loop: bool = False, clock: Callable[[], datetime] = utcnow):
        self.pattern = pattern
        self.loop = loop
        self.clock = clock
        self.paths: list[str] = []
        self.index = 0

    def open(self) -> None:
        self.paths = sorted(glob.glob(self.pattern))
        if not self.paths:
            raise SourceError(
                f"camera.path matches no files: {self.pattern!r} (check the glob and the directory)"
            )
        self.index = 0

    def read(self) -> Frame:
        if self.index >= len(self.paths):
            if not self.loop:
                raise SourceEnded(f"replayed all {len(self.paths)} files of {self.pattern!r}")
            self.index = 0
        path = self.paths[self.index]
        self.index += 1
        total = len(self.paths)
        if total >= 20 and self.index % (total // 10) == 0:
            log.info("replay progress files=%d/%d", self.index, total)
        try:
            image = load_image(path)
        except ImageError as err:
            raise SourceError(str(err)) from err
        return Frame(image, self.clock(), path)

    def close(self) -> None:
        self.paths = []


# Longer than the gap between two frames of a burst on any camera, shorter than a cycle.
STREAM_IDLE_S = 2.0


class OpenCVSource:
    """A USB camera (device index) or a network stream (RTSP/HTTP URL) via OpenCV.

    A failed read closes the capture and the next read opens it again, so a camera
    that was unplugged, or a stream that dropped, comes back without a restart; the
    daemon spaces the attempts out. Network streams are opened through FFmpeg with
    open and read timeouts: a camera that accepts the connection and then sends
    nothing must not hang the loop (FFmpeg's own default is to wait for ever).

    A network stream left unread between cycles is opened afresh for the next burst:
    OpenCV reads a stream in order, so after an idle spell the next frame is the oldest
    one waiting in the socket buffers (on a 30 s cycle, minutes old), and many cameras
    drop a client that stops reading. An H.264 stream then waits for its next keyframe,
    within camera.timeout_s.
    """

    def __init__(
        self, device: int | str, timeout_s: float = 5.0, clock: Callable[[], datetime] = utcnow
    ):
        self.device = device
        self.timeout_s = timeout_s
        self.clock = clock
        self.capture: Any = None
        self.last_read_at = 0.0  # monotonic

    def open(self) -> None:
        if is_stream_url(self.device):
            timeout_ms = max(1, round(self.timeout_s * 1000))
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                timeout_ms,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                timeout_ms,
            ]
            self.capture = cv2.VideoCapture(self.device, cv2.CAP_FFMPEG, params)
        else:
            # A local device: V4L2 bounds its own waits (it gives up on a silent camera).
            self.capture = cv2.VideoCapture(self.device)
        if not self.capture.isOpened():
            self.capture.release()
            self.capture = None
            raise SourceError(
                f"cannot open camera.device={self.device!r}: check the index (ls /dev/video*)"
                " or the stream URL, that the camera is powered and reachable, and that the"
                " user is in group video"
            )

    def read(self) -> Frame:
        idle_s = time.monotonic() - self.last_read_at
        if self.capture is not None and is_stream_url(self.device) and idle_s > STREAM_IDLE_S:
            log.debug("stream idle for %.1f s, opening it afresh device=%s", idle_s, self.device)
            self.close()
        if self.capture is None:
            self.open()
        try:
            ok, image = self.capture.read()
        except cv2.error as err:  # a backend fault surfaces as an exception, not ok=False
            self.close()
            raise SourceError(f"camera.device={self.device!r} failed: {err}") from err
        if not ok or image is None:
            # Reopen on the next read: a USB camera that was unplugged comes back
            # under the same index, an RTSP stream after a network drop.
            self.close()
            raise SourceError(
                f"camera.device={self.device!r} returned no frame (the stream ended, sent"
                f" nothing for camera.timeout_s={self.timeout_s:g} s, or sent a frame that"
                " cannot be decoded): check the camera's power, cable and network"
            )
        self.last_read_at = time.monotonic()
        return Frame(as_bgr(image), self.clock(), f"opencv:{self.device}")

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None


def is_stream_url(device: int | str) -> bool:
    return isinstance(device, str) and "://" in device


class Picamera2Source:
    """The Raspberry Pi camera through picamera2 (libcamera), configured once."""

    def __init__(self, camera: CameraConfig, clock: Callable[[], datetime] = utcnow):
        self.camera = camera
        self.clock = clock
        self.picam2: Any = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2  # noqa: PLC0415  (needs libcamera: Pi only)
        except ImportError as err:
            raise SourceMissing(
                "camera.source is picamera2 but picamera2 cannot be imported"
                f" ({err}): on Raspberry Pi OS run `apt-get install python3-picamera2` and make"
                " the venv with --system-site-packages; elsewhere use camera.source: opencv"
            ) from err
        try:
            picam2 = Picamera2()
            # "RGB888" lays pixels out B,G,R in memory: exactly OpenCV's order.
            config = picam2.create_still_configuration(
                main={"size": (self.camera.width, self.camera.height), "format": "RGB888"},
                buffer_count=2,
            )
            picam2.configure(config)
            picam2.set_controls(self._controls(picam2))
            picam2.start()
        except Exception as err:  # libcamera raises RuntimeError, IndexError (no camera), ...
            raise SourceError(
                f"cannot start the Pi camera: {err} (check the ribbon cable, `rpicam-hello"
                " --list-cameras`, and that the user is in group video)"
            ) from err
        # Let exposure and white balance settle once, instead of at every grab.
        time.sleep(self.camera.settle_s)
        self.picam2 = picam2

    def _controls(self, picam2: Any) -> dict[str, Any]:
        controls: dict[str, Any] = {}
        if self.camera.exposure_us is not None:
            controls["ExposureTime"] = self.camera.exposure_us
            controls["AeEnable"] = False
        if self.camera.analogue_gain is not None:
            controls["AnalogueGain"] = self.camera.analogue_gain
        if self.camera.lens_position is not None and "AfMode" in picam2.camera_controls:
            controls["AfMode"] = 0  # manual: a fixed counter needs no hunting autofocus
            controls["LensPosition"] = self.camera.lens_position
        return controls

    def read(self) -> Frame:
        if self.picam2 is None:
            self.open()
        try:
            # Without wait= a loose ribbon cable blocks capture_array forever.
            image = self.picam2.capture_array("main", wait=self.camera.timeout_s)
        except Exception as err:
            self.close()
            raise SourceError(
                f"Pi camera gave no frame within {self.camera.timeout_s} s: {err}"
            ) from err
        return Frame(as_bgr(np.ascontiguousarray(image[:, :, :3])), self.clock(), "picamera2")

    def close(self) -> None:
        picam2, self.picam2 = self.picam2, None
        if picam2 is None:
            return
        for step in ("cancel_all_and_flush", "stop", "close"):
            try:
                getattr(picam2, step)()
            except Exception as err:  # closing a wedged camera must not hide the first error
                log.debug("picamera2 %s failed: %s", step, err)


# A real sensor never gives the same picture twice; neither does the simulated one, so
# it is not taken for a frozen camera when its counter stands still.
SIMULATED_SENSOR_NOISE = 1.5


class SimulatedSource:
    """The built-in simulated odometer: frames with known digits, no camera needed."""

    def __init__(
        self,
        camera: CameraConfig,
        digits: int,
        frames_per_value: int = 1,
        clock: Callable[[], datetime] = utcnow,
    ):
        from edgemeter import simulate  # noqa: PLC0415  (fonts and renderer load on demand)

        self.simulate = simulate
        sim = camera.simulated
        self.rng = np.random.default_rng(sim.seed)
        self.style = dataclasses.replace(simulate.default_style(), digits=digits)
        self.odometer = simulate.Odometer(sim.start, sim.per_frame, self.rng, sim.roll_fraction)
        self.hard = sim.hard
        self.clock = clock
        # A burst of frames is taken within a second, when a real counter has not moved:
        # the simulated one holds its value for the frames of one burst.
        self.frames_per_value = frames_per_value
        self.frames = 0
        self.value = sim.start

    def resume(self, value: int) -> None:
        """Carry on from the last accepted value (raw digits): restarted at `start`,
        the demo's readings would go backwards and the judge would refuse them."""
        self.odometer.resume(value)

    def open(self) -> None:
        pass

    def read(self) -> Frame:
        conditions = (
            self.simulate.random_conditions(self.rng, hard=True)
            if self.hard
            else self.simulate.Conditions(noise=SIMULATED_SENSOR_NOISE)
        )
        if self.frames % self.frames_per_value == 0:
            self.value = self.odometer.next_value()
        self.frames += 1
        frame = self.simulate.render(self.style, self.value, conditions, self.rng)
        return Frame(frame.image, self.clock(), "simulated", truth=frame.truth)

    def close(self) -> None:
        pass


# ------------------------------------------------------- is the camera really delivering?

# Frames are compared on every 8th pixel in each direction: a few tens of thousands of
# values on a Pi camera frame, cheap every cycle, and unaveraged, so sensor noise shows.
SAMPLE_STEP = 8
# Mean absolute difference (grey levels, 0..255) at or under which two frames are the
# same picture. Sensor noise alone moves an unaveraged pixel by a level or more from one
# frame to the next; a stuck driver, or an IP camera re-sending its last JPEG, gives 0.
# A frozen picture with a ticking clock overlay stays far below this too.
STILL_MAX_DIFF = 0.2
# A frame whose brightest 1 % of samples stay below this grey level shows nothing lit.
BLACK_LEVEL = 32


@dataclass(frozen=True)
class FrameFault:
    """Why a delivered frame must not be read: `kind` for logs, `reason` for reports."""

    kind: Literal["black", "frozen"]
    reason: str
    fix: str


@dataclass(frozen=True)
class FrameHealth:
    """One frame judged: `fresh` when it shows the camera alive; `fault` when unusable."""

    fresh: bool
    fault: FrameFault | None


BLACK = FrameFault(
    "black",
    "the frame is black",
    "check the lighting at the counter, the lens cap, and camera.exposure_us",
)


def _sample(image: np.ndarray) -> np.ndarray:
    return image[::SAMPLE_STEP, ::SAMPLE_STEP]


def is_black(image: np.ndarray) -> bool:
    return float(np.percentile(_sample(image), 99)) < BLACK_LEVEL


def same_picture(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two sampled frames are one picture, up to less than sensor noise."""
    if a.shape != b.shape:
        return False
    return float(np.abs(a.astype(np.int16) - b).mean()) <= STILL_MAX_DIFF


class FrameCheck:
    """Judges each delivered frame: black, frozen, or a fresh picture.

    A stuck driver, a hung ISP or an IP camera whose encoder froze go on "delivering"
    frames; only comparing each with the one before shows that nothing new arrives.
    `live` is false for a replay of files, where the same picture twice is legitimate.
    Time is an argument (monotonic seconds), so the rule is testable without waiting.
    """

    def __init__(self, frozen_after_s: float, live: bool) -> None:
        self.frozen_after_s = frozen_after_s
        self.live = live
        self._previous: np.ndarray | None = None
        self._changed_at = 0.0

    def check(self, image: np.ndarray, now: float) -> FrameHealth:
        if is_black(image):
            # Darkness is no hung camera (a restart brings no light) and a dark frame
            # may well repeat exactly, so it counts as fresh, never as frozen.
            self._previous = None
            return FrameHealth(fresh=True, fault=BLACK)
        if not self.live:
            return FrameHealth(fresh=True, fault=None)
        current = _sample(image).copy()
        previous, self._previous = self._previous, current
        if previous is None or not same_picture(current, previous):
            self._changed_at = now
            return FrameHealth(fresh=True, fault=None)
        still_s = now - self._changed_at
        if still_s < self.frozen_after_s:
            # A short run of equal frames is normal for a compressed stream of a still
            # scene (skipped blocks); only a long one is a frozen camera.
            return FrameHealth(fresh=False, fault=None)
        fault = FrameFault(
            "frozen",
            f"the camera is frozen (the same picture for {still_s:.0f} s)",
            "check the camera cable and the driver (dmesg); a restart of the service"
            " often brings a wedged camera back",
        )
        return FrameHealth(fresh=False, fault=fault)


def open_source(camera: CameraConfig, digits: int, burst: int = 1) -> FrameSource:
    """The configured source, not yet opened; `burst` frames are taken per cycle."""
    if camera.source == "files":
        assert camera.path is not None  # config validation requires it
        return FilesSource(camera.path, loop=camera.loop)
    if camera.source == "opencv":
        return OpenCVSource(camera.device, camera.timeout_s)
    if camera.source == "picamera2":
        return Picamera2Source(camera)
    return SimulatedSource(camera, digits, frames_per_value=burst)
