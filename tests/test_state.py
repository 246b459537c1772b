"""The state file: real files in a temp directory, including the ways an SD card fails."""

from __future__ import annotations

import errno
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edgemeter.plausibility import Memory
from edgemeter.state import StateError, StateStore

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MEMORY = Memory(value=12345, accepted_at=T0)
PENDING = Memory(
    value=12345,
    accepted_at=T0,
    challenger=19999,
    challenger_at=T0 + timedelta(minutes=1),
    challenger_count=2,
)


def leftovers(directory: Path) -> list[str]:
    """Temp files a save could leave behind."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def corrupt_copies(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.corrupt-*"))


# --- round trip ------------------------------------------------------------------------


def test_missing_file_is_a_first_run(tmp_path: Path) -> None:
    assert StateStore(tmp_path / "state.json").load() == (Memory(), None)


def test_saved_memory_loads_back_in_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "state.json"

    assert StateStore(path).save(PENDING)

    assert StateStore(path).load() == (PENDING, None)


def test_state_file_is_versioned_json_with_utc_times(tmp_path: Path) -> None:
    path = tmp_path / "state.json"

    StateStore(path).save(MEMORY)

    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["version"] == 1
    assert document["memory"] == MEMORY.to_dict()
    assert datetime.fromisoformat(document["saved_at"]).utcoffset() == timedelta(0)


def test_store_accepts_a_string_path(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "state.json"))

    store.save(MEMORY)

    assert store.path == tmp_path / "state.json"
    assert store.load() == (MEMORY, None)


# --- sparing the SD card ---------------------------------------------------------------


def test_saving_an_unchanged_memory_does_not_touch_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = StateStore(path)
    store.save(MEMORY)
    before = path.stat()

    saved = store.save(Memory(value=12345, accepted_at=T0))

    after = path.stat()
    assert not saved
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_saving_the_memory_just_loaded_does_not_touch_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    StateStore(path).save(MEMORY)
    before = path.stat()
    store = StateStore(path)
    memory, _ = store.load()

    saved = store.save(memory)

    after = path.stat()
    assert not saved
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_first_run_with_nothing_to_remember_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = StateStore(path)
    store.load()

    assert not store.save(Memory())
    assert not path.exists()


def test_changed_memory_is_written(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = StateStore(path)
    store.save(MEMORY)

    assert store.save(PENDING)
    assert StateStore(path).load() == (PENDING, None)


def test_missing_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "edgemeter" / "state.json"

    StateStore(path).save(MEMORY)

    assert StateStore(path).load() == (MEMORY, None)


def test_temp_files_left_by_a_power_cut_are_removed_on_load(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    StateStore(path).save(MEMORY)
    (tmp_path / ".state.json.k2j3h4.tmp").write_text("half a state")
    (tmp_path / "notes.tmp").write_text("not ours")

    assert StateStore(path).load() == (MEMORY, None)

    assert leftovers(tmp_path) == ["notes.tmp"]


# --- corrupt files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x00\x17garbage\xff", "not UTF-8"),
        (b"", "invalid JSON"),
        (b'{"version": 1, "memory": {"value": 123', "invalid JSON"),
        (b'{"version": 1, "memory": {"value": "12345"}}', "memory.value"),
        (b'{"version": 1, "memory": {"value": 1, "accepted_at": 5}}', "memory.accepted_at"),
        (b'{"version": 1, "memory": [1, 2]}', "'memory' must be an object"),
        (b'{"version": 1}', "'memory' must be an object"),
        (b'{"version": 2, "memory": {}}', "unsupported version 2"),
        (b'{"version": true, "memory": {}}', "unsupported version True"),
        (b"[1, 2, 3]", "expected a JSON object"),
        (b"[" * 100_000, "invalid JSON"),
    ],
)
def test_corrupt_file_is_moved_aside_with_a_warning(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)

    memory, warning = StateStore(path).load()

    assert memory == Memory()
    [kept] = corrupt_copies(path)
    assert kept.read_bytes() == content
    assert not path.exists()
    assert warning is not None
    assert warning.startswith(f"state file {path} is corrupt (")
    assert problem in warning
    assert warning.endswith(f"; moved aside to {kept}; starting without a previous value")


def test_oversized_file_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b" " * (2 << 20))

    memory, warning = StateStore(path).load()

    assert memory == Memory()
    assert warning is not None
    assert "larger than" in warning
    assert len(corrupt_copies(path)) == 1


def test_every_corrupt_file_is_kept_for_diagnosis(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    for garbage in (b"first", b"second"):
        path.write_bytes(garbage)
        StateStore(path).load()

    assert sorted(p.read_bytes() for p in corrupt_copies(path)) == [b"first", b"second"]


def test_state_is_saved_again_after_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"garbage")
    store = StateStore(path)
    store.load()

    assert store.save(MEMORY)
    assert StateStore(path).load() == (MEMORY, None)


# --- problems the user must fix --------------------------------------------------------


def test_read_only_directory_raises_a_clear_error_and_leaves_no_temp_file(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    path = directory / "state.json"
    StateStore(path).save(MEMORY)
    directory.chmod(0o500)
    try:
        probe = directory / "probe"
        try:
            probe.touch()
        except PermissionError:
            pass
        else:
            probe.unlink()
            pytest.skip(
                "running as root: chmod 0o500 does not stop root's writes; the error "
                "messages are covered by the parent-is-a-file and errno tests below"
            )

        with pytest.raises(StateError, match=rf"state directory {directory} is not writable"):
            StateStore(path).save(PENDING)

        assert leftovers(directory) == []
        assert StateStore(path).load() == (MEMORY, None)
    finally:
        directory.chmod(0o700)


def test_state_path_under_a_regular_file_raises_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "edgemeter"
    blocker.write_text("not a directory")
    path = blocker / "state.json"

    with pytest.raises(StateError, match=r"a part of the path is a regular file") as caught:
        StateStore(path).save(MEMORY)

    assert str(blocker) in str(caught.value)
    assert leftovers(tmp_path) == []


def test_loading_a_state_path_under_a_regular_file_raises_a_clear_error(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "edgemeter"
    blocker.write_text("not a directory")

    with pytest.raises(StateError, match="regular file"):
        StateStore(blocker / "state.json").load()


def test_state_path_that_is_a_directory_raises_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match=rf"state path {tmp_path} is a directory"):
        StateStore(tmp_path).load()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (errno.ENOSPC, r"no space left to save state file .*\(ENOSPC\); free space"),
        (errno.EROFS, r"state directory .* is read-only: .*\(EROFS\).*StateDirectory="),
        (errno.EACCES, r"state directory .* is not writable .*\(EACCES\).*StateDirectory="),
        (errno.EIO, r"could not save state file .*\(EIO\); check the directory and the SD card"),
    ],
)
def test_write_failures_raise_a_clear_error_and_keep_the_old_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, message: str
) -> None:
    path = tmp_path / "state.json"
    StateStore(path).save(MEMORY)
    store = StateStore(path)

    def failing_fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StateError, match=message):
        store.save(PENDING)
    monkeypatch.undo()

    assert leftovers(tmp_path) == []
    assert StateStore(path).load() == (MEMORY, None)


def test_failed_save_is_retried_by_the_next_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    store = StateStore(path)

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StateError):
        store.save(MEMORY)
    monkeypatch.undo()

    assert store.save(MEMORY)
    assert StateStore(path).load() == (MEMORY, None)


# --- crashes ---------------------------------------------------------------------------


def test_crash_between_write_and_rename_keeps_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    StateStore(path).save(MEMORY)

    def power_cut(src: object, dst: object) -> None:
        raise KeyboardInterrupt  # anything at all, not only OSError

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(KeyboardInterrupt):
        StateStore(path).save(PENDING)
    monkeypatch.undo()

    assert leftovers(tmp_path) == []
    assert StateStore(path).load() == (MEMORY, None)


def test_rename_failure_raises_a_clear_error_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    StateStore(path).save(MEMORY)

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(StateError, match=rf"could not save state file {path}"):
        StateStore(path).save(PENDING)
    monkeypatch.undo()

    assert leftovers(tmp_path) == []
    assert StateStore(path).load() == (MEMORY, None)
