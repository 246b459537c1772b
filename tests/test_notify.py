"""The notify protocol against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgemeter import notify
from edgemeter.notify import Notifier, watchdog_interval_s

# Bounded waits: a missing datagram fails the test in a second instead of hanging it.
RECV_TIMEOUT_S = 1.0


def _bind(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(RECV_TIMEOUT_S)
    sock.bind(address)
    return sock


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A bound datagram socket on a file path, like PID 1's /run/systemd/notify."""
    path = tmp_path / "notify"
    sock = _bind(str(path))
    yield str(path), sock
    sock.close()


def _recv(sock: socket.socket) -> bytes:
    return sock.recv(8192)


def _assert_nothing_queued(sock: socket.socket) -> None:
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(8192)


def test_messages_are_exact_datagrams(systemd_socket: tuple[str, socket.socket]) -> None:
    path, sock = systemd_socket
    with Notifier(path) as notifier:
        notifier.ready()
        notifier.ready("reading every 5 s")
        notifier.watchdog()
        notifier.status("value=12345.6 km")
        notifier.stopping()

    assert [_recv(sock) for _ in range(5)] == [
        b"READY=1",
        b"READY=1\nSTATUS=reading every 5 s",
        b"WATCHDOG=1",
        b"STATUS=value=12345.6 km",
        b"STOPPING=1",
    ]


def test_status_newlines_and_control_characters_are_flattened(
    systemd_socket: tuple[str, socket.socket],
) -> None:
    path, sock = systemd_socket
    with Notifier(path) as notifier:
        notifier.status("camera timeout\nREADY=1\r\nretry\x00now")
        notifier.ready("line one\nline two")

    assert _recv(sock) == b"STATUS=camera timeout READY=1  retry now"
    assert _recv(sock) == b"READY=1\nSTATUS=line one line two"


def test_long_status_is_clipped_on_a_character_boundary(
    systemd_socket: tuple[str, socket.socket],
) -> None:
    path, sock = systemd_socket
    with Notifier(path) as notifier:
        notifier.status("é" * 5000)

    datagram = _recv(sock)
    assert datagram.startswith(b"STATUS=")
    assert len(datagram) <= 4096
    assert datagram.decode("utf-8") == "STATUS=" + "é" * 512


def test_abstract_namespace_socket_with_at_prefix() -> None:
    name = f"edgemeter-test-{uuid.uuid4().hex}"
    sock = _bind("\0" + name)
    try:
        with Notifier("@" + name) as notifier:
            assert notifier.enabled
            notifier.ready()
            notifier.watchdog()
        assert _recv(sock) == b"READY=1"
        assert _recv(sock) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_default_path_comes_from_notify_socket_env(
    systemd_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, sock = systemd_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    with Notifier() as notifier:
        notifier.watchdog()

    assert _recv(sock) == b"WATCHDOG=1"


def test_without_notify_socket_every_call_is_a_noop(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()

    assert not notifier.enabled
    with caplog.at_level(logging.DEBUG, logger="edgemeter.notify"):
        notifier.ready("x")
        notifier.watchdog()
        notifier.status("x")
        notifier.stopping()
        notifier.close()
    assert caplog.records == []


def test_unsupported_address_disables_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="edgemeter.notify"):
        notifier = Notifier("vsock:2:1234")

    assert not notifier.enabled
    notifier.ready()
    assert "notify socket unsupported" in caplog.text


def test_removed_socket_warns_once_and_carries_on(
    systemd_socket: tuple[str, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    path, sock = systemd_socket
    notifier = Notifier(path)
    sock.close()
    os.unlink(path)

    with caplog.at_level(logging.WARNING, logger="edgemeter.notify"):
        notifier.ready()
        notifier.watchdog()
        notifier.status("still running")
        notifier.stopping()

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "notify send failed" in warnings[0].getMessage()
    notifier.close()


def test_full_queue_does_not_block_the_caller(
    systemd_socket: tuple[str, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A PID 1 that stops draining its queue: sends must give up, not hang the read loop.
    monkeypatch.setattr(notify, "_SEND_TIMEOUT_S", 0.05)
    path, _ = systemd_socket
    with Notifier(path) as notifier, caplog.at_level(logging.WARNING, logger=notify.__name__):
        for _ in range(1000):
            notifier.watchdog()
            if caplog.records:
                break

    assert "notify send failed" in caplog.text


def test_socket_coming_back_is_used_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "notify")
    notifier = Notifier(path)
    with caplog.at_level(logging.INFO, logger="edgemeter.notify"):
        notifier.watchdog()  # nobody listening yet
        sock = _bind(path)
        try:
            notifier.watchdog()
            assert _recv(sock) == b"WATCHDOG=1"
        finally:
            sock.close()
    notifier.close()

    assert "notify send works again" in caplog.text


def test_closed_notifier_is_a_noop(systemd_socket: tuple[str, socket.socket]) -> None:
    path, sock = systemd_socket
    notifier = Notifier(path)
    notifier.close()
    notifier.close()

    assert not notifier.enabled
    notifier.ready()
    _assert_nothing_queued(sock)


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("120000000", None, 60.0),
        ("120000000", "self", 60.0),
        ("1000000", None, 0.5),
        ("120000000", "other", None),
        ("120000000", "not-a-pid", None),
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_for_this_process(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    if usec is None:
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    elif pid == "self":
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    elif pid == "other":
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    else:
        monkeypatch.setenv("WATCHDOG_PID", pid)

    assert watchdog_interval_s() == expected
