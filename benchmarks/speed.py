"""Speed and memory: the whole path per frame, and a real daemon process over a replay.

Per frame, for each engine the path is the daemon's own `Daemon.cycle` on a burst of
one frame: crop the window, preprocess, OCR, vote, judge (the verdict). For the
naive baseline it is crop, Otsu, one pytesseract call (a Tesseract process) and its
length check. The paths take turns frame by frame, in a rotating order, so that a
change in the machine's load falls on all of them alike; wall time is
`time.perf_counter`, CPU time is this process's plus its waited-for children's (the
baseline's Tesseract processes).

Memory is measured where it matters: `python -m edgemeter run` as its own process,
replaying an installation's frames from files (`camera.source: files`) into a real
Mosquitto on 127.0.0.1, with the history on, as a user would run it. Its peak RSS is
the kernel's high-water mark, VmHWM in /proc/PID/status, sampled every 50 ms until it
exits (ru_maxrss is no use here: it counts the forked copy of this benchmark before
the exec). Its CPU seconds per reading are the difference
between a replay of N frames and one of a single frame (start-up, imports and model
loading cancel out), divided by N - 1.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmarks.hardset import Stream
from benchmarks.scoring import BASELINE, baseline_read
from benchmarks.stream import ReplayDaemon, replay_config
from edgemeter.ocr import OcrEngine
from edgemeter.source import Frame
from edgemeter.window import DigitWindow, crop

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
DAEMON_TIMEOUT_S = 600.0
POLL_S = 0.05


@dataclass
class Timing:
    wall_ms: list[float] = dataclasses.field(default_factory=list)
    cpu_ms: list[float] = dataclasses.field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.wall_ms) if self.wall_ms else 0.0

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.wall_ms, 90)) if self.wall_ms else 0.0

    @property
    def cpu_median_ms(self) -> float:
        return statistics.median(self.cpu_ms) if self.cpu_ms else 0.0

    @property
    def cpu_mean_ms(self) -> float:
        """What a reading costs on average: an engine that does more on hard frames
        only (classifier+tesseract) shows it here, not in the median."""
        return statistics.fmean(self.cpu_ms) if self.cpu_ms else 0.0


def cpu_seconds() -> float:
    """CPU time of this process and of the children it has waited for."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


Step = Callable[[Frame], object]


def _cycle_of(daemon: ReplayDaemon) -> Step:
    def step(frame: Frame) -> object:
        return daemon.cycle([frame])

    return step


def _paths(stream: Stream, engines: dict[str, OcrEngine], workdir: Path) -> dict[str, Step]:
    paths: dict[str, Step] = {}
    for name, engine in engines.items():
        state_dir = workdir / f"{stream.label}-{name}".replace(" ", "_")
        state_dir.mkdir()
        daemon = ReplayDaemon(replay_config(stream, name, state_dir), engine, state_dir)
        paths[name] = _cycle_of(daemon)
    window, digits = DigitWindow(*stream.window), stream.style.digits
    paths[BASELINE] = lambda frame: baseline_read(crop(frame.image, window), digits)
    return paths


def time_paths(
    streams: list[Stream], engines: dict[str, OcrEngine], frames_per_stream: int
) -> dict[str, Timing]:
    """Wall and CPU ms per frame of every path, on the first frames of each stream."""
    timings = {name: Timing() for name in [*engines, BASELINE]}
    turn = 0
    with tempfile.TemporaryDirectory(prefix="edgemeter-speed-") as tmp:
        for stream in streams:
            one_by_one = dataclasses.replace(stream, burst=1, cycles=frames_per_stream + 1)
            paths = _paths(one_by_one, engines, Path(tmp))
            for index, cycle in enumerate(one_by_one):
                shot = cycle.shots[0]
                frame = Frame(shot.image, shot.ts, "benchmark", truth=shot.truth)
                names = list(paths)
                names = names[turn % len(names) :] + names[: turn % len(names)]
                turn += 1
                for name in names:
                    cpu, wall = cpu_seconds(), time.perf_counter()
                    paths[name](frame)
                    wall_ms = (time.perf_counter() - wall) * 1000
                    cpu_ms = (cpu_seconds() - cpu) * 1000
                    if index == 0:
                        continue  # warm-up: first call of an engine on a new window size
                    timings[name].wall_ms.append(wall_ms)
                    timings[name].cpu_ms.append(cpu_ms)
    return timings


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class DaemonRun:
    frames: int
    exit_code: int
    peak_rss_mb: float  # VmHWM, last sample before exit
    cpu_s: float
    wall_s: float
    accepted: int


def _vm_hwm_kb(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _write_frames(stream: Stream, directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for cycle in stream:
        for shot in cycle.shots:
            cv2.imwrite(str(directory / f"frame-{count:05d}.png"), shot.image)
            count += 1
    return count


def run_daemon(stream: Stream, engine: str, frames: int, port: int, workdir: Path) -> DaemonRun:
    """`python -m edgemeter run` on a files replay of `frames` frames of `stream`."""
    if str(TESTS) not in sys.path:
        # The daemon launcher and its config writer live with the end-to-end tests.
        sys.path.insert(0, str(TESTS))
    from replay import start_daemon, write_config

    one_by_one = dataclasses.replace(stream, burst=1, cycles=frames)
    written = _write_frames(one_by_one, workdir / "frames")
    x, y, width, height = stream.window
    config = write_config(
        workdir,
        meter={"id": "bench", "digits": stream.style.digits},
        window={"x": x, "y": y, "width": width, "height": height},
        mqtt={"port": port},
        ocr={"engine": engine},
        log={"level": "info"},
    )
    log = workdir / "daemon.log"
    started = time.monotonic()
    process = start_daemon(config, log)
    peak_kb = 0
    deadline = started + DAEMON_TIMEOUT_S
    while True:
        peak_kb = max(peak_kb, _vm_hwm_kb(process.pid))
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            process.kill()
            pid, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(POLL_S)
    process.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    return DaemonRun(
        frames=written,
        exit_code=process.returncode,
        peak_rss_mb=peak_kb / 1024,
        cpu_s=usage.ru_utime + usage.ru_stime,
        wall_s=time.monotonic() - started,
        accepted=text.count(" accepted value="),
    )


@dataclass(frozen=True)
class DaemonMemory:
    engine: str
    long: DaemonRun
    short: DaemonRun

    @property
    def cpu_per_reading_s(self) -> float:
        extra = self.long.frames - self.short.frames
        return (self.long.cpu_s - self.short.cpu_s) / extra if extra > 0 else 0.0


def daemon_memory(stream: Stream, engines: list[str], frames: int) -> list[DaemonMemory]:
    """Peak RSS and CPU per reading of a daemon process per engine, with a real broker."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from broker import Broker

    out = []
    with tempfile.TemporaryDirectory(prefix="edgemeter-rss-") as tmp:
        broker = Broker(Path(tmp) / "broker")
        broker.start()
        try:
            for engine in engines:
                runs = [
                    run_daemon(stream, engine, n, broker.port, Path(tmp) / f"{engine}-{n}")
                    for n in (frames, 1)
                ]
                out.append(DaemonMemory(engine, runs[0], runs[1]))
        finally:
            broker.stop()
    return out
