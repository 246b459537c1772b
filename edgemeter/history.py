"""The history: accepted readings, rejections and events in a small SQLite file.

The daemon records what it decided about each cycle so that a user can look back
(`edgemeter history`, the web page) and see what was read and why a reading was
refused. For a rejected reading the crop of the digit window can be kept as a JPEG in
`rejected/` next to the database, the last `history.rejected_frames` of them, so
"why was this refused?" can be answered by looking at what the camera saw.

What it does not do: decide anything, publish, or hold the value the judge trusts.
The state file and the outbox are the sources of truth; this file is a diagnostic
log. So it may lose its last commit on a power cut, and every problem writing it
(full or read-only card) is a `HistoryError` that the daemon logs and shrugs off:
the history must never stop the meter.

It is bounded for years on an SD card: rows older than `history.max_age_days` and
beyond `history.max_rows` are pruned in batches, and the JPEGs are bounded in count.
The freed pages are reused by new rows, so the file stops growing at its high-water
mark without a VACUUM (which would rewrite the whole file on every prune).

Storage follows `edgemeter.outbox`: one file, WAL mode, checked with quick_check at
open and moved aside when corrupt, readable with the sqlite3 CLI. Times are stored as
fixed-width ISO-8601 UTC text ("2026-11-01T12:00:05.000000Z"), so they are readable
there and sort as text in time order.
"""

from __future__ import annotations

import contextlib
import csv as csv_module
import errno
import io
import logging
import re
import secrets
import sqlite3
import threading
import time
import typing
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgemeter.outbox import _looks_corrupt

if TYPE_CHECKING:
    import numpy.typing as npt

    from edgemeter.config import HistoryConfig

log = logging.getLogger(__name__)

Kind = Literal["accepted", "rejected", "event"]
KINDS: tuple[Kind, ...] = typing.get_args(Kind)

DB_NAME = "history.sqlite"
FRAMES_DIR = "rejected"
SCHEMA_VERSION = 1

# Automatic pruning runs on the first write, then when an hour of frame time has
# passed or after a batch of writes, whichever comes first. Deleting a batch of
# old rows at once touches a few pages; deleting one row per insert would add page
# writes to every record for no gain (the history is not the source of truth).
PRUNE_INTERVAL = timedelta(hours=1)
PRUNE_BATCH_MAX = 1000
# The JPEGs are crops of the digit window (a few kB each); quality 85 keeps the
# digits' edges clear, which is what a user looks at.
JPEG_QUALITY = 85
# A reader (sqlite3 shell, the CLI) that holds a lock must not stall the meter's
# cycle for long: after this the write fails as a HistoryError and the cycle goes on.
BUSY_TIMEOUT_S = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    value REAL,
    raw TEXT,
    confidence REAL,
    reason TEXT,
    frame TEXT
);
CREATE INDEX IF NOT EXISTS history_ts ON history (ts);
CREATE INDEX IF NOT EXISTS history_kind_ts ON history (kind, ts);
-- Only the last few rows have a JPEG: this partial index finds them without
-- scanning the whole table when the oldest frames are trimmed.
CREATE INDEX IF NOT EXISTS history_frames ON history (id) WHERE frame IS NOT NULL;
"""

_SELECT = "SELECT ts, kind, value, raw, confidence, reason, frame FROM history"


class HistoryError(Exception):
    """The history cannot be written or read; the message names the path and the fix."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of history.

    ts: the frame's time, UTC. value: in the meter's units (decimals applied), for
    accepted readings and events that carry one. raw: the digits as read. reason: the
    rejection reason or the event text. frame: the file name (in `rejected/`) of the
    JPEG kept for a rejected reading; None when none was kept or it has been rotated
    out to bound the folder.
    """

    ts: datetime
    kind: Kind
    value: float | None
    raw: str | None
    confidence: float | None
    reason: str | None
    frame: str | None


class History:
    """The history database at `directory/history.sqlite`, shared by threads.

    The daemon's thread writes; a web server thread (or the CLI) reads. Writes go
    through one connection and reads through another, each under its own lock: in
    WAL mode a reader sees every committed row without waiting for a write, so a
    long `entries()` for the web page never delays the meter's cycle.

    `read_only=True` is for `edgemeter history` while the daemon runs: it never
    creates, repairs, moves or prunes anything, and a missing file is a HistoryError.
    """

    def __init__(
        self, directory: str | Path, config: HistoryConfig, *, read_only: bool = False
    ) -> None:
        self._directory = Path(directory)
        self._path = self._directory / DB_NAME
        self._frames = self._directory / FRAMES_DIR
        self._config = config
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._closed = False
        self._last_prune: datetime | None = None
        self._writes_since_prune = 0
        # Small configs stay close to max_rows: at most 5% over between prunes.
        self._prune_batch = max(1, min(PRUNE_BATCH_MAX, config.max_rows // 20))
        self._write: sqlite3.Connection | None = None
        if read_only:
            self._read = self._open_read_only()
            return
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            self._frames.mkdir(exist_ok=True)
        except OSError as err:
            raise _os_error(self._directory, "create", err) from err
        self._write = self._open_or_replace()
        try:
            self._read = _connect(self._path)
            # A second line of defence: the reading side can never modify the file.
            self._read.execute("PRAGMA query_only=1")
        except sqlite3.Error as err:
            self._write.close()
            raise _sqlite_error(self._path, "open", err) from err
        self._tidy_frames()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def frames_directory(self) -> Path:
        """Where the JPEGs named in `Entry.frame` are."""
        return self._frames

    # -- writing ------------------------------------------------------------

    def record_accepted(self, ts: datetime, value: float, raw: str, confidence: float) -> None:
        if self._insert(ts, "accepted", value, raw, confidence, None):
            self.prune(ts)

    def record_rejected(
        self,
        ts: datetime,
        raw: str | None,
        reason: str,
        window_image: npt.NDArray[Any] | None = None,
    ) -> None:
        """Record a rejection; keep `window_image` as a JPEG if frames are kept.

        The JPEG is written before the row that names it, so a row never points at a
        file that was not written; a crash in between leaves an unnamed file that
        the next start removes. If the JPEG cannot be written the rejection is still
        recorded (without a frame) and the problem is raised as a HistoryError.
        """
        frame: str | None = None
        frame_error: HistoryError | None = None
        if window_image is not None and self._config.rejected_frames > 0:
            try:
                frame = self._write_frame(ts, window_image)
            except HistoryError as err:
                frame_error = err
        try:
            due = self._insert(ts, "rejected", None, raw, None, reason, frame)
        except HistoryError:
            # No row names it: remove it now rather than at the next start.
            if frame is not None:
                with contextlib.suppress(OSError):
                    (self._frames / frame).unlink()
            raise
        if due:
            self.prune(ts)
        if frame_error is not None:
            raise frame_error

    def record_event(self, ts: datetime, text: str, value: float | None) -> None:
        if self._insert(ts, "event", value, None, None, text):
            self.prune(ts)

    def prune(self, now: datetime) -> int:
        """Drop rows older than max_age_days, then the oldest beyond max_rows.

        Returns the number of rows removed; their JPEGs are deleted too. Age is
        measured on the frame times, so rows stamped 1970 by a Pi that booted without
        a clock go at the first prune. Row order for max_rows is the order of
        recording, which a clock jump cannot disturb.
        """
        conn = self._writer()
        cutoff = _ts_text(_as_utc(now) - timedelta(days=self._config.max_age_days))
        with self._write_lock:
            self._check_open()
            try:
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    # OFFSET walks the rowid b-tree; fine once an hour, even on a Pi.
                    row = conn.execute(
                        "SELECT id FROM history ORDER BY id DESC LIMIT 1 OFFSET ?",
                        (self._config.max_rows,),
                    ).fetchone()
                    keep_from = int(row[0]) + 1 if row is not None else 0
                    frames = [
                        str(r[0])
                        for r in conn.execute(
                            "SELECT frame FROM history"
                            " WHERE frame IS NOT NULL AND (ts < ? OR id < ?)",
                            (cutoff, keep_from),
                        )
                    ]
                    removed = conn.execute(
                        "DELETE FROM history WHERE ts < ? OR id < ?", (cutoff, keep_from)
                    ).rowcount
            except sqlite3.Error as err:
                raise _sqlite_error(self._path, "prune", err) from err
            self._last_prune = _as_utc(now)
            self._writes_since_prune = 0
        self._unlink_frames(frames)
        if removed:
            log.debug(
                "history pruned removed=%d frames=%d path=%s", removed, len(frames), self._path
            )
        return removed

    # -- reading ------------------------------------------------------------

    def entries(
        self,
        since: datetime | None = None,
        kinds: Collection[str] | None = None,
        limit: int | None = None,
    ) -> list[Entry]:
        """Entries at or after `since`, oldest first; `limit` keeps the oldest of them.

        For the newest entries use `latest()`.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit: must be >= 0, got {limit}")
        clauses: list[str] = []
        params: list[object] = []
        if since is not None:
            clauses.append("ts >= ?")
            params.append(_ts_text(_as_utc(since)))
        if kinds is not None:
            wanted = _check_kinds(kinds)
            if not wanted:
                return []
            clauses.append(f"kind IN ({', '.join('?' * len(wanted))})")
            params.extend(wanted)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(-1 if limit is None else limit)  # LIMIT -1: no limit
        # Only fixed text and placeholders are joined into the SQL; values are bound.
        sql = f"{_SELECT} {where} ORDER BY ts, id LIMIT ?"
        return self._select(sql, params)

    def latest(self, kind: str, n: int) -> list[Entry]:
        """The newest `n` entries of one kind, newest first (for the web page)."""
        _check_kinds([kind])
        if n < 0:
            raise ValueError(f"n: must be >= 0, got {n}")
        sql = f"{_SELECT} WHERE kind = ? ORDER BY ts DESC, id DESC LIMIT ?"
        return self._select(sql, [kind, n])

    def close(self) -> None:
        """Close the file; safe to call twice. Later calls raise HistoryError."""
        with self._write_lock, self._read_lock:
            if self._closed:
                return
            self._closed = True
            self._read.close()
            if self._write is not None:
                self._write.close()

    # -- internals ----------------------------------------------------------

    def _insert(
        self,
        ts: datetime,
        kind: Kind,
        value: float | None,
        raw: str | None,
        confidence: float | None,
        reason: str | None,
        frame: str | None = None,
    ) -> bool:
        """Write one row; True when a prune is due (the caller runs it afterwards)."""
        conn = self._writer()
        ts = _as_utc(ts)
        with self._write_lock:
            self._check_open()
            try:
                # One small transaction per record: the insert and, for a new JPEG,
                # the un-naming of the frame it pushes out are on disk together.
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(
                        "INSERT INTO history (ts, kind, value, raw, confidence, reason, frame)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (_ts_text(ts), kind, value, raw, confidence, reason, frame),
                    )
                    rotated = self._rotate_frames(conn) if frame is not None else []
            except sqlite3.Error as err:
                raise _sqlite_error(self._path, "write", err) from err
            self._writes_since_prune += 1
            due = (
                self._last_prune is None
                or self._writes_since_prune >= self._prune_batch
                or ts - self._last_prune >= PRUNE_INTERVAL
            )
        self._unlink_frames(rotated)
        return due

    def _rotate_frames(self, conn: sqlite3.Connection) -> list[str]:
        """Un-name the frames beyond the newest `rejected_frames`; return their files.

        The rows stay (the rejection happened); their `frame` becomes NULL, so an
        entry never names a file that is gone.
        """
        old = conn.execute(
            "SELECT id, frame FROM history WHERE frame IS NOT NULL"
            " ORDER BY id DESC LIMIT -1 OFFSET ?",
            (self._config.rejected_frames,),
        ).fetchall()
        if old:
            conn.executemany("UPDATE history SET frame = NULL WHERE id = ?", [(r[0],) for r in old])
        return [str(r[1]) for r in old]

    def _write_frame(self, ts: datetime, image: npt.NDArray[Any]) -> str | None:
        # Imported here: OpenCV takes a while to load on a Pi, and `edgemeter history`
        # only reads.
        import cv2  # noqa: PLC0415

        try:
            ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            problem = "" if ok else "imencode returned false"
        except cv2.error as err:
            ok, problem = False, str(err).strip()
        if not ok:
            # A bad image is our bug, not the user's: keep the row, drop the picture.
            log.warning(
                "history frame not encoded shape=%s dtype=%s error=%s",
                getattr(image, "shape", None),
                getattr(image, "dtype", None),
                problem,
            )
            return None
        stamp = _as_utc(ts).strftime("%Y%m%dT%H%M%S.%fZ")
        # The random part keeps two rejections with one frame time (a replay) apart.
        name = f"{stamp}-{secrets.token_hex(4)}.jpg"
        target = self._frames / name
        try:
            # No fsync: a JPEG lost to a power cut is a missing picture, nothing more.
            target.write_bytes(encoded.tobytes())
        except OSError as err:
            with contextlib.suppress(OSError):
                target.unlink()
            raise _os_error(self._frames, "write a rejected frame in", err) from err
        return name

    def _unlink_frames(self, names: Sequence[str]) -> None:
        for name in names:
            try:
                (self._frames / name).unlink()
            except FileNotFoundError:
                pass  # already gone: the goal is reached
            except OSError as err:
                # Left behind now, removed by the tidy-up at the next start.
                log.warning("history frame not deleted path=%s error=%s", self._frames / name, err)

    def _tidy_frames(self) -> None:
        """At start: apply a lowered `rejected_frames`, delete JPEGs no row names.

        Unnamed files come from a crash between writing a JPEG and its row, or from
        a corrupt database that was moved aside; without this they would pile up.
        """
        assert self._write is not None
        try:
            with self._write:
                self._write.execute("BEGIN IMMEDIATE")
                self._rotate_frames(self._write)
            named = {
                str(r[0])
                for r in self._write.execute(
                    "SELECT frame FROM history WHERE frame IS NOT NULL"
                ).fetchall()
            }
            stray = [p.name for p in self._frames.glob("*.jpg") if p.name not in named]
        except (sqlite3.Error, OSError) as err:
            # Tidying is housekeeping: the next start tries again.
            log.warning("history frames not tidied path=%s error=%s", self._frames, err)
            return
        self._unlink_frames(stray)
        if stray:
            log.info("history removed unnamed frames count=%d path=%s", len(stray), self._frames)

    def _select(self, sql: str, params: Sequence[object]) -> list[Entry]:
        with self._read_lock:
            self._check_open()
            try:
                rows = self._read.execute(sql, params).fetchall()
            except sqlite3.Error as err:
                raise _sqlite_error(self._path, "read", err) from err
        return [_entry(row) for row in rows]

    def _writer(self) -> sqlite3.Connection:
        if self._write is None:
            raise HistoryError(f"history: {self._path} was opened read-only")
        return self._write

    def _check_open(self) -> None:
        if self._closed:
            raise HistoryError(f"history: {self._path} is closed")

    def _open_read_only(self) -> sqlite3.Connection:
        if not self._path.is_file():
            raise HistoryError(
                f"history: no history at {self._path}: it is written by `edgemeter run`"
                " when history.enabled is true (check state.path in the config)"
            )
        try:
            conn = _connect(self._path, read_only=True)
            _check_version(conn, self._path)
        except sqlite3.Error as err:
            raise _sqlite_error(self._path, "open", err) from err
        return conn

    def _open_or_replace(self) -> sqlite3.Connection:
        """Open the file; a corrupt one is moved aside so the daemon still starts."""
        try:
            return _open(self._path)
        except sqlite3.DatabaseError as err:
            if isinstance(err, sqlite3.OperationalError) and not _looks_corrupt(err):
                # Cannot open, read-only, I/O error: moving the file would not help.
                raise _sqlite_error(self._path, "open", err) from err
            try:
                aside = _move_aside(self._path)
            except OSError as move_err:
                raise _os_error(
                    self._directory, "move the corrupt history aside in", move_err
                ) from err
            log.warning(
                "history corrupt, moved aside path=%s moved_to=%s error=%s", self._path, aside, err
            )
        try:
            return _open(self._path)
        except sqlite3.Error as err:
            raise _sqlite_error(self._path, "create", err) from err


def _connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    # check_same_thread=False: each connection is used under its own History lock,
    # from whichever thread holds it. isolation_level=None: autocommit; the writes
    # open their transactions explicitly.
    target = f"file:{path}?mode=ro" if read_only else str(path)
    return sqlite3.connect(
        target,
        uri=read_only,
        check_same_thread=False,
        isolation_level=None,
        timeout=BUSY_TIMEOUT_S,
    )


def _open(path: Path) -> sqlite3.Connection:
    conn = _connect(path)
    try:
        # As in the outbox: quick_check reads every page, so a damaged file shows up
        # here at start (and is moved aside) rather than as errors for months.
        result = conn.execute("PRAGMA quick_check").fetchone()
        if result is None or result[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check failed: {result}")
        _check_version(conn, path)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL, unlike the outbox's FULL: in WAL mode a power cut may lose the last
        # commit or two but never corrupts the file. That is acceptable here because
        # the history is not the source of truth (the state file and the outbox are),
        # and it saves an fsync, i.e. SD-card wear and latency, on every record.
        conn.execute("PRAGMA synchronous=NORMAL")
        # The WAL is reset to at most this size after a checkpoint, not left large.
        conn.execute("PRAGMA journal_size_limit=1048576")
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        # Also for the HistoryError of a newer schema: never leak the handle.
        conn.close()
        raise
    return conn


def _check_version(conn: sqlite3.Connection, path: Path) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        # Not corrupt, just newer: moving it aside would throw away a good history.
        raise HistoryError(
            f"history: {path} was written by a newer edgemeter (schema {version}, this one"
            f" reads {SCHEMA_VERSION}): upgrade edgemeter, or move the file away to start"
            " a new history"
        )


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    # Two corruptions in one second must not overwrite the first one's evidence.
    for attempt in range(1, 1000):
        if not aside.exists():
            break
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{attempt}")
    # The -wal and -shm files belong to the broken database: a new file must not
    # replay a stale WAL, so they go with it.
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.replace(Path(f"{aside}{suffix}"))
    return aside


def _sqlite_error(path: Path, action: str, err: sqlite3.Error) -> HistoryError:
    """A HistoryError naming the file, what SQLite said, and what the user can do."""
    name = getattr(err, "sqlite_errorname", "") or ""
    text = str(err)
    lowered = text.lower()
    if name.startswith("SQLITE_FULL") or "disk is full" in lowered:
        fix = (
            "free space on the SD card, or lower history.max_rows / history.max_age_days"
            " (the history is pruned to those bounds)"
        )
    elif name.startswith("SQLITE_READONLY") or "readonly" in lowered:
        fix = (
            "the file or its filesystem is read-only: an SD card with errors is remounted"
            " read-only (check `dmesg` and `mount`); otherwise check the owner of the file"
            " and StateDirectory= / ReadWritePaths= in the systemd unit"
        )
    elif name.startswith("SQLITE_BUSY") or "locked" in lowered:
        fix = "another program holds the file (an sqlite3 shell?): close it"
    elif name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or (
        isinstance(err, sqlite3.OperationalError) and _looks_corrupt(err)
    ):
        fix = "the file is damaged: restart edgemeter, which moves it aside and starts afresh"
    elif name.startswith("SQLITE_CANTOPEN"):
        fix = "check that the directory exists and is writable by this user"
    else:
        fix = "check the SD card (`dmesg`) and the state directory"
    detail = f"{text} ({name})" if name else text
    return HistoryError(f"history: cannot {action} {path}: {detail}; {fix}")


def _os_error(path: Path, action: str, err: OSError) -> HistoryError:
    code = errno.errorcode.get(err.errno or 0, "error")
    detail = f"{err.strerror or err} ({code})"
    if err.errno == errno.EROFS:
        fix = (
            "the filesystem is read-only: an SD card with errors is remounted read-only"
            " (check `dmesg` and `mount`), or the unit's ProtectSystem= hides it"
        )
    elif err.errno in {errno.EACCES, errno.EPERM}:
        fix = "check the directory's owner and StateDirectory= in the systemd unit"
    elif err.errno in {errno.ENOSPC, errno.EDQUOT}:
        fix = "free space on the SD card, or lower history.rejected_frames"
    elif err.errno in {errno.ENOTDIR, errno.EEXIST}:
        fix = "a part of the path is a regular file: set state.path to a file in a directory"
    else:
        fix = "check the SD card (`dmesg`) and the state directory"
    return HistoryError(f"history: cannot {action} {path}: {detail}; {fix}")


def _check_kinds(kinds: Collection[str]) -> list[str]:
    wanted = list(dict.fromkeys(kinds))
    unknown = [k for k in wanted if k not in KINDS]
    if unknown:
        raise ValueError(f"kind: must be one of {', '.join(KINDS)}, got {', '.join(unknown)}")
    return wanted


def _as_utc(ts: datetime) -> datetime:
    # Naive means UTC throughout edgemeter (as in parse_since), never local time:
    # a Pi's local zone changes with daylight saving, UTC does not.
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _ts_text(ts: datetime) -> str:
    # Fixed width (always microseconds, four-digit year) so text order is time order.
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _entry(row: tuple[Any, ...]) -> Entry:
    ts, kind, value, raw, confidence, reason, frame = row
    return Entry(
        ts=datetime.fromisoformat(ts),
        kind=typing.cast(Kind, kind),
        value=value,
        raw=raw,
        confidence=confidence,
        reason=reason,
        frame=frame,
    )


# -- presentation ---------------------------------------------------------------

_TABLE_HEADER = ("time", "kind", "value", "raw", "confidence", "reason")
_CSV_HEADER = (*_TABLE_HEADER, "frame")
_RIGHT_ALIGNED = {2, 4}  # value, confidence: numbers line up on their last digit
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def format_entries(entries: Sequence[Entry], csv: bool) -> str:
    """Entries as an aligned table for a terminal, or as CSV with a header row.

    The table has the columns time, kind, value, raw, confidence, reason; empty
    cells show "-". The CSV adds the frame file name, leaves empty cells empty and
    keeps full precision (times with microseconds), for spreadsheets and scripts.
    """
    if csv:
        buffer = io.StringIO()
        # The csv module's default CRLF line ends (RFC 4180, what spreadsheets expect)
        # also make it quote a lone CR inside a field; "\n" would leave that unquoted.
        writer = csv_module.writer(buffer)
        writer.writerow(_CSV_HEADER)
        for e in entries:
            writer.writerow(
                [
                    _iso(e.ts),
                    e.kind,
                    _number(e.value),
                    e.raw or "",
                    _number(e.confidence),
                    e.reason or "",
                    e.frame or "",
                ]
            )
        return buffer.getvalue()
    rows = [_TABLE_HEADER, *(_table_row(e) for e in entries)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_TABLE_HEADER))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i in _RIGHT_ALIGNED else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _table_row(e: Entry) -> tuple[str, str, str, str, str, str]:
    confidence = f"{e.confidence:.2f}" if e.confidence is not None else "-"
    # A reason with a newline would break the table's rows apart.
    reason = _CONTROL.sub(" ", e.reason) if e.reason else "-"
    return (
        e.ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        e.kind,
        _number(e.value) or "-",
        e.raw or "-",
        confidence,
        reason,
    )


def _number(value: float | None) -> str:
    if value is None:
        return ""
    # 12345.0 km reads as 12345; other values keep their shortest exact form,
    # never the exponent notation of "%g" (1.23457e+06).
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- command-line input -----------------------------------------------------------

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhm])\s*$", re.IGNORECASE)
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
_SINCE_HELP = (
    "expected a date or time such as 2026-11-01 or 2026-11-01T12:00 (UTC unless a zone"
    " such as +01:00 or Z is given), or an age such as 7d, 12h or 30m"
)


def parse_since(text: str, now: datetime) -> datetime:
    """The moment `--since TEXT` means, in UTC.

    ISO-8601 dates and times, with or without a zone (naive = UTC), or an age
    before `now`: "7d", "12h", "30m". ValueError says what is accepted.
    """
    match = _RELATIVE.match(text)
    if match:
        amount, unit = float(match.group(1)), match.group(2).lower()
        try:
            return _as_utc(now) - timedelta(**{_UNITS[unit]: amount})
        except OverflowError as err:
            raise ValueError(f"since: {text!r} reaches back too far; {_SINCE_HELP}") from err
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as err:
        raise ValueError(f"since: {text!r} is not a date, time or age; {_SINCE_HELP}") from err
    return _as_utc(moment)
