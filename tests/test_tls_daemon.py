"""The daemon over MQTT with TLS and a password file, against a real Mosquitto.

Mosquitto gets a TLS listener with certificates generated here (openssl), a password
file made with `mosquitto_passwd -b` and `allow_anonymous false`. The daemon must
deliver over TLS with the right password, and with a wrong one say so clearly and
keep retrying without crashing. The password must never show: not in the daemon's
output, not in `check-config`, not in anything published, not on the web page.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from broker import Broker, Received, Subscriber, free_port, wait_for
from replay import kill_if_running, start_daemon, stop_daemon, write_config, write_frames

PREFIX = "edgemeter/test"
USER = "edgemeter"
DAEMON_TIMEOUT_S = 120.0


def tls_broker(make_broker: Callable[..., Broker], password: str) -> Broker:
    broker = make_broker(users={USER: password}, tls=True)
    assert broker.tls_port is not None and broker.tls_files is not None
    assert "allow_anonymous false" in broker.conf_file.read_text()
    return broker


def tls_config(tmp_path: Path, broker: Broker, password: str, **extra: object) -> Path:
    assert broker.tls_port is not None and broker.tls_files is not None
    password_file = tmp_path / "mqtt-password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    mqtt = {
        "host": broker.host,
        "port": broker.tls_port,
        "username": USER,
        "password_file": str(password_file),
        "tls": {"ca_file": str(broker.tls_files.ca_file)},
        "keepalive_s": 5,
    }
    return write_config(tmp_path, mqtt=mqtt, plausibility={"max_jump": 50}, **extra)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode("utf-8", "replace"))


def check_config(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgemeter", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def everything_published(messages: list[Received]) -> str:
    return "\n".join(f"{m.topic} {m.payload}" for m in messages)


def test_readings_arrive_over_tls_with_a_password_that_never_shows(
    tmp_path: Path, make_broker: Callable[..., Broker]
) -> None:
    password = f"Tls-Pa55-{uuid.uuid4().hex}"
    broker = tls_broker(make_broker, password)
    truth = list(range(3100, 3112))
    write_frames(tmp_path / "frames", truth)
    port = free_port()
    config = tls_config(
        tmp_path, broker, password, camera={"interval_s": 0.5}, http={"enabled": True, "port": port}
    )
    log = tmp_path / "daemon.log"
    pages: dict[str, str] = {}

    def page_shows_a_reading() -> bool:
        try:
            pages["status"] = fetch(f"http://127.0.0.1:{port}/api/status.json")
        except OSError:
            return False  # not serving yet
        return bool(json.loads(pages["status"]).get("reading"))

    with Subscriber(broker, "#") as everything:
        process = start_daemon(config, log)
        try:
            assert wait_for(page_shows_a_reading, 60, interval_s=0.2)
            pages["page"] = fetch(f"http://127.0.0.1:{port}/")
            pages["history"] = fetch(f"http://127.0.0.1:{port}/api/history.json")
            assert process.wait(timeout=DAEMON_TIMEOUT_S) == 0
        finally:
            kill_if_running(process)
        everything.wait_until(lambda m: any(x.payload == "offline" for x in m), 10)
    checked = check_config(config)
    published = everything_published(everything.messages)
    readings = [
        json.loads(m.payload)["value"]
        for m in everything.messages
        if m.topic == f"{PREFIX}/reading" and not m.retain
    ]
    text = log.read_text()
    assert readings == truth
    assert f"mqtt connected host=127.0.0.1 port={broker.tls_port}" in text
    assert "tls=True" in text
    assert checked.returncode == 0, checked.stderr
    assert "password_file" in checked.stdout  # the setting is shown, its secret is not
    for where, content in {
        "daemon log": text,
        "check-config": checked.stdout + checked.stderr,
        "published": published,
        **pages,
    }.items():
        assert password not in content, f"the password shows in the {where}"


def test_wrong_password_is_a_clear_error_and_the_daemon_keeps_retrying(
    tmp_path: Path, make_broker: Callable[..., Broker]
) -> None:
    right = f"Right-{uuid.uuid4().hex}"
    wrong = f"Wrong-{uuid.uuid4().hex}"
    broker = tls_broker(make_broker, right)
    write_frames(tmp_path / "frames", [3200, 3201, 3202])
    config = tls_config(tmp_path, broker, wrong)
    log = tmp_path / "daemon.log"

    def refusals() -> list[str]:
        return [line for line in log.read_text().splitlines() if "mqtt connect refused" in line]

    with Subscriber(broker, "#") as everything:
        process = start_daemon(config, log)
        try:
            assert wait_for(lambda: len(refusals()) >= 3, 60)
            assert process.poll() is None  # retrying, not exiting into a crash loop
            status = stop_daemon(process, log, 30)
        finally:
            kill_if_running(process)
        published = everything_published(everything.messages)
    text = log.read_text()
    print(f"FAULT tls-wrong-password: refusals={len(refusals())} exit={status}")
    assert status == 0
    assert "Traceback" not in text
    assert text.count("started version=") == 1
    assert refusals()[0].startswith("ERROR ")
    assert "reason=Not authorized" in refusals()[0]
    assert "check mqtt.username and the password in mqtt.password_file" in refusals()[0]
    assert f"{PREFIX}/reading" not in published  # a refused client delivers nothing
    for secret in (right, wrong):
        assert secret not in text
        assert secret not in published
