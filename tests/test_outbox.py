"""The outbox keeps messages in order on disk, bounded, and survives a corrupt file."""

from __future__ import annotations

import logging
import sqlite3
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgemeter.outbox import Message, Outbox, OutboxError

TOPIC = "edgemeter/car/reading"


def put_values(outbox: Outbox, values: range | list[int]) -> list[int]:
    return [outbox.put(TOPIC, str(v), retain=True, qos=1) for v in values]


def drain(outbox: Outbox) -> list[str]:
    payloads = []
    while (message := outbox.oldest()) is not None:
        payloads.append(message.payload)
        outbox.remove(message.id)
    return payloads


def test_messages_come_out_in_put_order_with_their_settings(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", max_messages=100)
    first = outbox.put("a/reading", "1", retain=True, qos=1)
    outbox.put("a/other", "2", retain=False, qos=0)

    assert outbox.oldest() == Message(id=first, topic="a/reading", payload="1", retain=True, qos=1)
    assert len(outbox) == 2
    outbox.remove(first)
    assert outbox.oldest() == Message(
        id=first + 1, topic="a/other", payload="2", retain=False, qos=0
    )
    outbox.close()


def test_order_is_kept_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "outbox.sqlite"  # the directory is created too
    outbox = Outbox(path, max_messages=100)
    put_values(outbox, range(5))
    first = outbox.oldest()
    assert first is not None
    outbox.remove(first.id)
    outbox.close()

    reopened = Outbox(path, max_messages=100)
    put_values(reopened, range(5, 8))

    assert len(reopened) == 7
    assert drain(reopened) == [str(v) for v in range(1, 8)]
    reopened.close()


def test_last_put_payload_is_kept_after_delivery_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path, max_messages=10)
    assert outbox.last_put("t") is None
    first = outbox.put("t", "one", True, 1)
    outbox.put("other", "x", False, 0)
    outbox.remove(first)
    outbox.close()

    reopened = Outbox(path, max_messages=10)
    try:
        assert reopened.last_put("t") == "one"
        assert reopened.last_put("other") == "x"
        reopened.put("t", "two", True, 1)
        assert reopened.last_put("t") == "two"
    finally:
        reopened.close()


def test_oldest_after_skips_and_remove_through_clears_a_prefix(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", max_messages=10)
    try:
        ids = put_values(outbox, range(5))
        after = outbox.oldest(after=ids[1])
        assert after is not None and after.id == ids[2]
        assert outbox.oldest(after=ids[-1]) is None
        assert outbox.count_after(ids[1]) == 3
        assert outbox.remove_through(ids[2]) == 3
        assert len(outbox) == 2
        assert drain(outbox) == ["3", "4"]
    finally:
        outbox.close()


def test_ids_are_never_reused_after_the_outbox_empties(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path, max_messages=10)
    old_ids = put_values(outbox, range(3))
    drain(outbox)
    outbox.close()

    reopened = Outbox(path, max_messages=10)
    [new_id] = put_values(reopened, [99])

    assert new_id > max(old_ids)
    reopened.close()


def test_full_outbox_drops_the_oldest_and_warns_with_the_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", max_messages=3)
    with caplog.at_level(logging.WARNING, logger="edgemeter.outbox"):
        put_values(outbox, range(5))

    assert len(outbox) == 3
    assert drain(outbox) == ["2", "3", "4"]
    drops = [r.getMessage() for r in caplog.records if "outbox full" in r.getMessage()]
    assert len(drops) == 2
    assert all("count=1" in line and "max=3" in line for line in drops)


def test_lowered_limit_drops_the_whole_excess_at_the_next_put(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path, max_messages=10)
    put_values(outbox, range(8))
    outbox.close()

    smaller = Outbox(path, max_messages=3)
    with caplog.at_level(logging.WARNING, logger="edgemeter.outbox"):
        put_values(smaller, [8])

    assert drain(smaller) == ["6", "7", "8"]
    assert "count=6" in caplog.text
    smaller.close()


def test_removing_a_message_already_dropped_changes_nothing(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", max_messages=2)
    in_flight = outbox.put(TOPIC, "0", retain=True, qos=1)
    put_values(outbox, [1, 2])  # drops message 0 while "in flight"

    outbox.remove(in_flight)

    assert len(outbox) == 2
    assert drain(outbox) == ["1", "2"]


def test_corrupt_file_is_moved_aside_and_a_new_outbox_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.sqlite"
    path.write_bytes(b"this is not an SQLite database, just junk from a bad SD card" * 100)

    with caplog.at_level(logging.WARNING, logger="edgemeter.outbox"):
        outbox = Outbox(path, max_messages=10)

    assert len(outbox) == 0
    put_values(outbox, [1])
    assert drain(outbox) == ["1"]
    aside = list(tmp_path.glob("outbox.sqlite.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"this is not an SQLite")
    assert "outbox corrupt" in caplog.text
    outbox.close()


def test_damaged_pages_are_detected_at_open(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path, max_messages=1000)
    put_values(outbox, range(300))
    outbox.close()
    # Keep the header valid, overwrite the table pages: a file that opens but whose
    # b-tree is broken, the subtler kind of SD-card damage.
    data = bytearray(path.read_bytes())
    data[4096 : len(data)] = b"\xff" * (len(data) - 4096)
    path.write_bytes(bytes(data))

    reopened = Outbox(path, max_messages=1000)

    assert len(reopened) == 0
    assert list(tmp_path.glob("outbox.sqlite.corrupt-*"))
    reopened.close()


def test_unusable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the directory should be")

    with pytest.raises(OutboxError, match="not-a-dir"):
        Outbox(blocker / "outbox.sqlite", max_messages=10)


def test_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    Outbox(path, max_messages=10).close()

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_put_and_remove_from_two_threads_lose_nothing_and_keep_order(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", max_messages=10_000)
    total = 500
    delivered: list[str] = []
    errors: list[BaseException] = []
    producer_done = threading.Event()

    def produce() -> None:
        try:
            put_values(outbox, range(total))
        except BaseException as err:  # surfaced by the assertion below
            errors.append(err)
        finally:
            producer_done.set()

    def consume() -> None:
        try:
            for _ in range(total * 100):  # bounded: ends long before on any machine
                message = outbox.oldest()
                if message is None:
                    if producer_done.is_set() and len(outbox) == 0:
                        return
                    producer_done.wait(0.001)
                    continue
                delivered.append(message.payload)
                outbox.remove(message.id)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert delivered == [str(v) for v in range(total)]
    assert len(outbox) == 0
    outbox.close()


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(st.one_of(st.integers(0, 999), st.just("take")), max_size=40),
    limit=st.integers(1, 8),
)
def test_outbox_behaves_like_a_bounded_fifo(ops: list[int | str], limit: int) -> None:
    model: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        outbox = Outbox(Path(tmp) / "outbox.sqlite", max_messages=limit)
        for op in ops:
            if op == "take":
                message = outbox.oldest()
                assert (message.payload if message else None) == (model[0] if model else None)
                if message is not None:
                    outbox.remove(message.id)
                    model.pop(0)
            else:
                outbox.put(TOPIC, str(op), retain=True, qos=1)
                model = [*model, str(op)][-limit:]
            assert len(outbox) == len(model)
        outbox.close()
