"""Helpers for end-to-end tests: recorded frames on disk, config files, the daemon process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from edgemeter import simulate

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
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
