"""Publishing against a real Mosquitto: order, retention, availability, outages, auth, TLS."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from broker import Broker, Received, Subscriber, collect, publish_message, wait_for
from replay import kill_if_running

from edgemeter.config import MeterConfig, MqttConfig, TlsConfig
from edgemeter.outbox import Outbox
from edgemeter.publish import (
    PublishConfigError,
    Publisher,
    Topics,
    device_class_for,
    discovery_payload,
    read_password,
    reading_payload,
    storage_hint,
)

METER = MeterConfig(id="car", unit="km", decimals=1, name="Car odometer")
VERSION = "9.9.9-test"
# Generous bounds: they only decide how long a broken test takes to fail.
CONNECT_S = 20.0
DELIVER_S = 30.0
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def reading(n: int) -> str:
    return reading_payload(float(n), str(n), "km", T0 + timedelta(seconds=n), 0.9)


def values(messages: list[Received], topic: str) -> list[float]:
    return [json.loads(m.payload)["value"] for m in messages if m.topic == topic]


def first_arrivals(items: list[float]) -> list[float]:
    """Each value where it first arrived.

    Delivery is at least once: the publisher repeats a reading whose PUBACK was lost,
    and a restarted broker repeats unacknowledged messages to a persistent subscriber.
    Order is judged on first arrivals.
    """
    return list(dict.fromkeys(items))


def has_values(topic: str, count: int) -> Callable[[list[Received]], bool]:
    return lambda messages: len(set(values(messages, topic))) >= count


def config_for(broker: Broker, **overrides: Any) -> MqttConfig:
    return MqttConfig(host=broker.host, port=broker.port, **overrides)


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    outbox = Outbox(tmp_path / "outbox.sqlite", max_messages=1000)
    yield outbox
    outbox.close()


@pytest.fixture
def make_publisher(outbox: Outbox) -> Iterator[Callable[..., Publisher]]:
    """make_publisher(mqtt_config, meter=METER, start=True) -> Publisher, stopped afterwards."""
    publishers: list[Publisher] = []

    def make(mqtt: MqttConfig, meter: MeterConfig = METER, start: bool = True) -> Publisher:
        publisher = Publisher(mqtt, meter, outbox, VERSION)
        publishers.append(publisher)
        if start:
            publisher.start()
        return publisher

    yield make
    for publisher in publishers:
        publisher.stop(timeout_s=1.0)


def connected(publisher: Publisher) -> Publisher:
    assert wait_for(lambda: publisher.connected, CONNECT_S), "publisher never connected"
    return publisher


# -- topics and payloads ------------------------------------------------------------


def test_topics_are_built_from_prefix_and_meter_id() -> None:
    topics = Topics.from_config(MqttConfig(topic_prefix="home/meters"), METER)

    assert topics == Topics(
        reading="home/meters/car/reading",
        status="home/meters/car/status",
        rejected="home/meters/car/rejected",
        event="home/meters/car/event",
        discovery="homeassistant/sensor/edgemeter_car/config",
        ha_status="homeassistant/status",
    )


def test_reading_payload_is_json_with_a_utc_timestamp() -> None:
    ts = datetime(2024, 5, 1, 14, 30, 5, tzinfo=timezone(timedelta(hours=2)))

    body = json.loads(reading_payload(12345.6, "123456", "km", ts, 0.87654))

    assert body == {
        "value": 12345.6,
        "raw": "123456",
        "unit": "km",
        "ts": "2024-05-01T12:30:05Z",
        "confidence": 0.877,
    }


@pytest.mark.parametrize(
    ("value", "ts"),
    [
        (1.0, datetime(2024, 5, 1, 12, 0)),  # naive: which zone?
        (float("nan"), T0),
        (float("inf"), T0),
    ],
)
def test_reading_payload_refuses_what_would_be_a_wrong_reading(value: float, ts: datetime) -> None:
    with pytest.raises(ValueError):
        reading_payload(value, "1", "km", ts, 0.9)


@pytest.mark.parametrize(
    ("unit", "configured", "expected"),
    [
        ("km", None, "distance"),
        ("mi", None, "distance"),
        ("mm", None, "distance"),
        ("kWh", None, "energy"),
        ("m3", None, "water"),
        ("m³", None, "water"),
        ("ft3", None, "water"),
        ("L", None, "water"),
        ("gal", None, "water"),
        ("m3", "gas", "gas"),
        ("km", "energy", "energy"),
        ("revolutions", None, None),
    ],
)
def test_device_class_comes_from_config_else_from_the_unit(
    unit: str, configured: Any, expected: str | None
) -> None:
    assert device_class_for(MeterConfig(unit=unit, device_class=configured)) == expected


def test_discovery_payload_describes_a_total_increasing_sensor() -> None:
    meter = MeterConfig(id="water_main", unit="m3", decimals=3, name="Water meter")
    mqtt = MqttConfig()
    topics = Topics.from_config(mqtt, meter)

    body = json.loads(discovery_payload(mqtt, meter, topics, VERSION))

    assert body["unique_id"] == "edgemeter_water_main"
    assert body["default_entity_id"] == "sensor.edgemeter_water_main"
    assert body["state_topic"] == body["json_attributes_topic"] == topics.reading
    assert body["value_template"] == "{{ value_json.value }}"
    assert body["unit_of_measurement"] == "m³"
    assert body["device_class"] == "water"
    assert body["state_class"] == "total_increasing"
    assert body["suggested_display_precision"] == 3
    assert body["availability_topic"] == topics.status
    assert (body["payload_available"], body["payload_not_available"]) == ("online", "offline")
    assert body["device"] == {
        "identifiers": ["edgemeter_water_main"],
        "name": "Water meter",
        "manufacturer": "edgemeter",
        "model": "6-digit counter, camera OCR",
        "sw_version": VERSION,
    }
    assert "expire_after" not in body


def test_discovery_payload_without_a_known_unit_has_no_device_class() -> None:
    meter = MeterConfig(unit="turns")
    mqtt = MqttConfig()

    body = json.loads(discovery_payload(mqtt, meter, Topics.from_config(mqtt, meter), VERSION))

    assert "device_class" not in body
    assert body["unit_of_measurement"] == "turns"


def test_read_password_strips_the_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("s3cret value\n")

    assert read_password(str(path)) == "s3cret value"


def test_password_file_errors_name_the_path_not_the_content(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    empty = tmp_path / "empty"
    empty.write_text("\n")

    with pytest.raises(PublishConfigError, match=f"{re.escape(str(missing))}.*No such file"):
        read_password(str(missing))
    with pytest.raises(PublishConfigError, match=f"{re.escape(str(empty))} is empty"):
        read_password(str(empty))


# -- against a real broker ------------------------------------------------------------


def test_readings_are_published_in_order_and_the_last_one_is_retained(
    broker: Broker, make_publisher: Callable[..., Publisher], outbox: Outbox
) -> None:
    publisher = make_publisher(config_for(broker))
    topic = publisher.topics.reading

    with Subscriber(broker, topic) as live:
        for n in range(10):
            publisher.publish_reading(reading(n))
        seen = live.wait_until(has_values(topic, 10), DELIVER_S)
    assert publisher.flush(DELIVER_S)
    late = collect(broker, topic, until=lambda m: len(m) >= 1)

    assert first_arrivals(values(seen, topic)) == [float(n) for n in range(10)]
    assert len(outbox) == 0
    assert [(values([m], topic), m.retain) for m in late] == [([9.0], True)]


def test_a_reading_accepted_again_after_a_crash_keeps_its_first_time(
    broker: Broker, make_publisher: Callable[..., Publisher], outbox: Outbox
) -> None:
    publisher = make_publisher(config_for(broker))
    topic = publisher.topics.reading
    first = reading(5)
    # A restart whose state file missed reading 5 reads the counter again, later.
    again = reading_payload(5.0, "5", "km", T0 + timedelta(hours=1), 0.9)
    # A re-baseline back to 5 after 6 is a new reading, not a repeat.
    back = reading_payload(5.0, "5", "km", T0 + timedelta(hours=2), 0.9)

    with Subscriber(broker, topic) as live:
        queued = [publisher.publish_reading(p) for p in (first, again, reading(6), back)]
        assert publisher.flush(DELIVER_S)
        seen = live.wait_until(lambda m: len(values(m, topic)) >= 3, DELIVER_S)

    stamps = [json.loads(m.payload)["ts"] for m in seen if m.topic == topic]
    assert queued == [True, False, True, True]
    assert values(seen, topic) == [5.0, 6.0, 5.0]
    assert stamps[0] == json.loads(first)["ts"]
    assert stamps[2] == json.loads(back)["ts"]
    assert outbox.last_put(topic) == back


def test_discovery_then_online_are_sent_retained_on_connect(
    broker: Broker, make_publisher: Callable[..., Publisher]
) -> None:
    topics = Topics.from_config(config_for(broker), METER)

    with Subscriber(broker, [topics.discovery, topics.status]) as live:
        connected(make_publisher(config_for(broker)))
        order = live.wait_until(lambda m: len(m) >= 2, DELIVER_S)
    late = collect(broker, [topics.discovery, topics.status], until=lambda m: len(m) >= 2)

    assert [m.topic for m in order[:2]] == [topics.discovery, topics.status]
    retained = {m.topic: m for m in late}
    assert retained[topics.status] == Received(topics.status, "online", True)
    assert retained[topics.discovery].retain
    assert json.loads(retained[topics.discovery].payload)["unique_id"] == "edgemeter_car"


def test_no_discovery_when_disabled(
    broker: Broker, make_publisher: Callable[..., Publisher]
) -> None:
    mqtt = config_for(broker, discovery=False)
    topics = Topics.from_config(mqtt, METER)
    connected(make_publisher(mqtt))

    late = collect(broker, [topics.discovery, topics.status], until=lambda m: len(m) >= 1)
    nothing_more = collect(broker, topics.discovery, timeout_s=1.0)

    assert [m.topic for m in late] == [topics.status]
    assert nothing_more == []


def test_rejections_and_events_are_sent_but_not_retained(
    broker: Broker, make_publisher: Callable[..., Publisher]
) -> None:
    publisher = connected(make_publisher(config_for(broker)))
    topics = publisher.topics

    with Subscriber(broker, [topics.rejected, topics.event]) as live:
        publisher.publish_rejected('{"reason": "low_confidence"}')
        publisher.publish_event('{"event": "first_reading"}')
        seen = live.wait_until(lambda m: len(m) >= 2, DELIVER_S)
    late = collect(broker, [topics.rejected, topics.event], timeout_s=1.0)

    assert sorted(m.topic for m in seen) == sorted([topics.rejected, topics.event])
    assert late == []


def test_rejections_while_offline_are_dropped_not_queued(
    make_broker: Callable[..., Broker], make_publisher: Callable[..., Publisher], outbox: Outbox
) -> None:
    down = make_broker(start=False)
    publisher = make_publisher(config_for(down))

    publisher.publish_rejected('{"reason": "low_confidence"}')
    publisher.publish_event('{"event": "first_reading"}')

    assert not publisher.connected
    assert len(outbox) == 0


def test_readings_queued_while_the_broker_is_down_arrive_in_order_after_it_starts(
    make_broker: Callable[..., Broker], make_publisher: Callable[..., Publisher], outbox: Outbox
) -> None:
    broker = make_broker()
    topic = Topics.from_config(config_for(broker), METER).reading
    # A persistent session, saved by the clean stop, so the broker queues every reading
    # for the observer however fast the publisher reconnects after the start.
    Subscriber(broker, topic, client_id="observer", persistent=True).start().stop()
    broker.stop()

    publisher = make_publisher(config_for(broker))
    for n in range(5):
        publisher.publish_reading(reading(n))
    queued = len(outbox)
    broker.start()
    with Subscriber(broker, topic, client_id="observer", persistent=True) as observer:
        seen = observer.wait_until(has_values(topic, 5), DELIVER_S)

    assert queued == 5
    assert first_arrivals(values(seen, topic)) == [float(n) for n in range(5)]
    assert publisher.flush(DELIVER_S)


def test_readings_are_still_published_in_order_while_the_outbox_disk_is_full(
    broker: Broker,
    make_publisher: Callable[..., Publisher],
    outbox: Outbox,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = Topics.from_config(config_for(broker), METER).reading
    real_put = outbox.put
    disk_full = True

    def put(*args: Any) -> int:
        if disk_full:
            raise sqlite3.OperationalError("database or disk is full")
        return real_put(*args)

    monkeypatch.setattr(outbox, "put", put)
    with Subscriber(broker, topic) as observer:
        publisher = connected(make_publisher(config_for(broker)))
        for n in range(3):
            publisher.publish_reading(reading(n))
        observer.wait_until(has_values(topic, 3), DELIVER_S)
        disk_full = False  # space freed: later readings go through the outbox again
        for n in range(3, 6):
            publisher.publish_reading(reading(n))
        seen = observer.wait_until(has_values(topic, 6), DELIVER_S)

    assert first_arrivals(values(seen, topic)) == [float(n) for n in range(6)]
    assert publisher.flush(DELIVER_S)
    errors = [r for r in caplog.records if "outbox cannot store readings" in r.getMessage()]
    assert len(errors) == 1  # logged once, not per reading


def test_delivery_goes_on_when_the_disk_refuses_to_remove_delivered_readings(
    broker: Broker,
    make_publisher: Callable[..., Publisher],
    outbox: Outbox,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = Topics.from_config(config_for(broker), METER).reading
    real_remove = outbox.remove_through
    disk_full = True

    def remove_through(message_id: int) -> int:
        if disk_full:
            raise sqlite3.OperationalError("database or disk is full")
        return real_remove(message_id)

    monkeypatch.setattr(outbox, "remove_through", remove_through)
    caplog.set_level(logging.INFO)
    with Subscriber(broker, topic) as observer:
        publisher = connected(make_publisher(config_for(broker)))
        for n in range(3):
            publisher.publish_reading(reading(n))
        during = observer.wait_until(has_values(topic, 3), DELIVER_S)
        assert publisher.flush(DELIVER_S)  # acknowledged is delivered, deleted or not
        left_in_file = len(outbox)
        disk_full = False
        for n in range(3, 6):
            publisher.publish_reading(reading(n))
        seen = observer.wait_until(has_values(topic, 6), DELIVER_S)
        assert publisher.flush(DELIVER_S)

    assert values(during, topic) == [0.0, 1.0, 2.0]  # each once: none sent again and again
    assert left_in_file == 3
    assert first_arrivals(values(seen, topic)) == [float(n) for n in range(6)]
    assert len(outbox) == 0  # the first removal that works clears the earlier ones too
    messages = [r.getMessage() for r in caplog.records]
    assert sum("outbox cannot remove delivered readings" in m for m in messages) == 1
    assert any("outbox removes delivered readings again" in m for m in messages)
    assert not any("delivery failed" in m for m in messages)


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        ("database or disk is full", "free space"),
        ("attempt to write a readonly database", "read-only, check dmesg"),
        ("disk I/O error", "failed a write: check dmesg"),
    ],
)
def test_storage_hint_fits_the_disk_error(error: str, hint: str) -> None:
    assert hint in storage_hint(sqlite3.OperationalError(error))


def test_broker_restart_mid_stream_loses_nothing_and_keeps_order(
    broker: Broker, make_publisher: Callable[..., Publisher]
) -> None:
    publisher = connected(make_publisher(config_for(broker)))
    topic = publisher.topics.reading

    with Subscriber(broker, topic, client_id="observer", persistent=True) as observer:
        for n in range(30):
            if n == 10:
                broker.stop()
            if n == 20:
                broker.start()
            publisher.publish_reading(reading(n))
        seen = observer.wait_until(has_values(topic, 30), DELIVER_S)

    assert first_arrivals(values(seen, topic)) == [float(n) for n in range(30)]
    assert publisher.flush(DELIVER_S)


def test_reading_in_flight_when_the_broker_dies_is_sent_again(
    broker: Broker, make_publisher: Callable[..., Publisher]
) -> None:
    publisher = connected(make_publisher(config_for(broker)))
    topic = publisher.topics.reading
    observer = Subscriber(broker, topic, client_id="observer", persistent=True).start()
    try:
        broker.restart()  # saves the observer's session: it must outlive the SIGKILL
        publisher.publish_reading(reading(0))
        observer.wait_until(has_values(topic, 1), DELIVER_S)

        broker.pause()  # the broker reads nothing: reading 1 goes out, no PUBACK returns
        publisher.publish_reading(reading(1))
        publisher.publish_reading(reading(2))
        wait_for(lambda: False, 0.5)  # let the delivery thread put reading 1 on the wire
        broker.kill()
        broker.start()
        seen = observer.wait_until(has_values(topic, 3), DELIVER_S)
    finally:
        observer.stop()

    assert first_arrivals(values(seen, topic)) == [0.0, 1.0, 2.0]
    assert publisher.flush(DELIVER_S)


def test_stop_announces_offline_retained(
    broker: Broker, make_publisher: Callable[..., Publisher]
) -> None:
    publisher = connected(make_publisher(config_for(broker)))

    publisher.stop()
    publisher.stop()  # a second stop is harmless
    late = collect(broker, publisher.topics.status, until=lambda m: len(m) >= 1)

    assert late == [Received(publisher.topics.status, "offline", True)]
    assert not publisher.connected


def test_stop_delivers_pending_readings_first(
    broker: Broker, make_publisher: Callable[..., Publisher], outbox: Outbox
) -> None:
    publisher = connected(make_publisher(config_for(broker)))
    for n in range(5):
        publisher.publish_reading(reading(n))

    publisher.stop(timeout_s=DELIVER_S)
    late = collect(broker, publisher.topics.reading, until=lambda m: len(m) >= 1)

    assert len(outbox) == 0
    assert values(late, publisher.topics.reading) == [4.0]


def test_stop_without_a_broker_returns_and_keeps_the_outbox(
    make_broker: Callable[..., Broker], make_publisher: Callable[..., Publisher], outbox: Outbox
) -> None:
    down = make_broker(start=False)
    publisher = make_publisher(config_for(down))
    publisher.publish_reading(reading(1))

    publisher.stop(timeout_s=1.0)
    never_started = make_publisher(config_for(down), start=False)
    never_started.stop()

    assert len(outbox) == 1


PUBLISHER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from edgemeter.config import MeterConfig, MqttConfig
    from edgemeter.outbox import Outbox
    from edgemeter.publish import Publisher

    outbox = Outbox(sys.argv[2], max_messages=10)
    publisher = Publisher(
        MqttConfig(host="127.0.0.1", port=int(sys.argv[1])), MeterConfig(id="car"), outbox, "t"
    )
    publisher.start()
    for _ in range(600):  # bounded: the test kills this process long before
        time.sleep(0.1)
    """
)


def test_a_publisher_that_dies_leaves_offline_via_its_last_will(
    broker: Broker, tmp_path: Path
) -> None:
    status = Topics.from_config(config_for(broker), METER).status
    process = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER_SCRIPT, str(broker.port), str(tmp_path / "ob.sqlite")]
    )
    try:
        online = collect(broker, status, until=lambda m: bool(m) and m[-1].payload == "online",
                         timeout_s=CONNECT_S)  # fmt: skip
        process.kill()  # SIGKILL: no clean disconnect, no "offline" of its own
        process.wait(timeout=10)
        after = collect(broker, status, until=lambda m: bool(m) and m[-1].payload == "offline",
                        timeout_s=CONNECT_S)  # fmt: skip
    finally:
        kill_if_running(process)

    assert online[-1].payload == "online"
    assert after[-1] == Received(status, "offline", True)


def test_home_assistant_coming_online_triggers_discovery_again(
    broker: Broker, make_publisher: Callable[..., Publisher]
) -> None:
    publisher = connected(make_publisher(config_for(broker)))
    topics = publisher.topics

    with Subscriber(broker, topics.discovery) as watcher:
        watcher.wait_until(lambda m: len(m) >= 1, DELIVER_S)  # the retained copy
        publish_message(broker, topics.ha_status, "online")
        seen = watcher.wait_until(lambda m: len(m) >= 2, DELIVER_S)

    assert len(seen) >= 2
    assert seen[-1].retain is False  # a fresh copy, not the retained replay
    assert json.loads(seen[-1].payload)["unique_id"] == "edgemeter_car"


def test_wrong_password_is_logged_as_refused_and_never_treated_as_connected(
    make_broker: Callable[..., Broker],
    make_publisher: Callable[..., Publisher],
    outbox: Outbox,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = make_broker(users={"edgemeter": "right-password"})
    password_file = tmp_path / "mqtt-password"
    password_file.write_text("wr0ng-Pa55word\n")
    caplog.set_level(logging.DEBUG)

    publisher = make_publisher(
        config_for(broker, username="edgemeter", password_file=str(password_file))
    )
    publisher.publish_reading(reading(1))
    refused = wait_for(lambda: "mqtt connect refused" in caplog.text, CONNECT_S)
    publisher.stop(timeout_s=1.0)

    assert refused
    refusals = [r for r in caplog.records if "mqtt connect refused" in r.getMessage()]
    assert refusals[0].levelno == logging.ERROR
    assert "reason=" in refusals[0].getMessage()
    assert not publisher.connected
    assert len(outbox) == 1
    assert "wr0ng-Pa55word" not in caplog.text


def test_username_and_password_from_file_connect_and_never_reach_the_log(
    make_broker: Callable[..., Broker],
    make_publisher: Callable[..., Publisher],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = make_broker(users={"edgemeter": "s3cret-Pa55"})
    password_file = tmp_path / "mqtt-password"
    password_file.write_text("s3cret-Pa55\n")
    caplog.set_level(logging.DEBUG)

    publisher = make_publisher(
        config_for(broker, username="edgemeter", password_file=str(password_file))
    )
    publisher.publish_reading(reading(7))
    delivered = publisher.flush(DELIVER_S)
    late = collect(broker, publisher.topics.reading, until=lambda m: len(m) >= 1)
    publisher.stop()

    assert delivered
    assert values(late, publisher.topics.reading) == [7.0]
    assert "s3cret-Pa55" not in caplog.text


def test_password_file_without_username_is_a_config_error(
    broker: Broker, make_publisher: Callable[..., Publisher], tmp_path: Path
) -> None:
    password_file = tmp_path / "mqtt-password"
    password_file.write_text("pw\n")
    publisher = make_publisher(config_for(broker, password_file=str(password_file)), start=False)

    with pytest.raises(PublishConfigError, match=r"mqtt\.username"):
        publisher.start()


def test_unreadable_password_file_is_a_config_error_at_start(
    broker: Broker, make_publisher: Callable[..., Publisher], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-password"
    publisher = make_publisher(
        config_for(broker, username="edgemeter", password_file=str(missing)), start=False
    )

    with pytest.raises(PublishConfigError, match="no-such-password"):
        publisher.start()


def test_tls_with_the_broker_ca_delivers_readings(
    make_broker: Callable[..., Broker], make_publisher: Callable[..., Publisher]
) -> None:
    broker = make_broker(tls=True)
    assert broker.tls_files is not None and broker.tls_port is not None
    mqtt = MqttConfig(
        host=broker.host, port=broker.tls_port, tls=TlsConfig(ca_file=str(broker.tls_files.ca_file))
    )

    publisher = make_publisher(mqtt)
    publisher.publish_reading(reading(3))
    delivered = publisher.flush(DELIVER_S)
    late = collect(broker, publisher.topics.reading, until=lambda m: len(m) >= 1)

    assert delivered
    assert values(late, publisher.topics.reading) == [3.0]


def test_tls_client_certificate_is_presented(
    make_broker: Callable[..., Broker], make_publisher: Callable[..., Publisher]
) -> None:
    broker = make_broker(tls=True, require_client_cert=True)
    files = broker.tls_files
    assert files is not None and broker.tls_port is not None
    tls = TlsConfig(
        ca_file=str(files.ca_file), cert_file=str(files.client_cert), key_file=str(files.client_key)
    )

    publisher = make_publisher(MqttConfig(host=broker.host, port=broker.tls_port, tls=tls))

    assert publisher.flush(0) and connected(publisher).connected


def test_tls_against_an_unknown_ca_never_connects(
    make_broker: Callable[..., Broker],
    make_publisher: Callable[..., Publisher],
    outbox: Outbox,
    tmp_path: Path,
) -> None:
    from broker import make_tls_files

    broker = make_broker(tls=True)
    other_ca = make_tls_files(tmp_path / "other").ca_file
    assert broker.tls_port is not None
    mqtt = MqttConfig(host=broker.host, port=broker.tls_port, tls=TlsConfig(ca_file=str(other_ca)))

    publisher = make_publisher(mqtt)
    publisher.publish_reading(reading(1))

    assert not wait_for(lambda: publisher.connected, 2.0)
    assert len(outbox) == 1


def test_missing_tls_ca_file_is_a_config_error(
    make_publisher: Callable[..., Publisher], tmp_path: Path
) -> None:
    mqtt = MqttConfig(tls=TlsConfig(ca_file=str(tmp_path / "missing-ca.crt")))
    publisher = make_publisher(mqtt, start=False)

    with pytest.raises(PublishConfigError, match=r"mqtt\.tls"):
        publisher.start()
