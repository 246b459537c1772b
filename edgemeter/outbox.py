"""The outbox: accepted readings wait here, on disk, until the broker has them.

The main loop puts every accepted reading here before anything touches the network,
and the publisher's delivery thread takes the oldest, sends it, and removes it only
after the broker acknowledged it. So a broker outage or a daemon restart never loses
a reading: it is either still in this file or the broker has it.

What it does not do: talk to MQTT, decide what a reading is, or keep history. It is
bounded: when full, the oldest messages are dropped (with a warning), because on a
Pi the SD card must not fill up during a months-long broker outage, and the newest
readings are the ones a user wants.

Storage is SQLite (stdlib) in WAL mode: one small file next to the state file,
crash-safe, and readable with the sqlite3 CLI when a user wants to look inside.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    retain INTEGER NOT NULL,
    qos INTEGER NOT NULL
)
"""


# The newest message put per topic, kept after its delivery: after a crash between the
# outbox and the state file, the daemon re-accepts the reading it already queued, and
# the publisher must recognise it to keep the first time rather than send a second.
_LAST_SCHEMA = """
CREATE TABLE IF NOT EXISTS last_put (
    topic TEXT PRIMARY KEY,
    payload TEXT NOT NULL
)
"""

_DROP_OLDEST = "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)"


class OutboxError(Exception):
    """The outbox file cannot be created or opened (a path or permission problem)."""


@dataclass(frozen=True)
class Message:
    """One message waiting for delivery; `id` grows with every put and is never reused."""

    id: int
    topic: str
    payload: str
    retain: bool
    qos: int


class Outbox:
    """A bounded FIFO of MQTT messages in an SQLite file, safe to share between threads.

    One connection guarded by one lock: the traffic is a put every few seconds and
    a take/remove per delivery, so a lock costs nothing and keeps the count exact.
    """

    def __init__(self, path: str | Path, max_messages: int) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages: must be at least 1, got {max_messages}")
        self._path = Path(path)
        self._max = max_messages
        self._lock = threading.Lock()
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutboxError(
                f"outbox: cannot create directory {self._path.parent}: {err}"
            ) from err
        self._conn = self._open_or_replace()
        # Counted once here, then kept in step by put/remove: COUNT(*) scans the table,
        # which is slow on a Pi once a long outage has filled it.
        self._count = int(self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        if self._count:
            log.info("outbox opened path=%s pending=%d", self._path, self._count)

    @property
    def path(self) -> Path:
        return self._path

    def put(self, topic: str, payload: str, retain: bool, qos: int) -> int:
        """Append a message durably and return its id.

        The commit is on disk when this returns. An sqlite3.Error (disk full, I/O
        error) propagates: the caller must know that the reading was not stored.
        """
        with self._lock:
            with self._conn:  # commits at the end, rolls back on an error
                # One transaction, so the insert and the trim are on disk together.
                self._conn.execute("BEGIN IMMEDIATE")
                cursor = self._conn.execute(
                    "INSERT INTO outbox (topic, payload, retain, qos) VALUES (?, ?, ?, ?)",
                    (topic, payload, int(retain), qos),
                )
                self._conn.execute(
                    "INSERT OR REPLACE INTO last_put (topic, payload) VALUES (?, ?)",
                    (topic, payload),
                )
                excess = self._count + 1 - self._max
                if excess > 0:
                    self._conn.execute(_DROP_OLDEST, (excess,))
            message_id = cursor.lastrowid
            self._count += 1 - max(excess, 0)
        if excess > 0:
            log.warning(
                "outbox full, dropped oldest count=%d max=%d path=%s", excess, self._max, self._path
            )
        assert message_id is not None  # an INSERT always sets it
        return message_id

    def oldest(self, after: int = 0) -> Message | None:
        """The first message with an id above `after` (0: the first of all)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT id, topic, payload, retain, qos FROM outbox WHERE id > ?"
                " ORDER BY id LIMIT 1",
                (after,),
            ).fetchone()
        if row is None:
            return None
        return Message(id=row[0], topic=row[1], payload=row[2], retain=bool(row[3]), qos=row[4])

    def last_put(self, topic: str) -> str | None:
        """The payload most recently put for `topic`, delivered or not; None if never."""
        with self._lock:
            row = self._conn.execute(
                "SELECT payload FROM last_put WHERE topic = ?", (topic,)
            ).fetchone()
        return None if row is None else str(row[0])

    def remove(self, message_id: int) -> None:
        """Delete a delivered message; a message already dropped by a full outbox is fine."""
        with self._lock, self._conn:
            cursor = self._conn.execute("DELETE FROM outbox WHERE id = ?", (message_id,))
            self._count -= cursor.rowcount

    def remove_through(self, message_id: int) -> int:
        """Delete every message up to and including `message_id`; how many went.

        Delivery is in order, so this also clears messages delivered earlier whose own
        removal the disk refused.
        """
        with self._lock, self._conn:
            cursor = self._conn.execute("DELETE FROM outbox WHERE id <= ?", (message_id,))
            self._count -= cursor.rowcount
        return cursor.rowcount

    def count_after(self, message_id: int) -> int:
        """Messages with an id above `message_id` (a query: for rare use)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT COUNT(*) FROM outbox WHERE id > ?", (message_id,)
            ).fetchone()
        return int(row[0])

    def __len__(self) -> int:
        with self._lock:
            return self._count

    def close(self) -> None:
        """Close the file; safe to call twice."""
        with self._lock:
            self._conn.close()

    def _open_or_replace(self) -> sqlite3.Connection:
        """Open the file; a corrupt one is moved aside so the daemon still starts."""
        try:
            return _open(self._path)
        except sqlite3.DatabaseError as err:
            if isinstance(err, sqlite3.OperationalError) and not _looks_corrupt(err):
                # "unable to open database file", read-only directory, disk I/O error:
                # moving the file would not help, and the user has to fix the path.
                raise OutboxError(f"outbox: cannot open {self._path}: {err}") from err
            aside = self._move_aside()
            log.warning(
                "outbox corrupt, moved aside path=%s moved_to=%s error=%s", self._path, aside, err
            )
        try:
            return _open(self._path)
        except sqlite3.DatabaseError as err:
            raise OutboxError(f"outbox: cannot create {self._path}: {err}") from err

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        aside = self._path.with_name(f"{self._path.name}.corrupt-{stamp}")
        # The -wal and -shm files belong to the broken database: a new file must not
        # replay a stale WAL, so they go with it.
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self._path}{suffix}")
            if source.exists():
                source.replace(Path(f"{aside}{suffix}"))
        return aside


def _open(path: Path) -> sqlite3.Connection:
    # check_same_thread=False: the main loop puts, the delivery thread takes and
    # removes; the Outbox lock serialises every use of the connection.
    # isolation_level=None: autocommit; put() opens its transaction explicitly.
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
    try:
        # quick_check reads every page, so garbage, a truncated file or a broken
        # b-tree shows up here at start rather than as a crash in the main loop.
        result = conn.execute("PRAGMA quick_check").fetchone()
        if result is None or result[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check failed: {result}")
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL, not NORMAL: in WAL mode NORMAL skips the fsync at commit, so a power
        # cut (common on a Pi) can roll back the last readings after put() returned.
        # An accepted reading cannot be read again later, so each commit is fsynced;
        # at one reading every few seconds the extra SD-card writes are negligible.
        conn.execute("PRAGMA synchronous=FULL")
        # After a long outage the WAL may have grown; keep it from staying large.
        conn.execute("PRAGMA journal_size_limit=1048576")
        conn.execute(_SCHEMA)
        conn.execute(_LAST_SCHEMA)
    except sqlite3.DatabaseError:
        conn.close()
        raise
    return conn


def _looks_corrupt(err: sqlite3.OperationalError) -> bool:
    text = str(err).lower()
    return "malformed" in text or "not a database" in text or "corrupt" in text
