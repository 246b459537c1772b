"""Durable state: the judge's Memory in one small JSON file that survives power cuts.

The last accepted value is the monotonic floor the judge measures every reading
against, so losing it (or half-writing it) would let a misread through after a restart.
A Pi is switched off by pulling the plug and its SD card wears out with writes, hence:

- Saving is atomic: a temp file in the same directory is written, flushed and fsynced,
  then renamed over the old file with `os.replace`, and the directory is fsynced so
  the rename itself survives a power cut. At every instant the file on disk is either
  the complete old state or the complete new one.
- Saving an unchanged Memory does not touch the card.
- A corrupt or unreadable file never stops the daemon: it is moved aside for
  diagnosis and the daemon starts without a previous value, with a warning saying so.
- Problems the user must fix (read-only filesystem, permissions, disk full) raise
  `StateError` with a message naming the path, the problem and the fix.

File format: {"version": 1, "memory": Memory.to_dict(), "saved_at": ISO-8601 UTC}.

What it does not do: decide when to save (the daemon does), judge readings, or keep a
history (one value is all the judge needs).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from edgemeter.plausibility import Memory

STATE_VERSION = 1
# The state is a few hundred bytes; anything far larger is not ours, and reading a
# runaway file into a Pi's memory would be a second failure on top of the first.
MAX_STATE_BYTES = 1 << 20
_TEMP_SUFFIX = ".tmp"
# Test-only fault injection (tests/test_faults_crash.py): seconds to pause between the
# fsynced temp file and the rename, so a SIGKILL lands mid-save on purpose. Unset in
# production.
FAULT_DELAY_STATE_WRITE_ENV = "EDGEMETER_FAULT_DELAY_STATE_WRITE_S"


class StateError(Exception):
    """The state file cannot be used; the message names the path, problem and fix."""


class StateStore:
    """Load and atomically save the judge's Memory at one path."""

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        # What the file holds as far as we know; None until loaded or saved.
        self._on_disk: Memory | None = None

    @property
    def path(self) -> Path:
        return self._path

    def load(self) -> tuple[Memory, str | None]:
        """(memory, warning): Memory() on first run; never raises for bad content."""
        self._remove_stale_temp_files()
        try:
            data = self._read_bounded()
        except FileNotFoundError:
            self._on_disk = Memory()
            return Memory(), None
        except IsADirectoryError as err:
            raise StateError(
                f"state path {self._path} is a directory: set state.path to a file "
                "inside it, e.g. /var/lib/edgemeter/state.json"
            ) from err
        except NotADirectoryError as err:
            raise StateError(
                f"state path {self._path} cannot be used: a part of it is a regular file, "
                "not a directory: set state.path to a file inside a directory"
            ) from err
        except PermissionError as err:
            # Starting afresh here would let the next save replace a file we could not
            # even read, losing the floor for good: make the user fix the permissions.
            raise StateError(
                f"state file {self._path} is not readable by this user ({err.strerror}): "
                "check its owner and mode, and StateDirectory= in the systemd unit"
            ) from err
        except OSError as err:
            return self._set_aside(f"unreadable: {err.strerror or err}")
        try:
            memory = _decode(data)
        except ValueError as err:
            return self._set_aside(str(err))
        self._on_disk = memory
        return memory, None

    def save(self, memory: Memory) -> bool:
        """Write `memory` atomically; False (and no write) when it is already on disk."""
        if self._on_disk is not None and memory == self._on_disk:
            return False
        directory = self._path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _save_error(self._path, err) from err
        payload = _encode(memory)
        temp: str | None = None
        try:
            fd, temp = tempfile.mkstemp(
                dir=directory, prefix=f".{self._path.name}.", suffix=_TEMP_SUFFIX
            )
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            _fault_pause(FAULT_DELAY_STATE_WRITE_ENV)
            os.replace(temp, self._path)
            temp = None
            _fsync_directory(directory)
        except OSError as err:
            raise _save_error(self._path, err) from err
        finally:
            # Any failure, even an interrupt, must not leave debris on the card.
            if temp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
        self._on_disk = memory
        return True

    def _read_bounded(self) -> bytes:
        with self._path.open("rb") as handle:
            data = handle.read(MAX_STATE_BYTES + 1)
        if len(data) > MAX_STATE_BYTES:
            raise OSError(errno.EFBIG, f"larger than {MAX_STATE_BYTES} bytes")
        return data

    def _set_aside(self, problem: str) -> tuple[Memory, str]:
        """Move a bad state file out of the way, keeping it for diagnosis."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self._free_name(f"{self._path}.corrupt-{stamp}")
        # Nothing usable is on disk any more (or never was): the next save must write.
        self._on_disk = None
        try:
            os.replace(self._path, target)
        except OSError as err:
            return Memory(), (
                f"state file {self._path} is corrupt ({problem}) and could not be moved "
                f"aside to {target} ({err.strerror or err}); starting without a previous "
                "value"
            )
        with contextlib.suppress(OSError):
            _fsync_directory(self._path.parent)
        return Memory(), (
            f"state file {self._path} is corrupt ({problem}); moved aside to {target}; "
            "starting without a previous value"
        )

    @staticmethod
    def _free_name(candidate: str) -> Path:
        # Two corruptions in one second must not overwrite the first one's evidence.
        path = Path(candidate)
        for attempt in range(1, 1000):
            if not path.exists():
                return path
            path = Path(f"{candidate}-{attempt}")
        return path

    def _remove_stale_temp_files(self) -> None:
        # A power cut between mkstemp and os.replace leaves a temp file behind; over
        # years of unplugging these would pile up on the card.
        directory = self._path.parent
        with contextlib.suppress(OSError):
            for stale in directory.glob(f".{self._path.name}.*{_TEMP_SUFFIX}"):
                with contextlib.suppress(OSError):
                    stale.unlink()


def _encode(memory: Memory) -> bytes:
    document = {
        "version": STATE_VERSION,
        "memory": memory.to_dict(),
        "saved_at": datetime.now(UTC).isoformat(),
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _decode(data: bytes) -> Memory:
    """The Memory in a state file's bytes; ValueError says what is wrong with them."""
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"not UTF-8 text: {err.reason} at byte {err.start}") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON: {err.msg} at line {err.lineno}") from err
    except RecursionError as err:
        raise ValueError("invalid JSON: nested too deeply") from err
    if not isinstance(document, dict):
        raise ValueError(f"expected a JSON object, got {type(document).__name__}")
    version = document.get("version")
    if version != STATE_VERSION or isinstance(version, bool):
        raise ValueError(
            f"unsupported version {version!r}, this edgemeter reads version {STATE_VERSION}"
        )
    memory = document.get("memory")
    if not isinstance(memory, dict):
        raise ValueError(f"'memory' must be an object, got {type(memory).__name__}")
    return Memory.from_dict(memory)


def _fault_pause(variable: str) -> None:
    """Sleep as long as a test-only fault-injection variable says (unset: not at all)."""
    try:
        delay_s = float(os.environ.get(variable) or 0)
    except ValueError:
        return
    if delay_s > 0:
        time.sleep(delay_s)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        # Some filesystems cannot fsync a directory; the rename has still happened.
        if err.errno not in {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}:
            raise
    finally:
        os.close(fd)


def _save_error(path: Path, err: OSError) -> StateError:
    directory = path.parent
    code = errno.errorcode.get(err.errno or 0, "error")
    detail = f"{err.strerror or err} ({code})"
    if err.errno == errno.EROFS:
        return StateError(
            f"state directory {directory} is read-only: {detail}; the SD card may have "
            "been remounted read-only after errors (check `dmesg` and `mount`), or the "
            "unit's ProtectSystem= hides it: check StateDirectory= / ReadWritePaths="
        )
    if err.errno in {errno.EACCES, errno.EPERM}:
        return StateError(
            f"state directory {directory} is not writable by this user: {detail}; "
            "check StateDirectory= in the systemd unit / the directory's owner and "
            "permissions"
        )
    if err.errno in {errno.ENOSPC, errno.EDQUOT}:
        return StateError(
            f"no space left to save state file {path}: {detail}; free space on the "
            "filesystem holding it (old logs and saved crops are the usual culprits)"
        )
    if err.errno in {errno.ENOTDIR, errno.EEXIST}:
        return StateError(
            f"state directory {directory} cannot be created or used: {detail}; a part "
            "of the path is a regular file: set state.path to a file inside a directory"
        )
    return StateError(
        f"could not save state file {path}: {detail}; check the directory and the SD card"
    )
