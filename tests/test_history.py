"""The history keeps what the daemon decided, bounded, across restarts and bad files."""

from __future__ import annotations

import csv
import io
import logging
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgemeter.config import HistoryConfig
from edgemeter.history import Entry, History, HistoryError, format_entries, parse_since

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def crop(shade: int) -> npt.NDArray[np.uint8]:
    """A flat grey digit-window crop whose shade tells which rejection it was."""
    return np.full((40, 120, 3), shade, dtype=np.uint8)


def rows_in_file(directory: Path) -> int:
    with sqlite3.connect(directory / "history.sqlite") as conn:
        return int(conn.execute("SELECT COUNT(*) FROM history").fetchone()[0])


def write_connection(history: History) -> sqlite3.Connection:
    # The one white-box hook: SQLite itself is made to fail the way a full or
    # read-only card makes it fail, rather than a double pretending to.
    conn = history._write
    assert conn is not None
    return conn


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    h = History(tmp_path, HistoryConfig())
    yield h
    h.close()


# -- round trip -----------------------------------------------------------------


def test_accepted_rejected_and_event_come_back_oldest_first_with_their_fields(
    history: History,
) -> None:
    history.record_event(T0 + timedelta(minutes=2), "rebaseline", 12400.5)
    history.record_accepted(T0, 12345.6, "123456", 0.93)
    history.record_rejected(T0 + timedelta(minutes=1), "123999", "jump too large")

    assert history.entries() == [
        Entry(T0, "accepted", 12345.6, "123456", 0.93, None, None),
        Entry(T0 + timedelta(minutes=1), "rejected", None, "123999", None, "jump too large", None),
        Entry(T0 + timedelta(minutes=2), "event", 12400.5, None, None, "rebaseline", None),
    ]


def test_times_come_back_in_utc_and_naive_times_are_utc(history: History) -> None:
    berlin = timezone(timedelta(hours=1))
    history.record_accepted(datetime(2026, 11, 1, 13, 0, 0, 250, tzinfo=berlin), 1.0, "1", 1.0)
    history.record_accepted(datetime(2026, 11, 1, 12, 30), 2.0, "2", 1.0)

    times = [e.ts for e in history.entries()]

    assert times == [T0.replace(microsecond=250), T0 + timedelta(minutes=30)]
    assert all(t.tzinfo == UTC for t in times)


def test_since_keeps_entries_at_or_after_the_moment(history: History) -> None:
    for minute in range(5):
        history.record_accepted(T0 + timedelta(minutes=minute), float(minute), str(minute), 0.9)

    since = history.entries(since=T0 + timedelta(minutes=3))

    assert [e.value for e in since] == [3.0, 4.0]


def test_kinds_and_limit_select_and_cap(history: History) -> None:
    for i in range(4):
        history.record_accepted(T0 + timedelta(minutes=2 * i), float(i), str(i), 0.9)
        history.record_rejected(T0 + timedelta(minutes=2 * i + 1), None, "no digits")

    assert [e.kind for e in history.entries(kinds=["rejected"])] == ["rejected"] * 4
    assert [e.value for e in history.entries(kinds={"accepted"}, limit=2)] == [0.0, 1.0]
    assert history.entries(kinds=[]) == []
    assert history.entries(limit=0) == []


def test_latest_is_newest_first_for_one_kind(history: History) -> None:
    for i in range(10):
        history.record_accepted(T0 + timedelta(minutes=i), float(i), str(i), 0.9)
    history.record_event(T0 + timedelta(hours=1), "wrapped", None)

    assert [e.value for e in history.latest("accepted", 3)] == [9.0, 8.0, 7.0]
    assert [e.reason for e in history.latest("event", 5)] == ["wrapped"]


def test_unknown_kind_is_a_clear_error(history: History) -> None:
    with pytest.raises(ValueError, match="kind: must be one of accepted, rejected, event"):
        history.latest("acepted", 5)
    with pytest.raises(ValueError, match="got bogus"):
        history.entries(kinds=["accepted", "bogus"])


# -- restarts and bounds ------------------------------------------------------------


def test_history_survives_a_restart(tmp_path: Path) -> None:
    first = History(tmp_path, HistoryConfig())
    first.record_accepted(T0, 100.0, "000100", 0.9)
    first.record_rejected(T0 + timedelta(minutes=1), "000900", "jump", crop(80))
    first.close()

    second = History(tmp_path, HistoryConfig())
    second.record_accepted(T0 + timedelta(minutes=2), 101.0, "000101", 0.9)
    entries = second.entries()

    assert [(e.kind, e.raw) for e in entries] == [
        ("accepted", "000100"),
        ("rejected", "000900"),
        ("accepted", "000101"),
    ]
    assert entries[1].frame is not None
    assert (second.frames_directory / entries[1].frame).is_file()
    second.close()


def test_prune_drops_the_oldest_rows_beyond_max_rows(tmp_path: Path) -> None:
    history = History(tmp_path, HistoryConfig(max_rows=100))
    for i in range(130):
        history.record_accepted(T0 + timedelta(seconds=i), float(i), str(i), 0.9)

    history.prune(T0 + timedelta(minutes=5))

    values = [e.value for e in history.entries()]
    assert values == [float(i) for i in range(30, 130)]
    history.close()


def test_recording_alone_keeps_the_row_count_near_max_rows(tmp_path: Path) -> None:
    history = History(tmp_path, HistoryConfig(max_rows=100))
    counts = []
    for i in range(600):
        # One frame time for all: only the write count can trigger pruning here.
        history.record_accepted(T0, float(i), str(i), 0.9)
        counts.append(rows_in_file(tmp_path))

    assert max(counts) <= 105  # a prune every max_rows // 20 writes
    assert history.entries()[-1].value == 599.0
    history.close()


def test_prune_drops_rows_older_than_max_age_days(tmp_path: Path) -> None:
    history = History(tmp_path, HistoryConfig(max_age_days=60))
    for day in range(40):
        history.record_accepted(T0 + timedelta(days=day), float(day), str(day), 0.9)
    now = T0 + timedelta(days=69)

    removed = history.prune(now)

    assert removed == 9
    assert history.entries()[0].ts == now - timedelta(days=60)
    assert history.prune(now) == 0
    history.close()


def test_recording_prunes_by_age_once_frame_time_moves_on(tmp_path: Path) -> None:
    history = History(tmp_path, HistoryConfig(max_age_days=1))
    # A Pi without a clock stamps its first frames 1970 until NTP answers.
    history.record_accepted(datetime(1970, 1, 1, tzinfo=UTC), 1.0, "1", 0.9)
    history.record_accepted(T0, 2.0, "2", 0.9)
    history.record_accepted(T0 + timedelta(hours=2), 3.0, "3", 0.9)

    assert [e.value for e in history.entries()] == [2.0, 3.0]
    history.close()


def test_rejected_frames_are_bounded_newest_kept_older_entries_unnamed(tmp_path: Path) -> None:
    history = History(tmp_path, HistoryConfig(rejected_frames=5))
    for i in range(30):
        history.record_rejected(
            T0 + timedelta(seconds=i), f"{i:06d}", "low confidence", crop(i * 8)
        )

    entries = history.entries()
    files = sorted(history.frames_directory.iterdir())

    assert len(files) == 5
    assert all(e.frame is None for e in entries[:25])
    kept = [e.frame for e in entries[25:]]
    assert sorted(f.name for f in files) == sorted(str(name) for name in kept)
    for i, entry in enumerate(entries[25:], start=25):
        image = cv2.imread(str(history.frames_directory / str(entry.frame)))
        assert image is not None
        assert image.shape == (40, 120, 3)
        assert abs(float(image.mean()) - i * 8) < 3  # this rejection's own crop
    history.close()


def test_pruned_rows_take_their_frames_with_them(tmp_path: Path) -> None:
    history = History(tmp_path, HistoryConfig(max_age_days=1, rejected_frames=10))
    history.record_rejected(T0, "1", "misread", crop(10))
    history.record_rejected(T0 + timedelta(days=3), "2", "misread", crop(20))

    [entry] = history.entries()

    assert [p.name for p in history.frames_directory.iterdir()] == [entry.frame]
    history.close()


def test_no_frames_are_written_when_rejected_frames_is_zero(tmp_path: Path) -> None:
    history = History(tmp_path, HistoryConfig(rejected_frames=0))
    history.record_rejected(T0, "1", "misread", crop(10))

    assert history.entries()[0].frame is None
    assert list(history.frames_directory.iterdir()) == []
    history.close()


def test_start_applies_a_lowered_frame_limit_and_removes_unnamed_frames(tmp_path: Path) -> None:
    history = History(tmp_path, HistoryConfig(rejected_frames=10))
    for i in range(6):
        history.record_rejected(T0 + timedelta(seconds=i), str(i), "misread", crop(i * 20))
    history.close()
    # Left by a power cut between writing a JPEG and the row naming it.
    (tmp_path / "rejected" / "20261101T120000.000000Z-deadbeef.jpg").write_bytes(b"half")

    reopened = History(tmp_path, HistoryConfig(rejected_frames=2))

    named = [e.frame for e in reopened.entries() if e.frame is not None]
    assert len(named) == 2
    assert sorted(p.name for p in reopened.frames_directory.iterdir()) == sorted(
        str(n) for n in named
    )
    assert reopened.entries()[-1].frame is not None  # the newest kept
    reopened.close()


# -- damaged files and unusable places ------------------------------------------------


def test_corrupt_file_is_moved_aside_and_a_new_history_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "history.sqlite"
    path.write_bytes(b"junk from a tired SD card, not an SQLite database" * 100)

    with caplog.at_level(logging.WARNING, logger="edgemeter.history"):
        history = History(tmp_path, HistoryConfig())

    assert history.entries() == []
    history.record_accepted(T0, 1.0, "1", 0.9)
    assert len(history.entries()) == 1
    aside = list(tmp_path.glob("history.sqlite.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"junk from a tired SD card")
    assert "history corrupt, moved aside" in caplog.text
    history.close()


def test_damaged_pages_are_detected_at_open(tmp_path: Path) -> None:
    history = History(tmp_path, HistoryConfig())
    for i in range(300):
        history.record_rejected(T0 + timedelta(seconds=i), str(i), "a reason " * 5)
    history.close()
    path = tmp_path / "history.sqlite"
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # header intact, b-trees broken
    path.write_bytes(bytes(data))

    reopened = History(tmp_path, HistoryConfig())

    assert reopened.entries() == []
    assert list(tmp_path.glob("history.sqlite.corrupt-*"))
    reopened.close()


def test_a_newer_schema_is_refused_and_left_in_place(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "history.sqlite") as conn:
        conn.execute("PRAGMA user_version=99")

    with pytest.raises(HistoryError, match="newer edgemeter"):
        History(tmp_path, HistoryConfig())
    assert not list(tmp_path.glob("history.sqlite.corrupt-*"))


def test_unusable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")

    with pytest.raises(HistoryError, match="not-a-dir") as caught:
        History(blocker / "state", HistoryConfig())
    assert "regular file" in str(caught.value)


def test_full_card_is_a_history_error_naming_the_file_and_the_fix(history: History) -> None:
    history.record_accepted(T0, 1.0, "1", 0.9)
    conn = write_connection(history)
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    conn.execute(f"PRAGMA max_page_count={pages}")  # SQLite now fails as on a full card

    with pytest.raises(HistoryError) as caught:
        for i in range(2000):  # bounded: the file needs a new page long before
            history.record_rejected(T0 + timedelta(seconds=i), None, "x" * 200)

    message = str(caught.value)
    assert str(history.path) in message
    assert "free space" in message
    conn.execute("PRAGMA max_page_count=1073741823")
    history.record_accepted(T0 + timedelta(hours=1), 2.0, "2", 0.9)  # and it recovers
    assert history.latest("accepted", 1)[0].value == 2.0


def test_read_only_card_is_a_history_error_naming_the_file_and_the_fix(
    history: History,
) -> None:
    # query_only makes SQLite answer SQLITE_READONLY, as it does on a card the kernel
    # has remounted read-only.
    write_connection(history).execute("PRAGMA query_only=1")

    with pytest.raises(HistoryError) as caught:
        history.record_event(T0, "started", None)

    message = str(caught.value)
    assert str(history.path) in message
    assert "read-only" in message
    assert "dmesg" in message


def test_unwritable_frames_folder_keeps_the_row_and_raises(history: History) -> None:
    frames = history.frames_directory
    frames.rmdir()
    frames.write_text("a file where the folder should be")

    with pytest.raises(HistoryError, match="rejected") as caught:
        history.record_rejected(T0, "123", "misread", crop(50))

    assert "cannot write a rejected frame" in str(caught.value)
    assert history.entries() == [Entry(T0, "rejected", None, "123", None, "misread", None)]


def test_a_bad_image_keeps_the_row_without_a_frame(history: History) -> None:
    history.record_rejected(T0, "123", "misread", np.zeros((0, 0), dtype=np.uint8))

    assert history.entries()[0].frame is None


def test_closed_history_raises_history_error(tmp_path: Path) -> None:
    history = History(tmp_path, HistoryConfig())
    history.close()
    history.close()  # twice is fine

    with pytest.raises(HistoryError, match="closed"):
        history.record_accepted(T0, 1.0, "1", 0.9)
    with pytest.raises(HistoryError, match="closed"):
        history.latest("accepted", 1)


def test_read_only_opening_reads_beside_a_running_writer(tmp_path: Path) -> None:
    writer = History(tmp_path, HistoryConfig())
    writer.record_accepted(T0, 1.0, "1", 0.9)
    reader = History(tmp_path, HistoryConfig(), read_only=True)

    writer.record_accepted(T0 + timedelta(minutes=1), 2.0, "2", 0.9)

    assert [e.value for e in reader.entries()] == [1.0, 2.0]
    with pytest.raises(HistoryError, match="read-only"):
        reader.record_event(T0, "nope", None)
    reader.close()
    writer.close()


def test_read_only_opening_of_a_missing_file_says_how_it_gets_there(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match=r"history\.enabled"):
        History(tmp_path, HistoryConfig(), read_only=True)
    assert not (tmp_path / "history.sqlite").exists()


def test_file_is_in_wal_mode_and_readable_with_plain_sqlite(history: History) -> None:
    history.record_accepted(T0, 12345.0, "012345", 0.9)

    with sqlite3.connect(history.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT ts, raw FROM history").fetchall() == [
            ("2026-11-01T12:00:00.000000Z", "012345")
        ]


# -- threads ----------------------------------------------------------------------------


def test_a_reader_thread_sees_consistent_history_while_the_daemon_writes(
    history: History,
) -> None:
    total = 300
    errors: list[BaseException] = []
    done = threading.Event()
    seen: list[int] = []

    def write() -> None:
        try:
            for i in range(total):
                history.record_accepted(T0 + timedelta(seconds=i), float(i), str(i), 0.9)
        except BaseException as err:  # surfaced by the assertion below
            errors.append(err)
        finally:
            done.set()

    def read() -> None:
        try:
            for _ in range(100_000):  # bounded: ends long before on any machine
                newest = [float(e.value or 0) for e in history.latest("accepted", 5)]
                assert newest == sorted(newest, reverse=True)
                values = [e.value for e in history.entries(kinds=["accepted"])]
                assert values == [float(i) for i in range(len(values))]  # no gaps, in order
                seen.append(len(values))
                if done.is_set():
                    return
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert seen == sorted(seen)  # never goes backwards
    assert len(history.entries()) == total


# -- format_entries ----------------------------------------------------------------------

SAMPLE = [
    Entry(T0, "accepted", 12345.6, "123456", 0.934, None, None),
    Entry(T0 + timedelta(seconds=5), "rejected", None, None, None, "no digits", "a.jpg"),
    Entry(T0 + timedelta(seconds=10), "event", 99999.0, None, None, "wrapped, at 99999", None),
]


def test_table_has_a_header_and_aligned_columns() -> None:
    lines = format_entries(SAMPLE, csv=False).splitlines()

    assert lines[0].split() == ["time", "kind", "value", "raw", "confidence", "reason"]
    assert lines[1].split() == [
        "2026-11-01T12:00:00Z",
        "accepted",
        "12345.6",
        "123456",
        "0.93",
        "-",
    ]
    assert lines[2].split()[:5] == ["2026-11-01T12:00:05Z", "rejected", "-", "-", "-"]
    assert lines[3].endswith("wrapped, at 99999")
    kind_at = lines[0].index("kind")
    assert [line[kind_at:].split()[0] for line in lines[1:]] == ["accepted", "rejected", "event"]
    value_end = lines[0].index("value") + len("value")
    assert [line[:value_end].split()[-1] for line in lines[1:]] == ["12345.6", "-", "99999"]


def test_table_keeps_one_line_per_entry_whatever_the_reason() -> None:
    entry = Entry(T0, "rejected", None, "1", None, "first line\nsecond line", None)

    assert len(format_entries([entry], csv=False).splitlines()) == 2


def test_csv_parses_back_with_the_csv_module() -> None:
    rows = list(csv.DictReader(io.StringIO(format_entries(SAMPLE, csv=True))))

    assert rows == [
        {
            "time": "2026-11-01T12:00:00Z",
            "kind": "accepted",
            "value": "12345.6",
            "raw": "123456",
            "confidence": "0.934",
            "reason": "",
            "frame": "",
        },
        {
            "time": "2026-11-01T12:00:05Z",
            "kind": "rejected",
            "value": "",
            "raw": "",
            "confidence": "",
            "reason": "no digits",
            "frame": "a.jpg",
        },
        {
            "time": "2026-11-01T12:00:10Z",
            "kind": "event",
            "value": "99999",
            "raw": "",
            "confidence": "",
            "reason": "wrapped, at 99999",
            "frame": "",
        },
    ]


def test_empty_history_formats_as_a_header_only() -> None:
    assert format_entries([], csv=False).split() == [
        "time",
        "kind",
        "value",
        "raw",
        "confidence",
        "reason",
    ]
    assert format_entries([], csv=True) == "time,kind,value,raw,confidence,reason,frame\r\n"


@settings(max_examples=60, deadline=None)
@given(
    reason=st.text(max_size=40),
    value=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    micro=st.integers(0, 999_999),
)
def test_csv_round_trips_any_reason_and_value(reason: str, value: float, micro: int) -> None:
    ts = T0.replace(microsecond=micro)
    entry = Entry(ts, "event", value, None, None, reason, None)

    [row] = list(csv.DictReader(io.StringIO(format_entries([entry], csv=True), newline="")))

    assert row["reason"] == reason
    assert float(row["value"]) == value
    assert datetime.fromisoformat(row["time"]) == ts


# -- parse_since -------------------------------------------------------------------------

NOW = datetime(2026, 11, 8, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T12:00", datetime(2026, 11, 1, 12, 0, tzinfo=UTC)),
        ("2026-11-01 12:00:30", datetime(2026, 11, 1, 12, 0, 30, tzinfo=UTC)),
        ("2026-11-01T12:00Z", datetime(2026, 11, 1, 12, 0, tzinfo=UTC)),
        ("2026-11-01T13:00+01:00", datetime(2026, 11, 1, 12, 0, tzinfo=UTC)),
        ("7d", NOW - timedelta(days=7)),
        ("12h", NOW - timedelta(hours=12)),
        ("30m", NOW - timedelta(minutes=30)),
        (" 1.5H ", NOW - timedelta(hours=1.5)),
        ("0d", NOW),
    ],
)
def test_since_accepts_iso_dates_times_and_ages(text: str, expected: datetime) -> None:
    result = parse_since(text, NOW)

    assert result == expected
    assert result.tzinfo == UTC


@pytest.mark.parametrize(
    "text", ["", "yesterday", "7", "-7d", "7y", "2026-13-01", "2026-11-01T25:00", "d7"]
)
def test_since_rejects_anything_else_saying_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="2026-11-01T12:00") as caught:
        parse_since(text, NOW)
    assert repr(text) in str(caught.value)
    assert "7d" in str(caught.value)


def test_since_too_far_back_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="too far"):
        parse_since("99999999999d", NOW)


@settings(max_examples=60)
@given(amount=st.integers(0, 100_000), unit=st.sampled_from(["d", "h", "m"]))
def test_an_age_is_that_long_before_now(amount: int, unit: str) -> None:
    span = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}[unit]

    assert parse_since(f"{amount}{unit}", NOW) == NOW - amount * span


@settings(max_examples=60)
@given(
    moment=st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    )
)
def test_an_iso_time_reads_back_as_itself(moment: datetime) -> None:
    assert parse_since(moment.isoformat(), NOW) == moment
