"""The daemon end to end: a real process, a real Mosquitto, real files and signals."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from broker import Broker, Received, Subscriber, collect, wait_for
from replay import (
    kill_if_running,
    run_daemon,
    start_daemon,
    stop_daemon,
    write_config,
    write_frames,
)

from edgemeter.plausibility import Memory
from edgemeter.snapshot import CELL_COLOUR
from edgemeter.state import StateStore

PREFIX = "edgemeter/test"
DAEMON_TIMEOUT_S = 180.0


def readings(messages: list[Received]) -> list[dict[str, object]]:
    return [json.loads(m.payload) for m in messages if m.topic == f"{PREFIX}/reading"]


def values(messages: list[Received]) -> list[float]:
    return [float(r["value"]) for r in readings(messages)]  # type: ignore[arg-type]


def payloads(messages: list[Received], topic: str) -> list[str]:
    return [m.payload for m in messages if m.topic == f"{PREFIX}/{topic}"]


def mqtt(broker: Broker, **extra: object) -> dict[str, object]:
    return {"host": broker.host, "port": broker.port, **extra}


def test_replay_publishes_rising_values_in_order_with_discovery_and_status(
    tmp_path: Path, broker: Broker
) -> None:
    truth = [1000, 1000, 1001, 1003, 1003, 1004, 1010]
    write_frames(tmp_path / "frames", truth)
    config = write_config(tmp_path, mqtt=mqtt(broker), plausibility={"max_jump": 50})
    with Subscriber(broker, [f"{PREFIX}/#", "homeassistant/#"]) as live:
        assert run_daemon(config, tmp_path / "daemon.log", DAEMON_TIMEOUT_S) == 0
        live.wait_until(lambda m: "offline" in payloads(m, "status"), 10)
    messages = live.messages
    assert values(messages) == [1000, 1001, 1003, 1004, 1010]
    first = readings(messages)[0]
    assert first["raw"] == "001000"
    assert first["unit"] == "km"
    assert str(first["ts"]).endswith(("Z", "+00:00"))
    assert payloads(messages, "status")[0] == "online"
    assert payloads(messages, "status")[-1] == "offline"
    retained = collect(
        broker,
        [f"{PREFIX}/#", "homeassistant/#"],
        until=lambda m: len(m) >= 3,
        timeout_s=10,
    )
    retained_topics = {m.topic: m.payload for m in retained if m.retain}
    assert json.loads(retained_topics[f"{PREFIX}/reading"])["value"] == 1010
    assert retained_topics[f"{PREFIX}/status"] == "offline"
    (discovery_topic,) = [t for t in retained_topics if t.startswith("homeassistant/sensor/")]
    discovery = json.loads(retained_topics[discovery_topic])
    assert discovery["state_class"] == "total_increasing"
    assert discovery["device_class"] == "distance"
    assert discovery["unit_of_measurement"] == "km"
    assert discovery["state_topic"] == f"{PREFIX}/reading"


def test_misreads_are_rejected_with_reasons_and_never_published(
    tmp_path: Path, broker: Broker
) -> None:
    # Rising 2000..2006 with three misreads: a digit changed (2903), a value lower than
    # the last (1998), and a jump far beyond max_jump (9004).
    shown = [2000, 2001, 2903, 2002, 1998, 2003, 9004, 2004, 2006]
    write_frames(tmp_path / "frames", shown)
    config = write_config(tmp_path, mqtt=mqtt(broker), plausibility={"max_jump": 50})
    with Subscriber(broker, f"{PREFIX}/#") as live:
        assert run_daemon(config, tmp_path / "daemon.log", DAEMON_TIMEOUT_S) == 0
        live.wait_until(lambda m: "offline" in payloads(m, "status"), 10)
    messages = live.messages
    assert values(messages) == [2000, 2001, 2002, 2003, 2004, 2006]
    rejected = [json.loads(p) for p in payloads(messages, "rejected")]
    assert [r["raw"] for r in rejected] == ["002903", "001998", "009004"]
    assert rejected[0]["reason"].startswith("unconfirmed jump")
    assert rejected[1]["reason"].startswith("decrease")
    assert rejected[2]["reason"].startswith("unconfirmed jump")
    log = (tmp_path / "daemon.log").read_text()
    assert "rejected raw=001998 reason=decrease" in log


def test_stuck_meter_rebaselines_after_consistent_cycles(tmp_path: Path, broker: Broker) -> None:
    # A wrong value (500000) was accepted once; the real counter shows 3000 and up.
    StateStore(tmp_path / "state" / "state.json").save(Memory(value=500000))
    shown = [3000, 3001, 3001, 3002, 3004, 3005]
    write_frames(tmp_path / "frames", shown)
    config = write_config(
        tmp_path, mqtt=mqtt(broker), plausibility={"rebaseline_cycles": 4, "max_jump": 50}
    )
    with Subscriber(broker, f"{PREFIX}/#") as live:
        assert run_daemon(config, tmp_path / "daemon.log", DAEMON_TIMEOUT_S) == 0
        live.wait_until(lambda m: "offline" in payloads(m, "status"), 10)
    messages = live.messages
    assert values(messages) == [3002, 3004, 3005]
    events = [json.loads(p) for p in payloads(messages, "event")]
    assert len(events) == 1
    assert events[0]["event"].startswith("rebaselined from 500000 to 003002")
    assert len(payloads(messages, "rejected")) == 3
    assert StateStore(tmp_path / "state" / "state.json").load()[0].value == 3005


def test_broker_outage_loses_no_accepted_reading(tmp_path: Path, broker: Broker) -> None:
    truth = list(range(4000, 4016))
    write_frames(tmp_path / "frames", truth)
    config = write_config(
        tmp_path,
        mqtt=mqtt(broker, keepalive_s=5),
        camera={"interval_s": 0.4},
        plausibility={"max_jump": 50},
    )
    subscriber = Subscriber(broker, f"{PREFIX}/reading", client_id="outage-sub", persistent=True)
    subscriber.start()
    # A clean restart writes the subscriber's session to the broker's disk, so it survives
    # the SIGKILL below and queues what the daemon delivers before the subscriber is back.
    broker.restart()
    assert wait_for(subscriber._client.is_connected, 15)
    process = start_daemon(config, tmp_path / "daemon.log")
    try:
        assert len(subscriber.wait_until(lambda m: len(m) >= 2, 60)) >= 2
        broker.kill()
        # Readings accepted during the outage wait in the outbox.
        assert wait_for(lambda: "accepted value=4006" in (tmp_path / "daemon.log").read_text(), 60)
        broker.start()
        assert process.wait(timeout=DAEMON_TIMEOUT_S) == 0
        subscriber.wait_until(lambda m: 4015 in values(m), 30)
    finally:
        kill_if_running(process)
        subscriber.stop()
    got = values(subscriber.messages)
    # Every value arrives, in order; a reading whose ack was lost may come twice.
    assert sorted(set(got)) == truth
    assert got == sorted(got)
    timestamps = {(r["value"], r["ts"]) for r in readings(subscriber.messages)}
    assert len(timestamps) == len(truth)  # a repeat carries the same original timestamp


def test_sigkill_leaves_offline_will_and_restart_resumes_from_state(
    tmp_path: Path, broker: Broker
) -> None:
    write_frames(tmp_path / "frames", list(range(5000, 5030)))
    config = write_config(
        tmp_path,
        mqtt=mqtt(broker, keepalive_s=5),
        camera={"interval_s": 0.3},
        plausibility={"max_jump": 50},
    )
    log = tmp_path / "daemon.log"
    with Subscriber(broker, f"{PREFIX}/#") as live:
        process = start_daemon(config, log)
        try:
            assert len(values(live.wait_until(lambda m: len(values(m)) >= 4, 60))) >= 4
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        last_status = payloads(
            live.wait_until(lambda m: payloads(m, "status")[-1:] == ["offline"], 20), "status"
        )
        assert last_status[-1:] == ["offline"]
    first_run = [float(line.split("value=")[1].split()[0]) for line in accepted_lines(log)]
    published = sorted(set(values(live.messages)))
    saved = StateStore(tmp_path / "state" / "state.json").load()[0]
    assert saved.value is not None
    # A reading goes to the outbox before the state file: a kill between the two leaves
    # the state one reading behind what was published, never ahead and never torn.
    assert saved.value >= published[-2]
    assert saved.value in {int(v) for v in first_run}
    # Restart on frames that show the counter lower than the saved value: a fresh
    # process that had lost its state would accept them; a resumed one rejects them.
    for path in (tmp_path / "frames").glob("*.png"):
        path.unlink()
    write_frames(tmp_path / "frames", [5000, 5001])
    with Subscriber(broker, f"{PREFIX}/#") as live:
        assert run_daemon(config, log, DAEMON_TIMEOUT_S) == 0
        live.wait_until(lambda m: "offline" in payloads(m, "status"), 10)
    # Nothing new: at most readings accepted before the kill whose delivery was owed.
    fresh = [m for m in live.messages if not m.retain]
    assert set(values(fresh)) <= set(first_run)
    rejected = [json.loads(p) for p in payloads(live.messages, "rejected")]
    assert [r["reason"].split(":")[0] for r in rejected] == ["decrease", "decrease"]
    assert f"resuming value={float(saved.value)}" in log.read_text()


def test_sigterm_stops_cleanly_and_publishes_offline(tmp_path: Path, broker: Broker) -> None:
    config = write_config(
        tmp_path,
        mqtt=mqtt(broker),
        camera={"source": "simulated", "interval_s": 0.2, "path": None},
    )
    with Subscriber(broker, f"{PREFIX}/#") as live:
        process = start_daemon(config, tmp_path / "daemon.log")
        try:
            assert len(values(live.wait_until(lambda m: len(values(m)) >= 2, 60))) >= 2
            status = stop_daemon(process, tmp_path / "daemon.log", 15)
        finally:
            kill_if_running(process)
        assert status == 0
        last_status = payloads(
            live.wait_until(lambda m: payloads(m, "status")[-1:] == ["offline"], 10), "status"
        )
        assert last_status[-1:] == ["offline"]
    assert "stopping signal=SIGTERM" in (tmp_path / "daemon.log").read_text()


def test_a_restarted_simulated_counter_carries_on_from_the_last_value(
    tmp_path: Path, broker: Broker
) -> None:
    config = write_config(
        tmp_path,
        mqtt=mqtt(broker),
        camera={"source": "simulated", "interval_s": 0.2, "path": None},
    )
    with Subscriber(broker, f"{PREFIX}/#") as live:
        for run in (1, 2):
            process = start_daemon(config, tmp_path / f"daemon{run}.log")
            try:
                live.wait_until(lambda m, n=2 * run: len(values(m)) >= n, 60)
                assert stop_daemon(process, tmp_path / f"daemon{run}.log", 15) == 0
            finally:
                kill_if_running(process)
            if run == 1:
                first_run = values(live.messages)
    second_run = values(live.messages)[len(first_run) :]
    assert second_run and min(second_run) >= max(first_run)
    assert "decrease" not in (tmp_path / "daemon2.log").read_text()
    assert not payloads(live.messages, "rejected")


def test_notify_socket_gets_ready_watchdog_and_status(tmp_path: Path, broker: Broker) -> None:
    write_frames(tmp_path / "frames", [100, 101, 102])
    config = write_config(tmp_path, mqtt=mqtt(broker))
    sock_path = tmp_path / "notify.sock"
    datagrams: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(0.5)
        process = start_daemon(config, tmp_path / "daemon.log", NOTIFY_SOCKET=str(sock_path))
        try:
            receive_until(sock, datagrams, lambda: any("STOPPING=1" in d for d in datagrams), 120)
            assert process.wait(timeout=30) == 0
        finally:
            kill_if_running(process)
    assert datagrams[0].startswith("READY=1")
    assert "WATCHDOG=1" in datagrams
    assert any(d == "STATUS=value=102.0 km" for d in datagrams)
    assert datagrams.index("WATCHDOG=1") > 0


def accepted_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if " accepted value=" in line]


def receive_until(
    sock: socket.socket, into: list[str], done: Callable[[], bool], timeout_s: float
) -> None:
    def poll() -> bool:
        with contextlib.suppress(TimeoutError):
            into.append(sock.recv(4096).decode())
        return done()

    assert wait_for(poll, timeout_s, interval_s=0)


def test_history_survives_restarts_and_exports_csv(tmp_path: Path, broker: Broker) -> None:
    config = write_config(tmp_path, mqtt=mqtt(broker), plausibility={"max_jump": 50})
    write_frames(tmp_path / "frames", [700, 701, 650])
    assert run_daemon(config, tmp_path / "daemon.log", DAEMON_TIMEOUT_S) == 0
    for path in (tmp_path / "frames").glob("*.png"):
        path.unlink()
    write_frames(tmp_path / "frames", [702, 703])
    assert run_daemon(config, tmp_path / "daemon.log", DAEMON_TIMEOUT_S) == 0

    command = ["history", "--config", str(config), "--since", "all", "--csv"]
    result = subprocess.run(
        [sys.executable, "-m", "edgemeter", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    accepted = [float(r["value"]) for r in rows if r["kind"] == "accepted"]
    rejected = [r for r in rows if r["kind"] == "rejected"]
    assert accepted == [700, 701, 702, 703]
    assert [r["raw"] for r in rejected] == ["000650"]
    assert rejected[0]["reason"].startswith("decrease")
    kept = list((tmp_path / "state" / "rejected").glob("*.jpg"))
    assert len(kept) == 1  # the crop of the rejected reading, for diagnosis


def test_web_page_shows_the_latest_reading_and_frame(tmp_path: Path, broker: Broker) -> None:
    write_frames(tmp_path / "frames", list(range(800, 840)))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(
        tmp_path,
        mqtt=mqtt(broker),
        camera={"interval_s": 0.3},
        http={"enabled": True, "port": port},
    )
    process = start_daemon(config, tmp_path / "daemon.log")
    base = f"http://127.0.0.1:{port}"
    status: dict[str, Any] = {}

    def reading_shown() -> bool:
        nonlocal status
        try:
            with urllib.request.urlopen(f"{base}/api/status.json", timeout=10) as response:
                status = json.loads(response.read())
        except OSError:
            return False  # not serving yet
        return bool(status.get("reading")) and status["reading"]["value"] >= 803

    try:
        assert wait_for(reading_shown, 90, interval_s=0.2)
        with urllib.request.urlopen(f"{base}/frame.jpg", timeout=10) as response:
            frame = response.read()
            content_type = response.headers["Content-Type"]
        with urllib.request.urlopen(f"{base}/", timeout=10) as response:
            page = response.read().decode()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert 803 <= status["reading"]["value"] < 840
    assert content_type == "image/jpeg"
    assert frame[:2] == b"\xff\xd8"
    assert "km" in page
    # The classifier's cuts are drawn on the frame in the cell colour (cyan): pixels
    # far more blue and green than red, which the rendered counter itself never has.
    # JPEG smears the one-pixel lines, so the hue is tested, not the exact colour.
    assert CELL_COLOUR == (255, 255, 0)
    b, g, r = cv2.split(cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR))
    cyan = (b.astype(int) - r > 40) & (g.astype(int) - r > 40)
    assert int(cyan.sum()) > 100


def test_unwritable_state_directory_is_reported_and_readings_still_flow(
    tmp_path: Path, broker: Broker
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the state directory should be\n")
    write_frames(tmp_path / "frames", [900, 901, 902])
    config = write_config(tmp_path, mqtt=mqtt(broker), state={"path": str(blocker / "state.json")})
    log = tmp_path / "daemon.log"
    with Subscriber(broker, f"{PREFIX}/#") as live:
        process = start_daemon(config, log, TMPDIR=str(tmp_path))
        assert process.wait(timeout=DAEMON_TIMEOUT_S) == 0
        live.wait_until(lambda m: "offline" in payloads(m, "status"), 10)
    assert values(live.messages) == [900, 901, 902]
    text = log.read_text()
    assert "Traceback" not in text
    assert f"keeping undelivered readings in {tmp_path}" in text
    save_errors = [line for line in text.splitlines() if "cannot be created or used" in line]
    assert len(save_errors) == 1  # said once, not every cycle
    assert str(blocker) in save_errors[0]


def test_missing_picamera2_fails_at_once_as_a_configuration_error(tmp_path: Path) -> None:
    # On a machine without picamera2 (every machine but a Pi): retrying cannot install
    # it, so the daemon exits 2 (systemd does not restart) instead of waiting for READY.
    try:
        import picamera2  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - only on a Pi
        pytest.skip("picamera2 is installed here: this test is for machines without it")
    config = write_config(tmp_path, camera={"source": "picamera2", "path": None})
    log = tmp_path / "daemon.log"
    assert run_daemon(config, log, timeout_s=60) == 2
    text = log.read_text()
    assert "picamera2 cannot be imported" in text
    assert "apt-get install python3-picamera2" in text
    assert "; retrying in" not in text  # the camera retry line
    assert "Traceback" not in text
