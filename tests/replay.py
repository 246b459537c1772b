"""Helpers for end-to-end tests: recorded frames on disk, config files, the daemon process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from edgemeter import simulate
from edgemeter.config import load_config
from edgemeter.history import History

ROOT = Path(__file__).resolve().parent.parent


def write_frames(directory: Path, values: Sequence[float], seed: int = 7) -> list[Path]:
    """Render the default simulated counter showing each value, as numbered PNG files."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    style = simulate.default_style()
    paths = []
    for index, value in enumerate(values):
        frame = simulate.render(style, value, simulate.Conditions(), rng)
        path = directory / f"frame-{index:05d}.png"
        cv2.imwrite(str(path), frame.image)
        paths.append(path)
    return paths


def default_window() -> dict[str, int]:
    x, y, width, height = simulate.default_window()
    return {"x": x, "y": y, "width": width, "height": height}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def write_config(directory: Path, **sections: Any) -> Path:
    """A config file for a replay of directory/frames/*.png into a test broker."""
    base: dict[str, Any] = {
        "meter": {"id": "test", "digits": 6, "unit": "km"},
        "camera": {"source": "files", "path": str(directory / "frames" / "*.png"), "interval_s": 0},
        "window": default_window(),
        "state": {"path": str(directory / "state" / "state.json")},
        "mqtt": {"host": "127.0.0.1", "port": 1},
        "log": {"level": "debug"},
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(merge(base, sections)))
    return path


def daemon_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    # A daemon that hangs dumps every thread's stack on SIGABRT: see stop_daemon().
    env["PYTHONFAULTHANDLER"] = "1"
    env.update(extra)
    return env


def start_daemon(config: Path, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """`edgemeter run` as a real process, its log in a file (never a full pipe)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "edgemeter", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=daemon_env(**env),
            cwd=ROOT,
        )


def run_daemon(config: Path, log: Path, timeout_s: float = 120.0) -> int:
    process = start_daemon(config, log)
    try:
        return process.wait(timeout=timeout_s)
    finally:
        kill_if_running(process)


def stop_daemon(process: subprocess.Popen[bytes], log: Path, timeout_s: float = 20.0) -> int:
    """SIGTERM, as systemd stops the unit, and the exit status (at once, if the daemon
    has already exited). A daemon that does not stop in time is aborted, so the test
    fails with the stack it hung in, not a bare timeout; none outlives its test."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill_if_running(process)
        tail = log.read_text(errors="replace")[-6000:]
        raise AssertionError(
            f"the daemon did not stop within {timeout_s:g} s of SIGTERM; its log ends:\n{tail}"
        ) from None


def kill_if_running(process: subprocess.Popen[bytes]) -> None:
    """Cleanup after a test: a process a failed assertion left running is killed and
    reaped, so that no daemon outlives its test."""
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


@dataclass(frozen=True)
class Stamped:
    """One reading as (value, time of its frame): what must arrive, and what arrived."""

    value: float
    ts: datetime


def accepted_from_history(config: Path) -> list[Stamped]:
    """Every accepted reading the daemon recorded, oldest first, with its frame time."""
    loaded = load_config(config)
    history = History(Path(loaded.state.path).parent, loaded.history, read_only=True)
    try:
        entries = history.entries(kinds=["accepted"])
    finally:
        history.close()
    return [Stamped(float(e.value), e.ts) for e in entries if e.value is not None]


def accepted_from_log(log: Path) -> list[float]:
    """The values of the daemon's `accepted value=` lines, in order."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if " accepted value=" in line:
            found.append(float(line.split("accepted value=")[1].split()[0]))
    return found


def received_readings(payloads: Sequence[str]) -> list[Stamped]:
    """Reading payloads as a subscriber got them, in arrival order."""
    out = []
    for payload in payloads:
        body = json.loads(payload)
        out.append(Stamped(float(body["value"]), datetime.fromisoformat(body["ts"])))
    return out


@dataclass(frozen=True)
class Delivery:
    """What a subscriber received compared with what the daemon accepted.

    A repeat is a reading received again with the same value and time (QoS 1 allows
    it after a lost acknowledgement); a conflict is a value received with a time other
    than its first one, or a time with another value: never allowed.
    """

    accepted: list[Stamped]
    received: list[Stamped]

    @property
    def first_arrivals(self) -> list[Stamped]:
        seen: set[Stamped] = set()
        out = []
        for item in self.received:
            if item not in seen:
                seen.add(item)
                out.append(item)
        return out

    @property
    def repeats(self) -> int:
        return len(self.received) - len(set(self.received))

    @property
    def conflicts(self) -> list[Stamped]:
        by_value: dict[float, datetime] = {}
        by_ts: dict[datetime, float] = {}
        out = []
        for item in self.received:
            first_ts = by_value.setdefault(item.value, item.ts)
            first_value = by_ts.setdefault(item.ts, item.value)
            if (first_ts, first_value) != (item.ts, item.value):
                out.append(item)
        return out

    @property
    def missing(self) -> list[Stamped]:
        got = set(self.received)
        return [item for item in self.accepted if item not in got]

    @property
    def in_order(self) -> bool:
        """First arrivals are the accepted sequence, and nothing older comes after newer."""
        values = [item.value for item in self.received]
        return self.first_arrivals == self.accepted and values == sorted(values)

    def summary(self) -> str:
        return (
            f"accepted={len(self.accepted)} received={len(self.received)}"
            f" delivered={len(self.accepted) - len(self.missing)}/{len(self.accepted)}"
            f" in_order={self.in_order} repeats_same_value_and_time={self.repeats}"
            f" conflicts={len(self.conflicts)}"
        )
