"""A real Mosquitto broker for tests, and small clients to watch and poke it.

`Broker` runs `mosquitto` on a free port on 127.0.0.1 with its own config, password
file, certificates and persistence directory, all in a test's tmp dir. Retained
messages and persistent sessions survive `stop()`/`restart()` (Mosquitto saves them
on SIGTERM), not `kill()` (SIGKILL, like a power cut: back to the last clean save).

`Subscriber` and `collect` record what arrives on a topic filter; `publish_message`
sends one message. They connect to the plain listener, with the broker's observer
account when anonymous access is off. Every wait is bounded; nothing leaves
127.0.0.1.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
OBSERVER_USER = "test-observer"


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


def free_port() -> int:
    """A port that was free a moment ago (the kernel's pick for an ephemeral bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass(frozen=True)
class TlsFiles:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost, a client certificate."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Generate certificates with the openssl CLI (EC P-256: fast, accepted everywhere)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", ca_key, "-out", ca_crt, "-days", "2", "-subj", "/CN=edgemeter test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    ca = {"ca_crt": ca_crt, "ca_key": ca_key}
    server = _signed_cert(directory, "server", **ca, usage="serverAuth", common_name="127.0.0.1")
    client = _signed_cert(directory, "client", **ca, usage="clientAuth", common_name="edgemeter")
    return TlsFiles(ca_crt, server[0], server[1], client[0], client[1])


def _signed_cert(
    directory: Path, name: str, *, ca_crt: Path, ca_key: Path, usage: str, common_name: str
) -> tuple[Path, Path]:
    key, csr, crt = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    ext = directory / f"{name}.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", csr, "-subj", f"/CN={common_name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
        "-out", crt, "-days", "2", "-extfile", ext,
    )  # fmt: skip
    return crt, key


def _openssl(*args: str | Path) -> None:
    subprocess.run(
        ["openssl", *map(str, args)], check=True, capture_output=True, timeout=30, text=True
    )


class Broker:
    """One Mosquitto process on 127.0.0.1; `port` stays the same across restarts.

    users: name -> password; when given, anonymous access is off and an observer
    account is added for the test helpers. tls: also listen on `tls_port` with a
    generated certificate (`tls_files.ca_file` verifies it); require_client_cert:
    that listener also demands a client certificate signed by the same CA. durable:
    persist after every change, so queued messages for a persistent subscriber survive
    `kill()` too.
    """

    host = HOST

    def __init__(
        self,
        workdir: Path,
        *,
        users: Mapping[str, str] | None = None,
        tls: bool = False,
        require_client_cert: bool = False,
        durable: bool = False,
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise FileNotFoundError("mosquitto is not installed (apt install mosquitto)")
        self._binary = binary
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port: int | None = free_port() if tls else None
        self.tls_files: TlsFiles | None = make_tls_files(workdir / "tls") if tls else None
        self.users = dict(users) if users is not None else None
        self.observer: tuple[str, str] | None = None
        self.password_file: Path | None = None
        if self.users is not None:
            self.observer = (OBSERVER_USER, uuid.uuid4().hex)
            self._write_password_file({**self.users, OBSERVER_USER: self.observer[1]})
        self.log_file = workdir / "mosquitto.log"
        self.conf_file = workdir / "mosquitto.conf"
        self.conf_file.write_text(self._config(require_client_cert, durable))
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start Mosquitto and wait (bounded) until it accepts connections."""
        if self.running:
            return
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [self._binary, "-c", str(self.conf_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a Ctrl-C in pytest must not hit the broker first
            )
        self._paused = False
        ports = [self.port] + ([self.tls_port] if self.tls_port is not None else [])
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(port_accepts(p) for p in ports):
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start:\n{self.log_text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"mosquitto not listening after {START_TIMEOUT_S}s:\n{self.log_text()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM and wait: Mosquitto saves retained messages and sessions first."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: nothing is saved, connections drop without a DISCONNECT."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing is read or acknowledged."""
        if self.running and self._process is not None:
            self._process.send_signal(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        if self.running and self._process is not None and self._paused:
            self._process.send_signal(signal.SIGCONT)
            self._paused = False

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def _end(self, sig: signal.Signals) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        if self._paused:
            # A stopped process only acts on SIGTERM once it runs again.
            process.send_signal(signal.SIGCONT)
            self._paused = False
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)

    def _write_password_file(self, users: Mapping[str, str]) -> None:
        path = self.workdir / "passwd"
        for index, (name, password) in enumerate(users.items()):
            create = ["-c"] if index == 0 else []
            subprocess.run(
                ["mosquitto_passwd", "-b", *create, str(path), name, password],
                check=True,
                capture_output=True,
                timeout=30,
            )
        self.password_file = path

    def _config(self, require_client_cert: bool, durable: bool) -> str:
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        lines = [
            # Started as root Mosquitto would drop to user "mosquitto", which cannot
            # write the tmp dir; as any other user this line is ignored.
            "user root",
            "per_listener_settings false",
            f"allow_anonymous {'true' if self.users is None else 'false'}",
            "persistence true",
            f"persistence_location {data}/",
            "log_dest stderr",
            "log_type all",
            "connection_messages true",
            "log_timestamp_format %H:%M:%S",
        ]
        if durable:
            # Save the in-memory database after every change (retained message, queued
            # message, subscription), so a SIGKILL loses at most the change in hand: a
            # kill then tests the publisher, not Mosquitto's 30-minute autosave.
            lines += ["autosave_on_changes true", "autosave_interval 1"]
        if self.users is not None:
            lines.append(f"password_file {self.password_file}")
        lines.append(f"listener {self.port} {HOST}")
        if self.tls_files is not None:
            lines += [
                f"listener {self.tls_port} {HOST}",
                f"cafile {self.tls_files.ca_file}",
                f"certfile {self.tls_files.server_cert}",
                f"keyfile {self.tls_files.server_key}",
                f"require_certificate {'true' if require_client_cert else 'false'}",
            ]
        return "\n".join(lines) + "\n"


class Received(NamedTuple):
    topic: str
    payload: str
    retain: bool


class Subscriber:
    """A paho client that records every message on a topic filter, in arrival order.

    persistent=True keeps a broker-side session (fixed client id, clean_session off,
    QoS 1): messages published while it is disconnected, or while the broker
    restarts cleanly, are queued for it. It reconnects and resubscribes by itself.
    """

    def __init__(
        self,
        broker: Broker,
        topic_filter: str | list[str],
        *,
        client_id: str | None = None,
        persistent: bool = False,
        qos: int = 1,
    ) -> None:
        self._broker = broker
        self._filters = [topic_filter] if isinstance(topic_filter, str) else list(topic_filter)
        self._qos = qos
        self._messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-sub-{uuid.uuid4().hex[:12]}",
            clean_session=not persistent,
        )
        if broker.observer is not None:
            self._client.username_pw_set(*broker.observer)
        self._client.reconnect_delay_set(1, 2)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def start(self, timeout_s: float = START_TIMEOUT_S) -> Subscriber:
        self._client.connect_async(self._broker.host, self._broker.port, keepalive=10)
        self._client.loop_start()
        if not self._subscribed.wait(timeout_s):
            self.stop()
            raise TimeoutError(f"subscriber not subscribed to {self._filters} after {timeout_s}s")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def messages(self) -> list[Received]:
        with self._cond:
            return list(self._messages)

    def wait_until(
        self, until: Callable[[list[Received]], bool] | None, timeout_s: float
    ) -> list[Received]:
        """Wait until `until(messages)` is true or the timeout; return the messages.

        until=None waits the whole timeout (to check that nothing arrives).
        """
        predicate = until or (lambda _messages: False)
        with self._cond:
            self._cond.wait_for(lambda: predicate(list(self._messages)), timeout=timeout_s)
            return list(self._messages)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            return
        if flags.session_present and self._subscribed.is_set():
            # The broker kept the subscription (persistent session): subscribing again
            # would only replay the retained messages as extra copies.
            return
        client.subscribe([(f, self._qos) for f in self._filters])

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        received = Received(msg.topic, msg.payload.decode("utf-8", "replace"), bool(msg.retain))
        with self._cond:
            self._messages.append(received)
            self._cond.notify_all()


def collect(
    broker: Broker,
    topic_filter: str | list[str],
    until: Callable[[list[Received]], bool] | None = None,
    timeout_s: float = 10.0,
) -> list[Received]:
    """Subscribe now, gather messages until `until(messages)` or the timeout, return them.

    Retained messages arrive first (with retain=True), then live ones (retain=False).
    """
    with Subscriber(broker, topic_filter) as subscriber:
        return subscriber.wait_until(until, timeout_s)


def publish_message(
    broker: Broker, topic: str, payload: str, *, retain: bool = False, qos: int = 1
) -> None:
    """Publish one message and wait (bounded) until the broker has it."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-pub-{uuid.uuid4().hex[:12]}")
    if broker.observer is not None:
        client.username_pw_set(*broker.observer)
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(START_TIMEOUT_S)
        if not info.is_published():
            raise TimeoutError(f"publish to {topic} not acknowledged")
    finally:
        client.disconnect()
        client.loop_stop()


def wait_for(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll `condition` until true or the timeout; return its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)


@dataclass
class ProxyStats:
    connections: int = 0
    chunks: int = 0
    stalls: int = 0
    bytes: int = 0


class SlowProxy:
    """A TCP relay on 127.0.0.1 in front of a port: a slow, stalling network or broker.

    Every chunk read from either side waits a delay drawn from `delay_s` (uniform)
    before it is forwarded, in order; with probability `stall_chance` it waits
    `stall_s` instead. A new connection waits `accept_delay_s` before it is relayed (a
    broker slow to accept). The delays come from a seeded RNG. Every wait is bounded
    and `stop()` closes every socket.
    """

    def __init__(
        self,
        target_port: int,
        *,
        delay_s: tuple[float, float] = (0.3, 0.8),
        stall_chance: float = 0.05,
        stall_s: float = 3.0,
        accept_delay_s: float = 0.0,
        chunk_bytes: int = 1024,
        seed: int = 1,
    ) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self.stall_chance = stall_chance
        self.stall_s = stall_s
        self.accept_delay_s = accept_delay_s
        self.chunk_bytes = chunk_bytes
        self.stats = ProxyStats()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((HOST, 0))
        self._listener.listen(8)
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])

    def start(self) -> SlowProxy:
        self._spawn(self._accept_forever)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            sockets = [self._listener, *self._sockets]
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in list(self._threads):
            thread.join(timeout=self.stall_s + 2)

    def __enter__(self) -> SlowProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_forever(self) -> None:
        while not self._stop.is_set():
            try:
                client, _address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._sockets.append(client)
                self.stats.connections += 1
            self._spawn(self._relay, client)

    def _relay(self, client: socket.socket) -> None:
        if self._stop.wait(self.accept_delay_s):
            return
        try:
            upstream = socket.create_connection((HOST, self.target_port), timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets.append(upstream)
        for sock in (client, upstream):
            sock.settimeout(0.2)
        self._spawn(self._pump, client, upstream)
        self._spawn(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data = source.recv(self.chunk_bytes)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data or self._stop.wait(self._next_delay(len(data))):
                break
            try:
                sink.sendall(data)
            except OSError:
                break
        # One side gone: end the other too, as a real connection would.
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _next_delay(self, size: int) -> float:
        with self._lock:
            self.stats.chunks += 1
            self.stats.bytes += size
            if self._rng.random() < self.stall_chance:
                self.stats.stalls += 1
                return self.stall_s
            return self._rng.uniform(*self.delay_s)


@contextlib.contextmanager
def running_broker(workdir: Path, **options: Any) -> Iterator[Broker]:
    """A started broker that is always stopped afterwards (for use outside fixtures)."""
    broker = Broker(workdir, **options)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


__all__ = [
    "HOST",
    "Broker",
    "ProxyStats",
    "Received",
    "SlowProxy",
    "Subscriber",
    "TlsFiles",
    "collect",
    "free_port",
    "make_tls_files",
    "mosquitto_binary",
    "publish_message",
    "running_broker",
    "wait_for",
]
