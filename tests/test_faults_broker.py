"""Broker faults end to end: a real daemon, a real Mosquitto that is late, killed or slow.

The promise under test: every reading the daemon accepted reaches a subscriber, in
order, with the time of its frame; a repeat after a reconnect (QoS 1, lost PUBACK)
carries the same value and time and is counted, a different value or time never comes.
The daemon's side of the comparison is its history (value and frame time of every
accepted reading) and its log; the other side is a persistent subscriber on a broker
that saves every change, so a broker SIGKILL does not lose what it already acknowledged.
"""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from broker import Broker, Received, SlowProxy, Subscriber, wait_for
from replay import (
    Delivery,
    accepted_from_history,
    accepted_from_log,
    kill_if_running,
    received_readings,
    start_daemon,
    write_config,
    write_frames,
)

READING = "edgemeter/test/reading"
DAEMON_TIMEOUT_S = 240.0


def live_readings(messages: list[Received]) -> list[str]:
    # A retained copy is a replay of the last reading at (re)subscribe, not a delivery.
    return [m.payload for m in messages if m.topic == READING and not m.retain]


def has_all(count: int) -> Callable[[list[Received]], bool]:
    return lambda messages: len({p for p in live_readings(messages)}) >= count


def persistent_subscriber(broker: Broker, client_id: str) -> Subscriber:
    """A subscriber whose session the broker has saved to disk: it queues while we are away."""
    subscriber = Subscriber(broker, READING, client_id=client_id, persistent=True).start()
    broker.restart()  # a clean stop writes the session to the broker's disk
    assert wait_for(subscriber._client.is_connected, 15)
    return subscriber


def replay_config(tmp_path: Path, port: int, truth: list[int], interval_s: float) -> Path:
    write_frames(tmp_path / "frames", truth)
    return write_config(
        tmp_path,
        mqtt={"host": "127.0.0.1", "port": port, "keepalive_s": 5},
        camera={"interval_s": interval_s},
        plausibility={"max_jump": 50},
    )


def delivery_of(config: Path, subscriber: Subscriber) -> Delivery:
    return Delivery(
        accepted_from_history(config), received_readings(live_readings(subscriber.messages))
    )


@contextmanager
def replaying(
    config: Path, log: Path, subscriber: Subscriber, count: int
) -> Iterator[subprocess.Popen[bytes]]:
    """A daemon replaying `config` while the body does its harm; on leaving, the replay
    must end cleanly and `count` readings reach the subscriber. Both are stopped anyway."""
    process = start_daemon(config, log)
    try:
        yield process
        assert process.wait(timeout=DAEMON_TIMEOUT_S) == 0
        subscriber.wait_until(has_all(count), 60)
    finally:
        kill_if_running(process)
        subscriber.stop()


def assert_delivered(delivery: Delivery, truth: list[int], log: Path) -> None:
    assert accepted_from_log(log) == truth
    assert [a.value for a in delivery.accepted] == truth
    assert delivery.missing == []
    assert delivery.conflicts == []
    assert delivery.in_order
    assert "Traceback" not in log.read_text()


def test_broker_down_at_start_gets_every_reading_once_it_appears(
    tmp_path: Path, make_broker: Callable[..., Broker]
) -> None:
    broker = make_broker(durable=True)
    truth = list(range(7000, 7040))
    config = replay_config(tmp_path, broker.port, truth, interval_s=0.2)
    log = tmp_path / "daemon.log"
    subscriber = persistent_subscriber(broker, "down-at-start")
    broker.stop()
    with replaying(config, log, subscriber, len(truth)) as process:
        time.sleep(5.0)  # the broker appears 5 s after the daemon
        assert process.poll() is None
        broker.start()
    delivery = delivery_of(config, subscriber)
    text = log.read_text()
    before_broker = text.split("mqtt connected")[0]
    held = before_broker.count(" accepted value=")
    print(f"FAULT broker-down-at-start: held_in_outbox_before_connect={held} {delivery.summary()}")
    assert "mqtt connect failed" in before_broker
    assert held >= 5  # readings really waited in the outbox for the broker
    assert_delivered(delivery, truth, log)


def test_broker_killed_repeatedly_during_a_replay_loses_nothing(
    tmp_path: Path, make_broker: Callable[..., Broker]
) -> None:
    broker = make_broker(durable=True)
    truth = list(range(7100, 7160))
    config = replay_config(tmp_path, broker.port, truth, interval_s=0.3)
    log = tmp_path / "daemon.log"
    rng = random.Random(20261124)
    subscriber = persistent_subscriber(broker, "killed-repeatedly")
    kills = 0
    with replaying(config, log, subscriber, len(truth)) as process:
        for _ in range(4):
            target = len(accepted_from_log(log)) + rng.randint(4, 9)
            assert wait_for(lambda: len(accepted_from_log(log)) >= target, 60)  # noqa: B023
            assert process.poll() is None  # the kill lands during the replay
            broker.kill()
            kills += 1
            time.sleep(rng.uniform(0.5, 3.0))
            broker.start()
    delivery = delivery_of(config, subscriber)
    disconnects = log.read_text().count("mqtt disconnected")
    print(
        f"FAULT broker-killed: kills={kills} daemon_disconnects_logged={disconnects}"
        f" {delivery.summary()}"
    )
    assert disconnects >= 3
    assert_delivered(delivery, truth, log)


def test_slow_stalling_broker_link_delivers_everything_in_order(
    tmp_path: Path, make_broker: Callable[..., Broker]
) -> None:
    broker = make_broker(durable=True)
    truth = list(range(7200, 7240))
    proxy = SlowProxy(
        broker.port, delay_s=(0.3, 0.8), stall_chance=0.05, stall_s=3.0, accept_delay_s=2.0, seed=5
    )
    config = replay_config(tmp_path, proxy.port, truth, interval_s=0.2)
    log = tmp_path / "daemon.log"
    subscriber = persistent_subscriber(broker, "slow-link")
    with proxy, replaying(config, log, subscriber, len(truth)):
        pass  # the proxy's delays and stalls are the harm
    delivery = delivery_of(config, subscriber)
    stats = proxy.stats
    disconnects = log.read_text().count("mqtt disconnected")
    print(
        f"FAULT slow-link: connections={stats.connections} chunks={stats.chunks}"
        f" stalls={stats.stalls} daemon_disconnects_logged={disconnects} {delivery.summary()}"
    )
    assert stats.chunks >= len(truth)  # the daemon's traffic really went through the proxy
    assert_delivered(delivery, truth, log)
