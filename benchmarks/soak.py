"""Soak: the real daemon at a high cycle rate, watched for leaks.

    python benchmarks/soak.py [--minutes 3] [--interval 0] [--sample-s 5] [--keep DIR]

Runs `python -m edgemeter run` on the simulated odometer with `camera.interval_s: 0`
(as fast as a burst of three frames can be rendered and read: at the default
5 s interval a 3-minute soak is 45-90 minutes of a Pi's life), publishing into a real
Mosquitto on a free 127.0.0.1 port, with the web page and the history on (the
likeliest leakers: a thread or socket per request, an SQLite handle or a JPEG per
rejection). The history is bounded small (`history.max_rows: 100`) so that its
pruning runs many times. Every few seconds it samples the process from /proc (RSS,
peak RSS, open file descriptors, threads, CPU seconds), the size of the outbox and of
the history on disk, and the cycles done so far (from the daemon's debug log), then
fetches every page the web server serves. At the end it stops the daemon with SIGTERM
and checks that every accepted reading reached a subscriber.

Verdict: LEAK when, after the warm-up (the first half of the samples):
- RSS grows faster than `--rss-mb-per-kcycle` (least-squares slope of RSS against
  cycles over the second half, in MB per 1000 cycles), or
- open file descriptors or threads end above their count at the end of the warm-up
  (the least of three samples on either side, so a file open for a moment is no leak).
The figures are printed as a table; nothing here is a unit test.
`tests/test_soak.py` runs the same measurement for ~40 s with looser bounds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:
    # The real-Mosquitto fixture and the daemon launcher live with the tests.
    sys.path.insert(0, str(TESTS))

from broker import Broker, Subscriber, free_port, running_broker, wait_for  # noqa: E402
from replay import default_window, start_daemon  # noqa: E402

PREFIX = "edgemeter/soak"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The cycle's outcome is logged once per cycle: accepted and rejected at info,
# an unchanged value at debug (so the soak runs with log.level debug).
_CYCLE_LINE = re.compile(rb"edgemeter\.daemon: (accepted value=|rejected raw=|unchanged value=)")
_ACCEPTED_LINE = re.compile(rb"edgemeter\.daemon: accepted value=")
WEB_PATHS = ("/", "/api/status.json", "/api/history.json", "/frame.jpg", "/favicon.svg")
STOP_TIMEOUT_S = 30.0
DEFAULT_RSS_MB_PER_KCYCLE = 2.0


@dataclass(frozen=True)
class ProcStats:
    """What /proc says about one process at one moment."""

    rss_mb: float
    peak_rss_mb: float
    fds: int
    threads: int
    cpu_s: float


@dataclass(frozen=True)
class Sample:
    elapsed_s: float
    cycles: int
    proc: ProcStats
    outbox_kb: float
    history_kb: float


@dataclass(frozen=True)
class Verdict:
    cycles: int
    cycles_per_s: float
    cpu_s_per_cycle: float
    peak_rss_mb: float
    rss_slope_mb_per_kcycle: float
    rss_growth_mb: float  # last sample minus the first one after the warm-up
    fd_growth: int
    thread_growth: int
    outbox_kb_end: float
    outbox_kb_max_after_warmup: float
    history_kb_max_after_warmup: float
    leak_reasons: tuple[str, ...]

    @property
    def leak(self) -> bool:
        return bool(self.leak_reasons)


def read_proc(pid: int) -> ProcStats:
    """RSS, peak RSS, fds, threads and CPU time of a live process (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    # /proc/PID/stat: the command name (field 2) may hold spaces, so split after ")".
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(stat[11]), int(stat[12])  # fields 14 and 15 of proc(5)
    return ProcStats(
        rss_mb=_kb(fields["VmRSS"]) / 1024,
        peak_rss_mb=_kb(fields["VmHWM"]) / 1024,
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(fields["Threads"].strip()),
        cpu_s=(utime + stime) / CLOCK_TICKS,
    )


def _kb(field: str) -> int:
    return int(field.split(maxsplit=1)[0])


class LogCounter:
    """Counts cycle lines in a growing log file, reading only what is new each time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.cycles = 0
        self.accepted = 0
        self._partial = b""

    def update(self) -> int:
        if not self.path.exists():
            return self.cycles
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        self.offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for the next read
        for line in lines:
            if _CYCLE_LINE.search(line):
                self.cycles += 1
                if _ACCEPTED_LINE.search(line):
                    self.accepted += 1
        return self.cycles


def disk_kb(*paths: Path) -> float:
    """Size of files and directories (with an SQLite file's -wal and -shm), in kB."""
    total = 0
    for path in paths:
        candidates = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        if path.is_dir():
            candidates = [p for p in path.rglob("*") if p.is_file()]
        for candidate in candidates:
            with contextlib.suppress(FileNotFoundError):
                total += candidate.stat().st_size
    return total / 1024


def soak_config(
    workdir: Path, broker: Broker, http_port: int, interval_s: float, max_rows: int = 100
) -> Path:
    """A config for the simulated odometer at full speed with web page and history on."""
    document: dict[str, Any] = {
        "meter": {"id": "soak", "digits": 6, "unit": "km"},
        "camera": {"source": "simulated", "interval_s": interval_s},
        "window": default_window(),
        "state": {"path": str(workdir / "state" / "state.json")},
        "mqtt": {"host": broker.host, "port": broker.port, "topic_prefix": "edgemeter"},
        "http": {"enabled": True, "port": http_port},
        "history": {"enabled": True, "max_rows": max_rows, "rejected_frames": 20},
        "log": {"level": "debug"},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def poke_web(base_url: str) -> int:
    """Fetch every page once (as a browser left open would); returns the failures."""
    failures = 0
    for path in WEB_PATHS:
        try:
            with urllib.request.urlopen(base_url + path, timeout=10) as response:
                response.read()
        except OSError:
            failures += 1
    return failures


def sample_once(pid: int, started: float, counter: LogCounter, state_dir: Path) -> Sample:
    return Sample(
        elapsed_s=time.monotonic() - started,
        cycles=counter.update(),
        proc=read_proc(pid),
        outbox_kb=disk_kb(state_dir / "outbox.sqlite"),
        history_kb=disk_kb(state_dir / "history.sqlite", state_dir / "rejected"),
    )


@dataclass(frozen=True)
class SoakRun:
    samples: list[Sample]
    exit_code: int | None  # None: it had to be killed
    crashed: bool  # it exited on its own before the soak ended
    accepted: int  # accepted readings in the daemon's log
    delivered: int  # live readings a subscriber received
    web_failures: int
    log_path: Path


def run_soak(
    workdir: Path,
    broker: Broker,
    seconds: float,
    sample_s: float = 5.0,
    interval_s: float = 0.0,
    on_sample: Callable[[Sample], None] | None = None,
) -> SoakRun:
    """Run the daemon for `seconds`, sampling every `sample_s`; always stops it."""
    http_port = free_port()
    config = soak_config(workdir, broker, http_port, interval_s)
    log_path = workdir / "daemon.log"
    counter = LogCounter(log_path)
    base_url = f"http://127.0.0.1:{http_port}"
    samples: list[Sample] = []
    web_failures = 0
    crashed = False
    with Subscriber(broker, f"{PREFIX}/reading") as live:
        process = start_daemon(config, log_path)
        started = time.monotonic()
        try:
            # The web server answers once the stages are built: start the clock there.
            if not wait_for(lambda: poke_web(base_url) == 0 or process.poll() is not None, 60):
                raise RuntimeError(f"web page not served after 60 s; see {log_path}")
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    crashed = True
                    break
                # Sampled before the pages are fetched: no request of ours is in flight.
                sample = sample_once(process.pid, started, counter, workdir / "state")
                samples.append(sample)
                if on_sample is not None:
                    on_sample(sample)
                web_failures += poke_web(base_url)
                time.sleep(max(0.0, min(sample_s, deadline - time.monotonic())))
            if not crashed and process.poll() is None:
                samples.append(sample_once(process.pid, started, counter, workdir / "state"))
                if on_sample is not None:
                    on_sample(samples[-1])
        finally:
            exit_code = _stop(process)
        counter.update()
        # The last accepted readings are flushed at stop: give them a moment to arrive.
        live.wait_until(lambda m: len(m) >= counter.accepted, 10)
        delivered = sum(1 for m in live.messages if not m.retain)
    return SoakRun(samples, exit_code, crashed, counter.accepted, delivered, web_failures, log_path)


def _stop(process: subprocess.Popen[bytes]) -> int | None:
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)
        return None


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys against xs; 0 when xs do not vary."""
    if len(xs) < 2:
        return 0.0
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def analyse(
    samples: Sequence[Sample], rss_mb_per_kcycle: float = DEFAULT_RSS_MB_PER_KCYCLE
) -> Verdict:
    """Growth after the warm-up (the first half of the samples) and the run's figures."""
    if len(samples) < 4:
        raise ValueError(f"need at least 4 samples to judge growth, got {len(samples)}")
    first, last = samples[0], samples[-1]
    after = list(samples[len(samples) // 2 :])
    baseline = after[0]
    rss_slope = 1000 * slope([s.cycles for s in after], [s.proc.rss_mb for s in after])
    # The least of three samples on either side: a file a cycle has open for a moment
    # (a JPEG being written) is not a leak, a leaked one is still open in all three.
    start_fds, end_fds = _least(after[:3], _fds), _least(after[-3:], _fds)
    start_threads, end_threads = _least(after[:3], _threads), _least(after[-3:], _threads)
    fd_growth = end_fds - start_fds
    thread_growth = end_threads - start_threads
    reasons = []
    if rss_slope > rss_mb_per_kcycle:
        reasons.append(
            f"RSS grows {rss_slope:.2f} MB per 1000 cycles after warm-up"
            f" (tolerance {rss_mb_per_kcycle:g})"
        )
    if fd_growth > 0:
        reasons.append(f"open fds {start_fds} -> {end_fds} after warm-up")
    if thread_growth > 0:
        reasons.append(f"threads {start_threads} -> {end_threads} after warm-up")
    cycles = last.cycles - first.cycles
    seconds = last.elapsed_s - first.elapsed_s
    return Verdict(
        cycles=last.cycles,
        cycles_per_s=cycles / seconds if seconds > 0 else 0.0,
        cpu_s_per_cycle=(last.proc.cpu_s - first.proc.cpu_s) / cycles if cycles else 0.0,
        peak_rss_mb=max(s.proc.peak_rss_mb for s in samples),
        rss_slope_mb_per_kcycle=rss_slope,
        rss_growth_mb=last.proc.rss_mb - baseline.proc.rss_mb,
        fd_growth=fd_growth,
        thread_growth=thread_growth,
        outbox_kb_end=last.outbox_kb,
        outbox_kb_max_after_warmup=max(s.outbox_kb for s in after),
        history_kb_max_after_warmup=max(s.history_kb for s in after),
        leak_reasons=tuple(reasons),
    )


def _least(samples: Sequence[Sample], field: Callable[[ProcStats], int]) -> int:
    return min(field(s.proc) for s in samples)


def _fds(proc: ProcStats) -> int:
    return proc.fds


def _threads(proc: ProcStats) -> int:
    return proc.threads


def format_row(sample: Sample) -> str:
    p = sample.proc
    return (
        f"{sample.elapsed_s:7.1f} {sample.cycles:7d} {p.rss_mb:8.1f} {p.peak_rss_mb:8.1f}"
        f" {p.fds:4d} {p.threads:4d} {p.cpu_s:8.1f} {sample.outbox_kb:9.1f}"
        f" {sample.history_kb:10.1f}"
    )


HEADER = "      s  cycles   rss MB  peak MB  fds thr    cpu s outbox kB history kB"


def report(run: SoakRun, verdict: Verdict) -> str:
    lines = [
        f"cycles: {verdict.cycles} ({verdict.cycles_per_s:.2f}/s, burst of 3 frames each)",
        f"CPU seconds per cycle: {verdict.cpu_s_per_cycle:.3f}",
        f"peak RSS: {verdict.peak_rss_mb:.1f} MB",
        f"RSS after warm-up: slope {verdict.rss_slope_mb_per_kcycle:+.2f} MB per 1000 cycles,"
        f" {verdict.rss_growth_mb:+.1f} MB first to last",
        f"open fds after warm-up: {verdict.fd_growth:+d}; threads: {verdict.thread_growth:+d}",
        f"outbox at the end: {verdict.outbox_kb_end:.1f} kB"
        f" (max after warm-up {verdict.outbox_kb_max_after_warmup:.1f} kB);"
        f" history max after warm-up: {verdict.history_kb_max_after_warmup:.1f} kB",
        f"readings accepted: {run.accepted}, delivered live: {run.delivered};"
        f" web fetch failures: {run.web_failures}",
        f"daemon exit: {run.exit_code}{' (crashed during the soak)' if run.crashed else ''}",
    ]
    problems = list(verdict.leak_reasons)
    if run.crashed or run.exit_code != 0:
        problems.append(f"daemon did not run and stop cleanly (exit {run.exit_code})")
    if run.delivered < run.accepted:
        problems.append(f"only {run.delivered} of {run.accepted} accepted readings delivered")
    lines.append("verdict: " + ("FAIL: " + "; ".join(problems) if problems else "no leak found"))
    return "\n".join(lines)


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="edgemeter-soak-") as name:
        yield Path(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--interval", type=float, default=0.0, help="camera.interval_s")
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--rss-mb-per-kcycle", type=float, default=DEFAULT_RSS_MB_PER_KCYCLE)
    parser.add_argument("--keep", type=Path, help="keep the state, log and broker here")
    args = parser.parse_args(argv)
    with _workdir(args.keep) as workdir, running_broker(workdir / "broker") as broker:
        print(HEADER, flush=True)
        run = run_soak(
            workdir,
            broker,
            args.minutes * 60,
            sample_s=args.sample_s,
            interval_s=args.interval,
            on_sample=lambda s: print(format_row(s), flush=True),
        )
        if len(run.samples) < 4:
            print(f"too few samples ({len(run.samples)}); see {run.log_path}")
            return 1
        verdict = analyse(run.samples, args.rss_mb_per_kcycle)
        print(report(run, verdict))
        ok = not verdict.leak and not run.crashed and run.exit_code == 0
        ok = ok and run.delivered >= run.accepted
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
