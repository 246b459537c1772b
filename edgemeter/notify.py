"""systemd notify protocol, spoken directly: readiness, watchdog pings, status, stopping.

The protocol is one AF_UNIX datagram of newline-separated ``KEY=VALUE`` lines sent to the
socket named in ``$NOTIFY_SOCKET`` (see sd_notify(3)). It is small enough that a library
dependency (python-systemd needs libsystemd headers to build; sdnotify is unmaintained)
costs more than these lines.

What this module does not do: decide *when* to ping the watchdog. The daemon pings after
each cycle that really ran, and only while the camera has delivered a new picture within
watchdog.frame_timeout_s, so a wedged camera, a frozen picture or a hung OCR stalls the
pings and systemd restarts the service; a free-running ping thread would hide exactly
those hangs.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from types import TracebackType

log = logging.getLogger(__name__)

# systemd reads notifications into a PIPE_BUF-sized buffer (4096 bytes) and drops longer
# datagrams, so a runaway status text must not take READY=1 down with it.
_MAX_STATUS_BYTES = 1024

# A send must never stall the read cycle: if PID 1 is not draining its queue, the datagram
# is dropped (and logged) after this long rather than blocking the loop.
_SEND_TIMEOUT_S = 1.0

# Each line of the datagram is one assignment, so a newline in a status would start a
# new (bogus) assignment; systemd also rejects datagrams with NUL bytes. Replace every
# control character.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def _sanitise(text: str) -> str:
    """Make text safe as a single STATUS= value: one line, no NUL, bounded, valid UTF-8."""
    flat = _CONTROL_CHARS.sub(" ", text)
    # errors="replace" turns lone surrogates (from undecodable file names, say) into "?":
    # systemd ignores a STATUS= that is not clean UTF-8.
    raw = flat.encode("utf-8", errors="replace")[:_MAX_STATUS_BYTES]
    # Clipping may split a multi-byte character; drop the partial tail.
    return raw.decode("utf-8", errors="ignore")


def _address(socket_path: str) -> str | None:
    """The sendto() address for a $NOTIFY_SOCKET value, or None if it is not one we speak."""
    if socket_path.startswith("@"):
        # Abstract namespace: no file on disk, the name starts with a NUL byte.
        return "\0" + socket_path[1:]
    if socket_path.startswith("/"):
        return socket_path
    return None


class Notifier:
    """Sends sd_notify messages; every call is a no-op when not started by systemd."""

    def __init__(self, socket_path: str | None = None) -> None:
        if socket_path is None:
            socket_path = os.environ.get("NOTIFY_SOCKET", "")
        self._path = socket_path
        self._address: str | None = None
        self._sock: socket.socket | None = None
        # Serialises sends and the warn-once flag: status may come from the MQTT thread
        # while the main loop pings the watchdog.
        self._lock = threading.Lock()
        self._failing = False
        if not socket_path:
            return
        address = _address(socket_path)
        if address is None:
            # Newer systemd can also hand out vsock: addresses (VMs); a Pi never does.
            log.warning("notify socket unsupported, notifications off: path=%r", socket_path)
            return
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        except OSError as err:
            # Out of file descriptors, say: the meter is still worth reading.
            log.warning("notify socket not created, notifications off: error=%s", err)
            return
        sock.settimeout(_SEND_TIMEOUT_S)
        self._address = address
        self._sock = sock

    @property
    def enabled(self) -> bool:
        """True while there is a notify socket to talk to."""
        return self._sock is not None

    def ready(self, status: str | None = None) -> None:
        """Tell systemd start-up is complete (Type=notify leaves "activating")."""
        lines = ["READY=1"]
        if status is not None:
            lines.append("STATUS=" + _sanitise(status))
        self._send(lines)

    def watchdog(self) -> None:
        """Reset the WatchdogSec= timer: call after each cycle that really ran."""
        self._send(["WATCHDOG=1"])

    def status(self, text: str) -> None:
        """Set the one-line status shown by `systemctl status`."""
        self._send(["STATUS=" + _sanitise(text)])

    def stopping(self) -> None:
        """Tell systemd a clean shutdown has begun, so a slow stop is not a failure."""
        self._send(["STOPPING=1"])

    def close(self) -> None:
        """Close the socket; later calls become no-ops."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, lines: list[str]) -> None:
        payload = "\n".join(lines).encode("utf-8")
        with self._lock:
            if self._sock is None or self._address is None:
                return
            try:
                self._sock.sendto(payload, self._address)
            except OSError as err:
                # The daemon's job is reading the meter, not talking to systemd: a vanished
                # socket (service run by hand after a restart, PID 1 re-executing) must not
                # stop it. Warn once per outage so the journal is not flooded every cycle.
                if not self._failing:
                    log.warning(
                        "notify send failed, carrying on: path=%s error=%s", self._path, err
                    )
                    self._failing = True
                else:
                    log.debug("notify send failed: path=%s error=%s", self._path, err)
                return
            if self._failing:
                log.info("notify send works again: path=%s", self._path)
                self._failing = False


def watchdog_interval_s() -> float | None:
    """How often to ping the watchdog, in seconds, or None when no watchdog is armed.

    Half of WatchdogSec=, as sd_watchdog_enabled(3) advises, leaves room for one late
    cycle. $WATCHDOG_PID, when set, names the process the watchdog is meant for: a child
    that inherited the environment must not think it is being watched.
    """
    usec_text = os.environ.get("WATCHDOG_USEC")
    if not usec_text:
        return None
    try:
        usec = int(usec_text)
    except ValueError:
        log.warning("watchdog off, WATCHDOG_USEC not an integer: value=%r", usec_text)
        return None
    if usec <= 0:
        return None
    pid_text = os.environ.get("WATCHDOG_PID")
    if pid_text:
        try:
            pid = int(pid_text)
        except ValueError:
            log.warning("watchdog off, WATCHDOG_PID not an integer: value=%r", pid_text)
            return None
        if pid != os.getpid():
            return None
    return usec / 2 / 1_000_000
