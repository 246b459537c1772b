"""The daemon: wires source -> window -> ocr -> plausibility -> publish, with state.

Each cycle grabs a short burst of frames, reads each, lets a strict majority decide,
judges the result against what was accepted before, publishes and persists. The
stages do the work; this module only sequences them, handles signals and time, and
turns failures into log lines instead of a crash loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import cv2
import numpy as np

from edgemeter import __version__
from edgemeter.config import Config
from edgemeter.history import History, HistoryError
from edgemeter.notify import Notifier
from edgemeter.ocr import Cells, NoReading, OcrEngine, OcrUnavailable, Reading, make_engine
from edgemeter.outbox import Outbox, OutboxError
from edgemeter.plausibility import (
    Memory,
    Rules,
    Verdict,
    judge,
    to_units,
    vote,
    worth_more_frames,
)
from edgemeter.publish import Publisher, reading_payload
from edgemeter.snapshot import draw_overlay
from edgemeter.source import (
    Frame,
    FrameCheck,
    FrameFault,
    FrameSource,
    SimulatedSource,
    SourceEnded,
    SourceError,
    SourceMissing,
    open_source,
)
from edgemeter.state import StateError, StateStore
from edgemeter.web import Board, WebError, WebServer
from edgemeter.window import DigitWindow, WindowError, crop

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2  # systemd's RestartPreventExitStatus: restarting cannot help
EXIT_ENGINE = 3

# How long a clean stop may spend delivering what is owed to the broker.
STOP_FLUSH_S = 2.0
WEB_FRAME_WIDTH = 1024


class StopRequest:
    """A request to stop that a signal handler can make.

    Not a threading.Event: a handler runs on the main thread between two bytecodes, and
    if that is inside Event.wait, which holds the Event's lock, Event.set waits for
    that lock for ever. A script that signals a loop of Event.wait(0) hangs within 50
    signals. Here the handler only sets a flag and writes a byte to a pipe that a wait
    selects on, and neither takes a lock.
    """

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self._requested = False
        self._closed = False
        self._wakeup_read, self._wakeup_write = os.pipe()
        os.set_blocking(self._wakeup_write, False)

    def set(self, signum: int | None = None) -> None:
        if signum is not None:
            self.signal = signal.Signals(signum)
        self._requested = True
        if self._closed:  # a late signal: its descriptor number may be another file's now
            return
        with contextlib.suppress(BlockingIOError):  # a full pipe already wakes a wait
            os.write(self._wakeup_write, b"\0")

    def is_set(self) -> bool:
        return self._requested

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to timeout_s, or less if a stop is requested; whether one was."""
        if not self._requested and not self._closed:
            # A request made after the check has written its byte: select returns at once.
            select.select([self._wakeup_read], [], [], max(0.0, timeout_s))
        return self._requested

    def close(self) -> None:
        # The flag first: a handler runs on this thread, between two of its bytecodes.
        self._closed = True
        for fd in (self._wakeup_read, self._wakeup_write):
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass(frozen=True)
class Cycle:
    """What one cycle saw: the last frame, its window crop, and the judged result."""

    frame: Frame
    window_image: np.ndarray | None
    reading: Reading | NoReading
    verdict: Verdict
    cells: Cells | None = None  # where the engine cut the last frame's drums, if it says


class Daemon:
    def __init__(
        self,
        config: Config,
        engine: OcrEngine,
        source: FrameSource,
        publisher: Publisher | None,
        store: StateStore,
        notifier: Notifier,
        history: History | None = None,
        board: Board | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.source = source
        self.publisher = publisher
        self.store = store
        self.notifier = notifier
        self.history = history
        self.board = board
        self.last_errors: dict[str, str] = {}
        self.window = DigitWindow.from_config(config.window)
        self.rules = Rules.from_config(config.meter, config.plausibility)
        self.stop_request = StopRequest()
        self.memory = Memory()
        # When the camera last showed it is alive: a frame that is new, not a repeat.
        self.last_frame_at = time.monotonic()
        live = config.camera.source != "files"  # a replay may repeat a picture
        self.frame_check = FrameCheck(config.camera.frozen_after_s, live)
        self.frame_fault: str | None = None
        self.last_state_error: str | None = None
        self.saved_key: tuple[int | None, datetime | None] = (None, None)
        # A replay of recorded files is one frame per cycle: each file is its own moment.
        self.burst = 1 if config.camera.source == "files" else config.plausibility.burst

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        # No logging here: a handler that writes to a log stream the main thread is
        # writing to raises "reentrant call". shutdown() says which signal it was.
        self.stop_request.set(signum)

    def load_state(self) -> None:
        try:
            memory, warning = self.store.load()
        except StateError as err:
            # Keep metering: a broken state directory must not become a crash loop.
            log.error("%s; starting without the previous value", err)
            memory, warning = Memory(), None
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

    def grab_burst(self, count: int | None = None) -> list[Frame]:
        return [self.source.read() for _ in range(self.burst if count is None else count)]

    def cycle(self, frames: list[Frame], more: Callable[[int], list[Frame]] | None = None) -> Cycle:
        """Read a burst and judge what it shows. A burst whose sure frames agree but are
        no majority takes one more burst from `more`, and the vote is over both."""
        gate = self.rules.min_confidence
        readings, window_image, cells = self.read_frames(frames)
        if more is not None and worth_more_frames(readings, gate):
            try:
                extra = more(len(frames))
            except (SourceError, SourceEnded) as err:
                log.info("second burst not taken: %s", err)
                extra = []
            if extra:
                log.debug("second burst frames=%d", len(extra))
                read, window_image, cells = self.read_frames(extra)
                readings, frames = readings + read, frames + extra
        reading = vote(readings, gate)
        verdict = judge(self.memory, reading, frames[-1].ts, self.rules)
        return Cycle(frames[-1], window_image, reading, verdict, cells)

    def read_frames(
        self, frames: list[Frame]
    ) -> tuple[list[Reading | NoReading], np.ndarray | None, Cells | None]:
        """Each frame's reading, and the last frame's window and cells (for the page)."""
        readings: list[Reading | NoReading] = []
        window_image = None
        cells = None
        digits = self.config.meter.digits
        for frame in frames:
            try:
                window_image = crop(frame.image, self.window)
            except WindowError as err:
                readings.append(NoReading(str(err)))
                cells = None
                continue
            # The cells come with the reading at no extra cost: the web page shows them.
            read, cells = self.engine.read_seen(window_image, digits)
            readings.append(read)
        return readings, window_image, cells

    def settle(self, cycle: Cycle) -> None:
        """Publish, record and persist what a cycle decided."""
        verdict = cycle.verdict
        if verdict.accepted and verdict.value is not None:
            if verdict.value != self.memory.value:
                self.on_new_value(cycle, verdict.value)
            else:
                log.debug("unchanged value=%s", self.units(verdict.value))
            self.notifier.status(f"value={self.units(verdict.value)} {self.config.meter.unit}")
            if self.board is not None:
                raw = f"{verdict.value:0{self.config.meter.digits}d}"
                confidence = cycle.reading.confidence if isinstance(cycle.reading, Reading) else 0
                self.board.update_accepted(
                    self.units(verdict.value),
                    raw,
                    self.config.meter.unit,
                    cycle.frame.ts,
                    confidence,
                )
        else:
            self.on_rejected(cycle, verdict.reason or "rejected")
        if verdict.event:
            self.on_event(cycle, verdict.event)
        if self.board is not None:
            self.show_frame(cycle)
        self.memory = verdict.memory
        self.persist()

    def on_new_value(self, cycle: Cycle, raw_value: int) -> None:
        # Only changes are published: the reading topic is retained, so a subscriber
        # always has the latest, and the outbox and history stay small.
        ts, value = cycle.frame.ts, self.units(raw_value)
        raw = f"{raw_value:0{self.config.meter.digits}d}"
        reading = cycle.reading
        confidence = reading.confidence if isinstance(reading, Reading) else 0.0
        log.info("accepted value=%s raw=%s confidence=%.2f", value, raw, confidence)
        if self.publisher is not None:
            payload = reading_payload(value, raw, self.config.meter.unit, ts, confidence)
            if not self.publisher.publish_reading(payload):
                # Re-read after a crash cut the state save short: already queued and
                # recorded with its first time.
                return
        self.guard("history", lambda h: h.record_accepted(ts, value, raw, confidence))

    def on_rejected(self, cycle: Cycle, reason: str) -> None:
        ts, raw = cycle.frame.ts, cycle.verdict.raw
        log.info("rejected raw=%s reason=%s", raw, reason)
        if self.publisher is not None:
            self.publisher.publish_rejected(_json({"raw": raw, "reason": reason, "ts": _iso(ts)}))
        self.guard("history", lambda h: h.record_rejected(ts, raw, reason, cycle.window_image))
        if self.board is not None:
            self.board.add_rejection(raw, reason, ts)

    def show_frame(self, cycle: Cycle) -> None:
        """The frame with its window, small and compressed, for the web page."""
        assert self.board is not None
        verdict = cycle.verdict
        label = (
            f"{self.units(verdict.value)} {self.config.meter.unit}"
            if verdict.accepted and verdict.value is not None
            else f"rejected: {verdict.reason}"
        )
        # Small: a Pi Zero pays tens of ms to encode a full camera frame every cycle.
        image = draw_overlay(
            cycle.frame.image, self.window, cycle.cells, label, max_width=WEB_FRAME_WIDTH
        )
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if ok:
            self.board.update_frame(jpeg.tobytes(), cycle.frame.ts)

    def on_event(self, cycle: Cycle, event: str) -> None:
        ts, raw_value = cycle.frame.ts, cycle.verdict.value
        value = self.units(raw_value) if raw_value is not None else None
        log.warning("event %s", event)
        if self.publisher is not None:
            self.publisher.publish_event(_json({"event": event, "value": value, "ts": _iso(ts)}))
        self.guard("history", lambda h: h.record_event(ts, event, value))

    def guard(self, name: str, action: Callable[[History], None]) -> None:
        """Run a history write; its failure is logged once and never stops the meter."""
        if self.history is None:
            return
        try:
            action(self.history)
        except HistoryError as err:
            if str(err) != self.last_errors.get(name):
                log.error("%s", err)
            self.last_errors[name] = str(err)
        else:
            self.last_errors.pop(name, None)

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
                log.error("%s", err)
            self.last_state_error = str(err)
        else:
            self.saved_key = key
            if self.last_state_error is not None:
                log.info("state writable again path=%s", self.store.path)
            self.last_state_error = None

    def open_source(self) -> bool:
        """Open the source, retrying with backoff until it opens or we are told to stop."""
        delay = 1.0
        while not self.stop_request.is_set():
            try:
                self.source.open()
            except SourceMissing:
                raise
            except SourceError as err:
                log.error("camera %s; retrying in %.0f s", err, delay)
                self.stop_request.wait(delay)
                delay = min(delay * 2, 60.0)
            else:
                return True
        return False

    def loop(self) -> int:
        interval = self.config.camera.interval_s
        failures = 0
        while not self.stop_request.is_set():
            started = time.monotonic()
            try:
                frames = self.grab_burst()
            except SourceEnded as end:
                log.info("source ended: %s", end)
                return EXIT_OK
            except SourceError as err:
                failures += 1
                log.warning("camera no frame failures=%d: %s", failures, err)
                self.report_camera(f"camera: {err}", _now())
                self.feed_watchdog()
                self.stop_request.wait(min(2.0**failures, max(interval, 1.0), 30.0))
                continue
            if failures:
                log.info("camera frames again after failures=%d", failures)
            failures = 0
            fault = self.inspect(frames)
            if fault is None:
                self.settle(self.cycle(frames, more=self.grab_burst))
            else:
                self.report_camera(f"camera: {fault.reason}", frames[-1].ts)
            self.feed_watchdog()
            self.stop_request.wait(max(0.0, interval - (time.monotonic() - started)))
        return EXIT_OK

    def inspect(self, frames: list[Frame]) -> FrameFault | None:
        """Whether the burst can be read: not black, not a frozen picture."""
        now = time.monotonic()
        fault = None
        for frame in frames:
            health = self.frame_check.check(frame.image, now)
            if health.fresh:
                self.last_frame_at = now
            fault = health.fault or fault
        kind = fault.kind if fault is not None else None
        # One warning when a fault starts, one line when it ends: not one per cycle.
        if fault is not None and kind != self.frame_fault:
            log.warning("camera %s: %s; %s", fault.kind, fault.reason, fault.fix)
        elif fault is None and self.frame_fault is not None:
            log.info("camera %s no more: frames are read again", self.frame_fault)
        self.frame_fault = kind
        return fault

    def report_camera(self, reason: str, ts: datetime) -> None:
        """A cycle without a usable frame: on the rejected topic, the web page and systemd."""
        if self.publisher is not None:
            self.publisher.publish_rejected(_json({"raw": None, "reason": reason, "ts": _iso(ts)}))
        if self.board is not None:
            self.board.add_rejection(None, reason, ts)
        self.notifier.status(reason)

    def feed_watchdog(self) -> None:
        # A camera that stays away, or keeps sending one frozen picture, stops the
        # watchdog pings, so systemd restarts us: a fresh process often brings back a
        # wedged camera.
        if time.monotonic() - self.last_frame_at < self.config.watchdog.frame_timeout_s:
            self.notifier.watchdog()

    def drain(self, until_stopped: bool) -> None:
        """Deliver what is owed: at a replay's end all of it, at a signal what fits in time."""
        if self.publisher is None:
            return
        if until_stopped:
            while not self.stop_request.is_set() and not self.publisher.flush(1.0):
                log.info("waiting for the broker to deliver the outbox")
        self.publisher.stop(STOP_FLUSH_S)

    def run(self) -> int:
        self.load_state()
        if isinstance(self.source, SimulatedSource) and self.memory.value is not None:
            self.source.resume(self.memory.value)
        if self.publisher is not None:
            self.publisher.start()
        try:
            opened = self.open_source()
        except SourceMissing as err:
            # Retrying would only keep systemd waiting for READY until its start limit;
            # exiting as a configuration error fails the unit at once with this line.
            log.error("camera %s", err)
            self.shutdown(replay_ended=False)
            return EXIT_CONFIG
        if not opened:
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
            self.shutdown(replay_ended=not self.stop_request.is_set())
        return status

    def shutdown(self, replay_ended: bool) -> None:
        if self.stop_request.signal is not None:
            log.info("stopping signal=%s", self.stop_request.signal.name)
        self.notifier.stopping()
        self.source.close()
        self.drain(until_stopped=replay_ended)
        self.notifier.close()
        self.stop_request.close()
        log.info("stopped")


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json(payload: dict[str, object]) -> str:
    return json.dumps(payload, separators=(",", ":"))


def state_dir(config: Config) -> Path:
    return Path(config.state.path).expanduser().parent


def open_outbox(config: Config) -> Outbox:
    path = state_dir(config) / "outbox.sqlite"
    try:
        return Outbox(path, config.mqtt.outbox_max)
    except (OutboxError, sqlite3.Error) as err:
        # Readings must still flow: keep the outbox in the runtime directory (RAM on
        # a Pi: lost at a reboot, kept across a daemon restart) until this is fixed.
        fallback = Path(tempfile.gettempdir()) / f"edgemeter-{config.meter.id}-outbox.sqlite"
        log.error(
            "%s; keeping undelivered readings in %s (not kept across a reboot)"
            " until the state directory is writable",
            err,
            fallback,
        )
        return Outbox(fallback, config.mqtt.outbox_max)


def open_web(config: Config, history: History | None) -> tuple[Board | None, WebServer | None]:
    if not config.http.enabled:
        return None, None
    board = Board()
    web = WebServer(
        config.http, board, history, config.meter.name or config.meter.id, config.meter.unit
    )
    try:
        web.start()
    except WebError as err:
        log.error("http %s; running without the web page", err)
        return None, None
    log.info("http page url=%s", web.url)
    return board, web


def open_history(config: Config) -> History | None:
    if not config.history.enabled:
        return None
    try:
        return History(state_dir(config), config.history)
    except HistoryError as err:
        log.error("%s; running without history", err)
        return None


def single_threaded() -> None:
    """Run OpenCV on the calling thread only. A window and its cells are small: worker
    threads cost more CPU than they save (7.9 against 7.5 CPU ms per frame measured),
    and the daemon shares a Pi with other services."""
    cv2.setNumThreads(1)


def run(config: Config) -> int:
    """`edgemeter run`: build the stages from the config and loop until stopped."""
    single_threaded()
    try:
        engine = make_engine(config.ocr, config.plausibility.min_confidence)
    except OcrUnavailable as err:
        log.error("ocr %s", err)
        return EXIT_ENGINE
    store = StateStore(Path(config.state.path).expanduser())
    publisher = None
    if config.mqtt.enabled:
        publisher = Publisher(config.mqtt, config.meter, open_outbox(config), __version__)
    source = open_source(config.camera, config.meter.digits, config.plausibility.burst)
    history = open_history(config)
    board, web = open_web(config, history)
    daemon = Daemon(config, engine, source, publisher, store, Notifier(), history, board)
    signal.signal(signal.SIGTERM, daemon.request_stop)
    signal.signal(signal.SIGINT, daemon.request_stop)
    try:
        return daemon.run()
    finally:
        if web is not None:
            web.stop()
        if history is not None:
            history.close()
