"""The daemon SIGKILLed again and again during one replay, restarted each time.

Each restart resumes the replay at the saved value, as a camera would show the counter
where it is now. Kills land in three kinds of moment: mid state save (a test-only pause between the
fsynced temp file and the rename widens that window; the temp file left behind proves
the kill landed there), mid delivery (a test-only pause between the broker's PUBACK
and the outbox removal; the daemon's log line proves it), and at seeded random
moments while readings are being accepted. The promises: no accepted reading is lost,
none is published twice with a different value or time, the state file always parses,
and the daemon always restarts and resumes.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from broker import Broker, Received, Subscriber, wait_for
from replay import (
    Delivery,
    accepted_from_log,
    received_readings,
    start_daemon,
    write_config,
    write_frames,
)

from edgemeter.outbox import Outbox
from edgemeter.publish import FAULT_DELAY_DELIVERY_ENV
from edgemeter.state import FAULT_DELAY_STATE_WRITE_ENV, StateStore

READING = "edgemeter/test/reading"
FINAL_RUN_TIMEOUT_S = 240.0
WAIT_S = 90.0
HOOK_DELAY_S = "1.0"
# Eight hook-placed kills and random ones, in a fixed order: the run is reproducible.
PLAN = ["state", "delivery", "random", "state", "random", "delivery", "random", "random", "state"]


@dataclass
class Kill:
    kind: str
    accepted_in_run: int
    temp_file_left: bool
    hook_line_seen: bool


def live_readings(messages: list[Received]) -> list[str]:
    return [m.payload for m in messages if m.topic == READING and not m.retain]


def temp_files(state: Path) -> list[Path]:
    return list(state.parent.glob(f".{state.name}.*.tmp"))


def wait_for_kill_point(
    kind: str, process: subprocess.Popen[bytes], log: Path, state: Path, rng: random.Random
) -> None:
    """Block (bounded) until the moment this kill is meant to hit."""
    if kind == "state":
        # A few readings in, then the next save: its temp file is on disk, not yet renamed.
        target = rng.randint(2, 4)
        assert wait_for(lambda: len(accepted_from_log(log)) >= target, WAIT_S)
        assert wait_for(lambda: bool(temp_files(state)), WAIT_S, interval_s=0.01)
    elif kind == "delivery":
        assert wait_for(lambda: "fault injection: delivered" in log.read_text(), WAIT_S, 0.01)
    else:
        assert wait_for(lambda: len(accepted_from_log(log)) >= 1, WAIT_S)
        assert not wait_for(lambda: process.poll() is not None, rng.uniform(0.0, 0.8))


def run_and_kill(kind: str, config: Path, log: Path, state: Path, rng: random.Random) -> Kill:
    env = {}
    if kind == "state":
        env[FAULT_DELAY_STATE_WRITE_ENV] = HOOK_DELAY_S
    elif kind == "delivery":
        env[FAULT_DELAY_DELIVERY_ENV] = HOOK_DELAY_S
    process = start_daemon(config, log, **env)
    try:
        wait_for_kill_point(kind, process, log, state, rng)
        assert process.poll() is None, f"the daemon ended before the {kind} kill"
    finally:
        process.kill()
        process.wait(timeout=10)
    return Kill(
        kind,
        len(accepted_from_log(log)),
        temp_file_left=bool(temp_files(state)),
        hook_line_seen="fault injection: delivered" in log.read_text(),
    )


def saved_value(state: Path) -> int | None:
    """The value in the state file, asserting it is whole (never torn)."""
    if not state.exists():
        return None  # killed before the first save ever finished: nothing to tear
    document = json.loads(state.read_bytes())  # a whole JSON document, old or new
    assert document["version"] == 1
    memory, warning = StateStore(state).load()
    assert warning is None
    assert memory.value is not None
    return memory.value


class StateWatcher:
    """Reads the state file every few ms while the daemon runs: every read must parse."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.reads = 0
        self.torn: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> StateWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            try:
                data = self.state.read_bytes()
            except FileNotFoundError:
                continue  # before the first save
            self.reads += 1
            try:
                json.loads(data)
            except ValueError:
                self.torn.append(data)


def move_time_on(frames: list[Path], truth: list[int], saved: int | None) -> None:
    """Drop the frames older than the saved value: after a restart a real camera shows
    the counter as it is now, not the past. (Replaying those frames would be a run of
    readings below the last accepted one, which the judge rightly re-baselines to.)"""
    for path, value in zip(frames, truth, strict=True):
        if saved is not None and value < saved:
            path.unlink(missing_ok=True)


def test_repeated_sigkill_loses_no_reading_and_never_tears_the_state(
    tmp_path: Path, broker: Broker
) -> None:
    truth = list(range(7300, 7370))
    frames = write_frames(tmp_path / "frames", truth)
    config = write_config(
        tmp_path,
        mqtt={"host": broker.host, "port": broker.port, "keepalive_s": 5},
        camera={"interval_s": 0.15},
        plausibility={"max_jump": 50},
    )
    state = tmp_path / "state" / "state.json"
    rng = random.Random(7370)
    kills: list[Kill] = []
    logs: list[Path] = []
    with Subscriber(broker, READING) as subscriber, StateWatcher(state) as watcher:
        for index, kind in enumerate(PLAN):
            logs.append(tmp_path / f"run{index}.log")
            kills.append(run_and_kill(kind, config, logs[-1], state, rng))
            move_time_on(frames, truth, saved_value(state))
        logs.append(tmp_path / "final.log")
        final = start_daemon(config, logs[-1])
        try:
            assert final.wait(timeout=FINAL_RUN_TIMEOUT_S) == 0
        finally:
            if final.poll() is None:
                final.kill()
                final.wait(timeout=10)
        subscriber.wait_until(lambda m: len(set(live_readings(m))) >= len(truth), 30)
        received = received_readings(live_readings(subscriber.messages))
    accepted = sorted({v for log in logs for v in accepted_from_log(log)})
    delivery = Delivery([], received)
    by_kind = {k: [kill.kind for kill in kills].count(k) for k in ("state", "delivery", "random")}
    mid_save = sum(1 for kill in kills if kill.kind == "state" and kill.temp_file_left)
    mid_delivery = sum(1 for kill in kills if kill.kind == "delivery" and kill.hook_line_seen)
    values = [r.value for r in received]
    requeued = sum(log.read_text().count("reading already queued") for log in logs)
    outbox = Outbox(state.parent / "outbox.sqlite", 100)
    pending = len(outbox)
    outbox.close()
    print(
        f"FAULT daemon-sigkill: kills={len(kills)} {by_kind} landed_mid_save={mid_save}"
        f" landed_mid_delivery={mid_delivery} accepted_per_run={[k.accepted_in_run for k in kills]}"
        f" distinct_accepted={len(accepted)} received={len(received)}"
        f" distinct_received={len({r.value for r in received})}"
        f" repeats_same_value_and_time={delivery.repeats} conflicts={len(delivery.conflicts)}"
        f" re_accepted_not_resent={requeued} state_reads={watcher.reads}"
        f" torn_reads={len(watcher.torn)} outbox_left={pending}"
    )
    # Each kill landed where it was meant to.
    assert mid_save == by_kind["state"]
    assert mid_delivery == by_kind["delivery"]
    # A kill mid save leaves the state a reading behind the outbox: that reading is
    # accepted again after the restart and must not go out a second time.
    assert requeued >= by_kind["state"]
    # Nothing accepted was lost; everything the counter showed got through.
    assert accepted == truth
    assert sorted({r.value for r in received}) == truth
    # Never a value with two times (or a time with two values), never out of order.
    assert delivery.conflicts == []
    assert values == sorted(values)
    # Read thousands of times while being rewritten and killed: never half a file.
    assert watcher.reads > 100
    assert watcher.torn == []
    assert pending == 0  # the final run delivered everything owed
    # Every restart resumed from the state file and ran without a traceback.
    for log in logs:
        text = log.read_text()
        assert "Traceback" not in text
        assert "started version=" in text
    assert all("resuming value=" in log.read_text() for log in logs[1:])
