"""Clock jumps in a running daemon: NTP correcting a Pi's clock by a day, both ways.

A Pi has no real-time clock: it boots with the time it saved at shutdown and NTP
corrects it later, by hours or days, in one step. The plausibility rules are
unit-tested against such jumps (test_plausibility.py); this runs the real
`edgemeter run` with libfaketime preloaded, its offset read from a file the test
rewrites, and checks the promise at process level: readings keep flowing (a rise
larger than the rules allow at once goes through confirmation, it is not refused for
ever), no value goes down, each reading carries the corrected time, and nothing
crashes.

Only the wall clock is faked (FAKETIME_DONT_FAKE_MONOTONIC): the daemon's waits run
on the monotonic clock, as on a real Pi, where NTP never moves it. (With that
setting libfaketime makes time.sleep fail with EINVAL; the daemon only sleeps that
way for the Pi camera's settle time, which the simulated source does not use.)
Skips when libfaketime is not installed (apt install faketime).
"""

from __future__ import annotations

import glob
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from broker import Broker, Received, Subscriber
from replay import start_daemon, stop_daemon, write_config

PREFIX = "edgemeter/test"
WAIT_S = 60.0
STOP_TIMEOUT_S = 30.0
READINGS_PER_PHASE = 5
JUMP = timedelta(days=1)


def libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        pytest.skip("libfaketime is not installed (apt install faketime)")
    return found[0]


def readings(messages: list[Received]) -> list[dict[str, object]]:
    return [
        json.loads(m.payload) for m in messages if m.topic == f"{PREFIX}/reading" and not m.retain
    ]


def stamp(reading: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(reading["ts"]).replace("Z", "+00:00"))


def wait_readings(live: Subscriber, count: int) -> list[dict[str, object]]:
    """Wait (bounded) until `count` readings arrived; all readings so far."""
    return readings(live.wait_until(lambda m: len(readings(m)) >= count, WAIT_S))


def wait_stamped(
    live: Subscriber, start: int, wanted: Callable[[datetime], bool]
) -> list[dict[str, object]]:
    """Wait (bounded) for READINGS_PER_PHASE readings after the first `start` whose
    stamps are `wanted`; those readings. Counted by stamp, not by arrival: readings
    taken before a step may still be on their way, and libfaketime re-reads its file
    only once a second."""

    def matching(messages: list[Received]) -> list[dict[str, object]]:
        return [r for r in readings(messages)[start:] if wanted(stamp(r))]

    return matching(live.wait_until(lambda m: len(matching(m)) >= READINGS_PER_PHASE, WAIT_S))


def test_clock_stepped_back_then_forward_by_a_day_keeps_readings_flowing(
    tmp_path: Path, broker: Broker
) -> None:
    offset_file = tmp_path / "faketime"
    offset_file.write_text("+0\n")
    env = {
        "LD_PRELOAD": libfaketime(),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_CACHE_DURATION": "1",  # re-read the offset at most once a second
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    # The counter moves ~1 unit a cycle, ~4 cycles a second: ~14400 units an hour, well
    # inside the rate limit while the clock runs true; max_jump makes confirmation real.
    config = write_config(
        tmp_path,
        camera={"source": "simulated", "interval_s": 0.25, "simulated": {"per_frame": 1.0}},
        plausibility={"max_rate_per_hour": 50000, "max_jump": 20, "confirm_cycles": 3},
        mqtt={"host": broker.host, "port": broker.port},
        log={"level": "info"},
    )
    log = tmp_path / "daemon.log"
    with Subscriber(broker, f"{PREFIX}/reading") as live:
        process = start_daemon(config, log, **env)
        try:
            true_run = wait_readings(live, READINGS_PER_PHASE)
            assert len(true_run) >= READINGS_PER_PHASE

            last_true = stamp(true_run[-1])
            offset_file.write_text("-1d\n")  # the clock was a day ahead: stepped back
            back = len(true_run)
            in_past = wait_stamped(live, back, lambda ts: ts < last_true - JUMP / 2)
            assert len(in_past) >= READINGS_PER_PHASE, "stuck after a step back"

            offset_file.write_text("+0\n")  # and forward again by the same day
            forward = len(readings(live.messages))
            on_time = wait_stamped(live, forward, lambda ts: ts > last_true)
            assert len(on_time) >= READINGS_PER_PHASE, "stuck after a leap"
            assert process.poll() is None, "the daemon exited on a clock jump"
        finally:
            exit_code = stop_daemon(process, log, STOP_TIMEOUT_S)
    published = readings(live.messages)
    values = [float(str(r["value"])) for r in published]
    assert values == sorted(values), values  # no reading ever goes down
    # Each reading carries the clock of its frame: the jumps really happened.
    assert stamp(published[-1]) > last_true
    assert any(stamp(r) < last_true - JUMP / 2 for r in published[back:forward])
    text = log.read_text()
    assert "Traceback" not in text
    assert not [line for line in text.splitlines() if line.startswith("ERROR")]
    assert exit_code == 0
