"""Disk faults in a running daemon: the state directory fills up or turns read-only.

The state directory holds state.json, the outbox and the history. On a Pi it is on
the SD card, which fills up (logs, saved crops) or is remounted read-only by the
kernel after I/O errors. Promised: the daemon says so once per problem, in a line
naming the directory and what to do; it keeps publishing readings; it does not exit;
and once a full disk has space again, the state is saved again.

Injected for real, into a real `edgemeter run` process:
- full: the state directory is a small tmpfs, filled by a file until ENOSPC, then
  freed by deleting that file;
- read-only: the state directory is an ext4 image on a loop device mounted with
  errors=remount-ro, and an ext4 error is raised through
  /sys/fs/ext4/<dev>/trigger_fs_error, so the kernel remounts it read-only exactly as
  it does a failing SD card. (`mount -o remount,ro` is refused while the daemon holds
  its SQLite files open for writing, and chmod does not stop root.)
Both need root (CI runs as root) and skip otherwise, saying why.

The broker is paused while the fault strikes, so readings are stored in the outbox but
not yet acknowledged: the outbox must then delete them on a disk that refuses writes.
That is how these tests found delivery stalling behind an undeletable reading.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from broker import Broker, Received, Subscriber, wait_for
from replay import start_daemon, stop_daemon, write_config

from edgemeter.plausibility import Memory

T = TypeVar("T")

PREFIX = "edgemeter/test"
# Enough for the state, the outbox and the history of a short run (their SQLite WAL
# files grow by a few MB at most before a checkpoint resets them).
FS_BYTES = 24 * 1024 * 1024
FILL_CHUNK = 256 * 1024
# Readings to see published while the fault lasts: at ~one reading per cycle this
# is many cycles, so an error logged per cycle would show as a flood.
READINGS_DURING_FAULT = 15
WAIT_S = 60.0
STOP_TIMEOUT_S = 30.0
# Each write path into the state directory (state file, outbox put, outbox removal,
# history) may report a problem once; a second wording for one of them is tolerated
# (the same full disk can surface as SQLITE_FULL or as an I/O error). A line per
# cycle would be READINGS_DURING_FAULT or more.
MAX_ERROR_LINES = 6


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root (mount); CI runs the tests as root")


def _unmount(target: Path) -> None:
    if _run(["umount", str(target)]).returncode != 0:
        # Still busy (a daemon that would not die): detach it so the next test starts clean.
        _run(["umount", "-l", str(target)])


@pytest.fixture
def tmpfs_state(tmp_path: Path) -> Iterator[Path]:
    """A state directory on its own small tmpfs."""
    _need_root("a state directory on a tmpfs")
    target = tmp_path / "state"
    target.mkdir()
    mounted = _run(["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(target)])
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield target
    finally:
        _unmount(target)


@pytest.fixture
def ext4_state(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(state directory, its trigger_fs_error file): ext4 on a loop device, errors=remount-ro."""
    _need_root("a state directory on an ext4 loop device")
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 is not installed (apt install e2fsprogs)")
    image = tmp_path / "sd.img"
    with image.open("wb") as handle:
        handle.truncate(FS_BYTES)
    made = _run(["mkfs.ext4", "-q", "-F", str(image)])
    assert made.returncode == 0, made.stderr
    target = tmp_path / "state"
    target.mkdir()
    mounted = _run(["mount", "-o", "loop,errors=remount-ro", str(image), str(target)])
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount an ext4 image on a loop device here: {mounted.stderr.strip()}")
    try:
        source = _run(["findmnt", "-n", "-o", "SOURCE", str(target)]).stdout.strip()
        trigger = Path("/sys/fs/ext4") / Path(source).name / "trigger_fs_error"
        if not trigger.exists():
            pytest.skip(f"this kernel has no {trigger} to raise an ext4 error")
        yield target, trigger
    finally:
        _unmount(target)


def readings(messages: list[Received]) -> list[float]:
    return [
        float(json.loads(m.payload)["value"])
        for m in messages
        if m.topic == f"{PREFIX}/reading" and not m.retain
    ]


def wait_readings(live: Subscriber, count: int) -> bool:
    """Wait (bounded) until `count` live readings have arrived; whether they did."""
    messages = live.wait_until(lambda m: len(readings(m)) >= count, WAIT_S)
    return len(readings(messages)) >= count


def simulated_config(tmp_path: Path, broker: Broker, state_dir: Path) -> Path:
    # per_frame 1: the counter moves about one unit per cycle, so nearly every cycle
    # publishes a reading and saves the state, i.e. hits the broken disk.
    return write_config(
        tmp_path,
        camera={"source": "simulated", "interval_s": 0.25, "simulated": {"per_frame": 1.0}},
        state={"path": str(state_dir / "state.json")},
        mqtt={"host": broker.host, "port": broker.port},
        log={"level": "info"},
    )


def log_since(log: Path, offset: int) -> list[str]:
    return log.read_bytes()[offset:].decode(errors="replace").splitlines()


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; returns it (bounded by the fs size)."""
    filler = directory / "filler"
    chunk = b"\0" * FILL_CHUNK
    with filler.open("wb", buffering=0) as handle:
        for _ in range(FS_BYTES // FILL_CHUNK + 16):
            try:
                handle.write(chunk)
            except OSError as err:
                assert err.errno == errno.ENOSPC, err
                return filler
    raise AssertionError(f"{directory} never filled up")


def saved_value(state_dir: Path) -> int | None:
    """The value in the state file, read without touching the directory.

    (StateStore.load would also delete the temp files of a save in progress.)
    """
    try:
        document = json.loads((state_dir / "state.json").read_text())
    except FileNotFoundError:
        return None
    return Memory.from_dict(document["memory"]).value


def accepted_since(log: Path, offset: int) -> list[float]:
    return [
        float(line.split("accepted value=")[1].split()[0])
        for line in log_since(log, offset)
        if "accepted value=" in line
    ]


def queue_while_broker_paused(broker: Broker, log: Path, count: int) -> int:
    """Freeze the broker until `count` readings wait in the outbox; returns the log offset.

    The fault then strikes with readings stored but not yet acknowledged: the outbox
    must remove them after delivery on a disk that no longer takes writes.
    """
    paused_at = log.stat().st_size
    broker.pause()
    assert wait_for(lambda: len(accepted_since(log, paused_at)) >= count, WAIT_S)
    return paused_at


@dataclass(frozen=True)
class Struck:
    """Where a fault struck a running daemon: its log offset, the readings that were
    waiting in the outbox for the broker, and how many had arrived before it."""

    fault_at: int
    queued: list[int]
    before: int


def strike(
    live: Subscriber, broker: Broker, log: Path, state_dir: Path, fault: Callable[[], T]
) -> tuple[Struck, T]:
    """Let readings flow and the state save, queue some in the outbox, then `fault`;
    the queue is released and readings must go on arriving through the fault."""
    assert wait_readings(live, 3)
    assert wait_for(lambda: saved_value(state_dir) is not None, WAIT_S)
    paused_at = queue_while_broker_paused(broker, log, 3)
    fault_at = log.stat().st_size
    harm = fault()
    queued = accepted_since(log, paused_at)
    broker.resume()
    before = len(readings(live.messages))
    assert wait_readings(live, before + READINGS_DURING_FAULT)
    return Struck(fault_at, queued, before), harm


def test_full_state_directory_is_reported_once_readings_flow_and_state_saves_again(
    tmp_path: Path, broker: Broker, tmpfs_state: Path
) -> None:
    config = simulated_config(tmp_path, broker, tmpfs_state)
    log = tmp_path / "daemon.log"
    with Subscriber(broker, f"{PREFIX}/reading") as live:
        process = start_daemon(config, log, TMPDIR=str(tmp_path))
        try:
            struck, filler = strike(live, broker, log, tmpfs_state, lambda: fill(tmpfs_state))
            assert process.poll() is None, "the daemon exited on a full disk"
            during = log_since(log, struck.fault_at)
            stuck = saved_value(tmpfs_state)

            freed_at = log.stat().st_size
            filler.unlink()
            after_free = len(readings(live.messages))
            assert wait_readings(live, after_free + 3)
            assert wait_for(lambda: "state writable again" in log.read_text(), WAIT_S)
            published_after_free = readings(live.messages)[after_free]
            saved_after = saved_value(tmpfs_state)
            assert process.poll() is None
        finally:
            broker.resume()
            exit_code = stop_daemon(process, log, STOP_TIMEOUT_S)
    state_errors = [line for line in during if "no space left to save state file" in line]
    assert len(state_errors) == 1, state_errors  # said once, not once per cycle
    assert str(tmpfs_state) in state_errors[0]
    assert "free space" in state_errors[0]
    errors = [line for line in during if line.startswith("ERROR")]
    assert len(errors) <= MAX_ERROR_LINES, errors
    delivered = readings(live.messages)
    assert set(struck.queued) <= set(delivered)  # what waited in the outbox got out
    # While full, the saved value stood still; readings went on rising past it.
    fault_readings = delivered[struck.before : after_free]
    assert stuck is not None and max(fault_readings) > stuck
    assert fault_readings == sorted(fault_readings)
    # Space is back: the state file follows the published readings again.
    assert saved_after is not None and saved_after >= published_after_free
    assert "Traceback" not in log.read_text()
    assert not any(line.startswith("ERROR") for line in log_since(log, freed_at))
    assert exit_code == 0


def card_error(trigger: Path, state_dir: Path) -> None:
    """What the kernel does when an SD card reports write errors: remount read-only."""
    trigger.write_text("edgemeter test: simulated SD card error\n")
    with pytest.raises(OSError, match="Read-only file system"):
        (state_dir / "probe").touch()


def test_state_directory_remounted_read_only_is_reported_once_and_readings_flow(
    tmp_path: Path, broker: Broker, ext4_state: tuple[Path, Path]
) -> None:
    state_dir, trigger = ext4_state
    config = simulated_config(tmp_path, broker, state_dir)
    log = tmp_path / "daemon.log"
    with Subscriber(broker, f"{PREFIX}/reading") as live:
        process = start_daemon(config, log, TMPDIR=str(tmp_path))
        try:
            struck, _ = strike(live, broker, log, state_dir, lambda: card_error(trigger, state_dir))
            assert process.poll() is None, "the daemon exited on a read-only state directory"
        finally:
            broker.resume()
            exit_code = stop_daemon(process, log, STOP_TIMEOUT_S)
    during = log_since(log, struck.fault_at)
    state_errors = [line for line in during if f"state directory {state_dir} is read-only" in line]
    assert len(state_errors) == 1, state_errors  # said once, not once per cycle
    assert "dmesg" in state_errors[0]
    errors = [line for line in during if line.startswith("ERROR")]
    assert len(errors) <= MAX_ERROR_LINES, errors
    delivered = readings(live.messages)
    assert set(struck.queued) <= set(delivered)  # what waited in the outbox got out
    fault_readings = delivered[struck.before :]
    assert fault_readings == sorted(fault_readings)
    # The last value saved before the card failed is still there, whole.
    assert saved_value(state_dir) is not None
    assert "Traceback" not in log.read_text()
    assert exit_code == 0
