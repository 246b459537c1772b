"""The daemon: wires source -> window -> ocr -> plausibility -> publish, with state.

Each cycle grabs a short burst of frames, reads each, lets a strict majority decide,
judges the result against what was accepted before, publishes and persists. The
stages do the work; this module only sequences them, handles signals and time, and
turns failures into log lines instead of a crash loop.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from edgemeter import __version__
from edgemeter.config import Config
from edgemeter.notify import Notifier
from edgemeter.ocr import NoReading, OcrEngine, OcrUnavailable, Reading, make_engine
from edgemeter.outbox import Outbox
from edgemeter.plausibility import Memory, Rules, Verdict, judge, to_units, vote
from edgemeter.publish import Publisher, reading_payload
from edgemeter.source import Frame, FrameSource, SourceEnded, SourceError, open_source
from edgemeter.state import StateError, StateStore
from edgemeter.window import DigitWindow, WindowError, crop

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_ENGINE = 3

# How long a clean stop may spend delivering what is owed to the broker.
STOP_FLUSH_S = 2.0


@dataclass(frozen=True)
class Cycle:
    """What one cycle saw: the frames' time and the judged result."""

    frame: Frame
    reading: Reading | NoReading
    verdict: Verdict


def read_frame(
    frame: Frame, window: DigitWindow, engine: OcrEngine, digits: int
) -> Reading | NoReading:
    try:
        image = crop(frame.image, window)
    except WindowError as err:
        return NoReading(str(err))
    return engine.read(image, digits)


class Daemon:
    def __init__(
        self,
        config: Config,
        engine: OcrEngine,
        source: FrameSource,
        publisher: Publisher | None,
        store: StateStore,
        notifier: Notifier,
    ) -> None:
        self.config = config
        self.engine = engine
        self.source = source
        self.publisher = publisher
        self.store = store
        self.notifier = notifier
        self.window = DigitWindow.from_config(config.window)
        self.rules = Rules.from_config(config.meter, config.plausibility)
        self.stop_event = threading.Event()
        self.memory = Memory()
        self.last_frame_at = time.monotonic()
        self.last_state_error: str | None = None
        self.saved_key: tuple[int | None, datetime | None] = (None, None)
        # A replay of recorded files is one frame per cycle: each file is its own moment.
        self.burst = 1 if config.camera.source == "files" else config.plausibility.burst

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("stopping signal=%s", signal.Signals(signum).name)
        self.stop_event.set()

    def load_state(self) -> None:
        memory, warning = self.store.load()
        if warning:
            log.warning("state %s", warning)
        self.memory = memory
        self.saved_key = (memory.value, memory.accepted_at)
        if memory.value is not None:
            log.info(
                "resuming value=%s accepted_at=%s",
                self.units(memory.value),
                memory.accepted_at.isoformat() if memory.accepted_at else None,
            )

    def units(self, raw: int) -> float:
        return to_units(raw, self.config.meter.decimals)

    def grab_burst(self) -> list[Frame]:
        frames = []
        for _ in range(self.burst):
            frames.append(self.source.read())
        return frames

    def cycle(self, frames: list[Frame]) -> Cycle:
        digits = self.config.meter.digits
        readings = [read_frame(f, self.window, self.engine, digits) for f in frames]
        reading = vote(readings)
        frame = frames[-1]
        verdict = judge(self.memory, reading, frame.ts, self.rules)
        return Cycle(frame, reading, verdict)

    def settle(self, cycle: Cycle) -> None:
        """Publish and persist what a cycle decided."""
        verdict, previous = cycle.verdict, self.memory.value
        ts = cycle.frame.ts
        if verdict.accepted and verdict.value is not None:
            confidence = cycle.reading.confidence if isinstance(cycle.reading, Reading) else 0.0
            raw = f"{verdict.value:0{self.config.meter.digits}d}"
            if verdict.value != previous:
                # Only changes are published: the reading topic is retained, so a
                # subscriber always has the latest, and the outbox stays small.
                log.info(
                    "accepted value=%s raw=%s confidence=%.2f",
                    self.units(verdict.value),
                    raw,
                    confidence,
                )
                if self.publisher is not None:
                    self.publisher.publish_reading(
                        reading_payload(
                            self.units(verdict.value), raw, self.config.meter.unit, ts, confidence
                        )
                    )
            else:
                log.debug("unchanged value=%s", self.units(verdict.value))
            self.notifier.status(f"value={self.units(verdict.value)} {self.config.meter.unit}")
        else:
            log.info("rejected raw=%s reason=%s", verdict.raw, verdict.reason)
            if self.publisher is not None:
                self.publisher.publish_rejected(
                    _json({"raw": verdict.raw, "reason": verdict.reason, "ts": _iso(ts)})
                )
        if verdict.event:
            log.warning("event %s", verdict.event)
            if self.publisher is not None:
                value = self.units(verdict.value) if verdict.value is not None else None
                self.publisher.publish_event(
                    _json({"event": verdict.event, "value": value, "ts": _iso(ts)})
                )
        self.memory = verdict.memory
        self.persist()

    def persist(self) -> None:
        # Write only when the accepted value changes: an SD card wears, and a run of
        # rejected readings (the challenger) is cheap to rebuild after a restart.
        key = (self.memory.value, self.memory.accepted_at)
        if key == self.saved_key:
            return
        try:
            self.store.save(self.memory)
        except StateError as err:
            # Keep reading and publishing: a full SD card must not stop the meter.
            # Log once per distinct problem, not every cycle.
            if str(err) != self.last_state_error:
                log.error("state %s", err)
            self.last_state_error = str(err)
        else:
            self.saved_key = key
            if self.last_state_error is not None:
                log.info("state writable again path=%s", self.store.path)
            self.last_state_error = None

    def open_source(self) -> bool:
        """Open the source, retrying with backoff until it opens or we are told to stop."""
        delay = 1.0
        while not self.stop_event.is_set():
            try:
                self.source.open()
            except SourceError as err:
                log.error("camera %s; retrying in %.0f s", err, delay)
                self.stop_event.wait(delay)
                delay = min(delay * 2, 60.0)
            else:
                return True
        return False

    def loop(self) -> int:
        interval = self.config.camera.interval_s
        timeout = self.config.watchdog.frame_timeout_s
        failures = 0
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                frames = self.grab_burst()
            except SourceEnded as end:
                log.info("source ended: %s", end)
                return EXIT_OK
            except SourceError as err:
                failures += 1
                log.warning("camera no frame failures=%d: %s", failures, err)
                if self.publisher is not None:
                    self.publisher.publish_rejected(
                        _json({"raw": None, "reason": f"camera: {err}", "ts": _iso(_now())})
                    )
                # A camera that stays away stops the watchdog pings, so systemd
                # restarts us: a fresh process often brings back a wedged camera.
                if time.monotonic() - self.last_frame_at < timeout:
                    self.notifier.watchdog()
                self.stop_event.wait(min(2.0**failures, max(interval, 1.0), 30.0))
                continue
            failures = 0
            self.last_frame_at = time.monotonic()
            self.settle(self.cycle(frames))
            self.notifier.watchdog()
            self.stop_event.wait(max(0.0, interval - (time.monotonic() - started)))
        return EXIT_OK

    def drain(self, until_stopped: bool) -> None:
        """Deliver what is owed: at a replay's end all of it, at a signal what fits in time."""
        if self.publisher is None:
            return
        if until_stopped:
            while not self.stop_event.is_set() and not self.publisher.flush(1.0):
                log.info("waiting for the broker to deliver the outbox")
        self.publisher.stop(STOP_FLUSH_S)

    def run(self) -> int:
        self.load_state()
        if self.publisher is not None:
            self.publisher.start()
        if not self.open_source():
            self.shutdown(replay_ended=False)
            return EXIT_OK
        self.notifier.ready(f"reading from {self.config.camera.source}")
        log.info(
            "started version=%s source=%s digits=%d interval_s=%g",
            __version__,
            self.config.camera.source,
            self.config.meter.digits,
            self.config.camera.interval_s,
        )
        try:
            status = self.loop()
        finally:
            self.shutdown(replay_ended=not self.stop_event.is_set())
        return status

    def shutdown(self, replay_ended: bool) -> None:
        self.notifier.stopping()
        self.source.close()
        self.drain(until_stopped=replay_ended)
        self.notifier.close()
        log.info("stopped")


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json(payload: dict[str, object]) -> str:
    return json.dumps(payload, separators=(",", ":"))


def state_dir(config: Config) -> Path:
    return Path(config.state.path).expanduser().parent


def run(config: Config) -> int:
    """`edgemeter run`: build the stages from the config and loop until stopped."""
    try:
        engine = make_engine(config.ocr)
    except OcrUnavailable as err:
        log.error("ocr %s", err)
        return EXIT_ENGINE
    store = StateStore(Path(config.state.path).expanduser())
    publisher = None
    if config.mqtt.enabled:
        outbox = Outbox(state_dir(config) / "outbox.sqlite", config.mqtt.outbox_max)
        publisher = Publisher(config.mqtt, config.meter, outbox, __version__)
    source = open_source(config.camera, config.meter.digits, config.plausibility.burst)
    daemon = Daemon(config, engine, source, publisher, store, Notifier())
    signal.signal(signal.SIGTERM, daemon.request_stop)
    signal.signal(signal.SIGINT, daemon.request_stop)
    return daemon.run()
