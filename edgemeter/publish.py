"""Publishing: accepted readings, diagnostics and Home Assistant discovery over MQTT.

What it does:
- builds every topic (`Topics`) and every payload (`reading_payload`,
  `discovery_payload`) in one place;
- keeps one paho-mqtt 2.x client connected for the life of the daemon, retrying a
  broker that is down (at start too) forever, with back-off from 1 s to 60 s;
- announces availability: a retained "offline" Last Will set before connecting,
  discovery then a retained "online" on every connect, a retained "offline" on a
  clean stop;
- delivers readings from the on-disk `Outbox`, strictly in order, one in flight,
  removing each only after the broker acknowledged it.

What it does not do: decide whether a reading is plausible, keep state, or read the
config file. Rejections and events are best effort (QoS 0, dropped while offline):
they are diagnostics, readings are data.

Delivery is at least once. A reading whose PUBACK was lost (broker or daemon died
between the broker storing it and us removing it from the outbox) is sent again
after the reconnect or restart; the duplicate carries the same value and timestamp,
so a subscriber and Home Assistant (retained state, `total_increasing`) see nothing
change.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import re
import sqlite3
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgemeter.config import MeterConfig, MqttConfig, SecretError, TlsConfig, read_secret
from edgemeter.outbox import Message, Outbox

log = logging.getLogger(__name__)

# The id of a reading delivered from memory because the outbox could not store it.
_UNSTORED_ID = -1


def _demote_not_connected(record: logging.LogRecord) -> bool:
    """paho 2.2's network thread logs an ERROR on every pass while it has no socket
    (during an outage, after a clean disconnect): expected states, reported by our own
    connect/disconnect lines. Shown at debug level only, so ERROR stays meaningful."""
    if record.levelno >= logging.ERROR and record.getMessage().startswith(
        "Client is not connected"
    ):
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
    return True


ONLINE = "online"
OFFLINE = "offline"
# Availability and discovery must reach the broker even if sent just before a drop.
_CONTROL_QOS = 1
# How long the delivery thread blocks in one wait before looking at the stop flag.
_WAIT_SLICE_S = 0.5
# Back-off of the delivery thread after an unexpected error (not a broker outage).
_MIN_BACKOFF_S = 5.0
_MAX_BACKOFF_S = 60.0

# Test-only fault injection (tests/test_faults_crash.py): seconds to pause between the
# broker's acknowledgement of a reading and its removal from the outbox, so a SIGKILL
# lands in that window on purpose. Unset in production.
FAULT_DELAY_DELIVERY_ENV = "EDGEMETER_FAULT_DELAY_DELIVERY_S"

# What a user can do about a refused connect; paho names MQTT 3.1.1 and 5 codes alike.
_CREDENTIALS_HINT = (
    " (check mqtt.username and the password in mqtt.password_file against the broker's"
    " password file; retrying)"
)
_REFUSAL_HINTS = {
    "Bad user name or password": _CREDENTIALS_HINT,
    "Not authorized": _CREDENTIALS_HINT,
    "Client identifier not valid": " (set another mqtt.client_id; retrying)",
}

_UNSAFE_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")

# Home Assistant validates units per device class and spells volumes with
# superscripts; users type the ASCII forms in YAML.
_HA_UNITS = {"m3": "m³", "ft3": "ft³"}
_DEVICE_CLASS_BY_UNIT = {
    **dict.fromkeys(("mm", "cm", "m", "km", "in", "ft", "yd", "mi"), "distance"),
    **dict.fromkeys(("Wh", "kWh", "MWh"), "energy"),
    **dict.fromkeys(("m³", "ft³", "L", "gal"), "water"),
}


class PublishConfigError(Exception):
    """The MQTT settings cannot be used as given (a message a user can act on)."""


@dataclass(frozen=True)
class Topics:
    """Every MQTT topic edgemeter uses; built here and nowhere else."""

    reading: str  # retained JSON per accepted reading
    status: str  # retained online/offline; "offline" is also the Last Will
    rejected: str  # JSON per rejected reading, not retained
    event: str  # JSON per notable event (first reading, rebaseline, jump), not retained
    discovery: str  # Home Assistant discovery config for the sensor, retained
    ha_status: str  # Home Assistant's birth/last-will topic

    @classmethod
    def from_config(cls, mqtt: MqttConfig, meter: MeterConfig) -> Topics:
        base = f"{mqtt.topic_prefix.rstrip('/')}/{meter.id}"
        discovery_prefix = mqtt.discovery_prefix.rstrip("/")
        return cls(
            reading=f"{base}/reading",
            status=f"{base}/status",
            rejected=f"{base}/rejected",
            event=f"{base}/event",
            discovery=f"{discovery_prefix}/sensor/{object_id_for(meter)}/config",
            ha_status=f"{discovery_prefix}/status",
        )


def object_id_for(meter: MeterConfig) -> str:
    """The id Home Assistant uses for the topic, unique_id and entity id.

    Stable for a meter id, so renaming the meter (`name`) keeps the entity and its
    history. The config loader already restricts ids; sanitising again keeps topics
    valid for a MeterConfig built by hand.
    """
    return "edgemeter_" + _UNSAFE_ID_CHARS.sub("_", meter.id)


def reading_payload(value: float, raw: str, unit: str, ts: datetime, confidence: float) -> str:
    """The JSON for the reading topic.

    Raises ValueError for a naive timestamp or a non-finite number: guessing a time
    zone or sending NaN would publish a wrong reading.
    """
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"ts: must be timezone-aware, got {ts.isoformat()}")
    if not math.isfinite(value) or not math.isfinite(confidence):
        raise ValueError(f"value/confidence: must be finite, got {value!r}/{confidence!r}")
    iso = ts.astimezone(UTC).isoformat().replace("+00:00", "Z")
    body = {
        "value": value,
        "raw": raw,
        "unit": unit,
        "ts": iso,
        "confidence": round(confidence, 3),
    }
    return json.dumps(body, allow_nan=False, ensure_ascii=False)


def ha_unit(unit: str) -> str:
    """The unit as Home Assistant spells it (m3 -> m³)."""
    return _HA_UNITS.get(unit, unit)


def device_class_for(meter: MeterConfig) -> str | None:
    """The Home Assistant device class: configured, else guessed from the unit.

    None for an unknown unit: Home Assistant rejects a device class whose units do
    not match, and a plain sensor is better than no sensor. Volumes are "water"
    unless the config says "gas".
    """
    if meter.device_class is not None:
        return meter.device_class
    return _DEVICE_CLASS_BY_UNIT.get(ha_unit(meter.unit))


def discovery_payload(mqtt: MqttConfig, meter: MeterConfig, topics: Topics, version: str) -> str:
    """The retained Home Assistant discovery config for the meter's sensor."""
    object_id = object_id_for(meter)
    device_name = meter.name or meter.id
    body: dict[str, Any] = {
        # null: the sensor is the device's main feature, so Home Assistant names the
        # entity after the device instead of "<device> <entity>".
        "name": None,
        "unique_id": object_id,
        # default_entity_id replaces the payload key object_id, deprecated since Home
        # Assistant 2025.10; older versions drop unknown keys from discovery payloads.
        "default_entity_id": f"sensor.{object_id}",
        "state_topic": topics.reading,
        "value_template": "{{ value_json.value }}",
        "json_attributes_topic": topics.reading,
        "unit_of_measurement": ha_unit(meter.unit),
        # A counter only goes up; Home Assistant treats a decrease as a meter reset.
        "state_class": "total_increasing",
        "suggested_display_precision": meter.decimals,
        "availability_topic": topics.status,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "qos": mqtt.qos,
        "device": {
            "identifiers": [object_id],
            "name": device_name,
            "manufacturer": "edgemeter",
            "model": f"{meter.digits}-digit counter, camera OCR",
            "sw_version": version,
        },
        # No expire_after: the state is retained, and Home Assistant replays it after a
        # restart; expiring it too would blank a meter that simply did not move.
    }
    device_class = device_class_for(meter)
    if device_class is not None:
        body["device_class"] = device_class
    return json.dumps(body, ensure_ascii=False)


def read_password(path: str) -> str:
    """The broker password from its file; errors name the file, never its content."""
    try:
        return read_secret(path, "mqtt.password_file")
    except SecretError as err:
        raise PublishConfigError(str(err)) from err


class Publisher:
    """One MQTT connection for the daemon, and the thread that empties the outbox.

    The main loop calls `publish_reading` (never blocks on the network); paho's
    network thread runs the callbacks; the delivery thread moves outbox messages to
    the broker one at a time.
    """

    def __init__(self, mqtt: MqttConfig, meter: MeterConfig, outbox: Outbox, version: str) -> None:
        self._mqtt = mqtt
        self._meter = meter
        self._outbox = outbox
        self._version = version
        self.topics = Topics.from_config(mqtt, meter)
        self._client_id = mqtt.client_id or f"edgemeter-{meter.id}"
        self._client: paho.Client | None = None
        self._delivery: threading.Thread | None = None
        # One condition for everything the delivery thread waits on: new messages,
        # (re)connects, removals (for flush) and stop.
        self._cond = threading.Condition()
        self._connected = False
        self._connects = 0  # successful connects so far; a change means "reconnected"
        # Readings the outbox could not store (disk full, I/O error), in order. They are
        # all newer than anything in the outbox, and go into it as soon as it takes
        # writes again; until then they are delivered from memory after the outbox.
        self._unstored: collections.deque[str] = collections.deque()
        self._unstored_in_flight = False
        self._store_error: str | None = None
        # Outbox ids up to here are acknowledged by the broker. Normally they are also
        # deleted; when the disk refuses the DELETE (full, read-only) they stay in the
        # file, and delivery goes on past them instead of sending the same one for ever.
        self._delivered_through = 0
        self._remove_error: str | None = None
        self._stopping = False
        self._stopped = False
        self._connect_failures = 0

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Configure the client and start connecting in the background.

        Raises PublishConfigError for settings that can never work (unreadable password
        file, bad TLS files); a broker that is down is not an error, it is retried.
        """
        if self._client is not None or self._stopped:
            raise RuntimeError("Publisher.start: already started or stopped")
        client = self._make_client()
        # The will must be registered before the CONNECT packet that carries it.
        client.will_set(self.topics.status, OFFLINE, qos=_CONTROL_QOS, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=60)
        client.connect_async(self._mqtt.host, self._mqtt.port, keepalive=self._mqtt.keepalive_s)
        self._client = client
        client.loop_start()
        self._delivery = threading.Thread(
            target=self._deliver_forever, name="edgemeter-delivery", daemon=True
        )
        self._delivery.start()
        log.info(
            "mqtt starting host=%s port=%d client_id=%s tls=%s pending=%d",
            self._mqtt.host,
            self._mqtt.port,
            self._client_id,
            self._mqtt.tls is not None,
            len(self._outbox),
        )

    def stop(self, timeout_s: float = 2.0) -> None:
        """Deliver what the timeout allows, announce "offline", disconnect.

        Whatever is still in the outbox stays there for the next start. Safe to call
        twice, before start, and when never connected.
        """
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + timeout_s
        client = self._client
        if self.connected:
            self.flush(max(0.0, deadline - time.monotonic()))
        with self._cond:
            # Decided under the lock on_connect takes to announce "online": either the
            # "online" went out first and "offline" follows, or no "online" goes out.
            self._stopping = True
            announce_offline = self._connected
            self._cond.notify_all()
        if self._delivery is not None:
            self._delivery.join(timeout=max(_WAIT_SLICE_S * 2, deadline - time.monotonic()))
        if client is None:
            return
        if announce_offline:
            self._announce_offline(client, max(0.5, deadline - time.monotonic()))
        client.disconnect()
        client.loop_stop()
        with self._cond:
            self._connected = False
        log.info("mqtt stopped pending=%d", len(self._outbox))

    # -- publishing --------------------------------------------------------------

    def publish_reading(self, topic_payload: str) -> bool:
        """Queue a reading (JSON from `reading_payload`) durably; returns at once.

        The outbox commit is on disk when this returns; delivery happens on the
        delivery thread, retained, with the configured QoS. False when the reading
        repeats the newest one queued (same value), which keeps its first time and is
        not queued again: the caller should not record it as new either.
        """
        with self._cond:
            if self._repeats_last_reading(topic_payload):
                # Killed after queuing a reading but before the state file recorded it,
                # the daemon reads the same value again after the restart. The first
                # copy (maybe delivered already) keeps its original time; a second
                # would publish the same value with another time.
                log.info("reading already queued, not sent again payload=%s", topic_payload)
                return False
            if len(self._unstored) >= self._mqtt.outbox_max:
                # Bounded like the outbox; never the one being delivered.
                del self._unstored[1 if self._unstored_in_flight else 0]
                log.warning("unstored readings full, dropped oldest max=%d", self._mqtt.outbox_max)
            self._unstored.append(topic_payload)
            self._store_unstored()
            self._cond.notify_all()
        return True

    def _repeats_last_reading(self, payload: str) -> bool:
        """True if `payload` has the value of the newest reading queued (lock held).

        The daemon publishes only changes, so the same value twice in a row means a
        restart re-accepted a reading whose state save the crash cut short.
        """
        if self._unstored:
            last: str | None = self._unstored[-1]
        else:
            try:
                last = self._outbox.last_put(self.topics.reading)
            except sqlite3.Error:
                return False  # cannot tell: sending twice beats losing one
        key = _reading_key(payload)
        return key is not None and last is not None and _reading_key(last) == key

    def _store_unstored(self) -> None:
        """Move readings held in memory into the outbox, oldest first (lock held)."""
        # While the oldest is being delivered from memory, store nothing: a failed
        # delivery must retry it before anything newer from the outbox.
        while self._unstored and not self._unstored_in_flight:
            try:
                self._outbox.put(self.topics.reading, self._unstored[0], True, self._mqtt.qos)
            except sqlite3.Error as err:
                # A full or failing SD card must not stop readings from being published:
                # they wait in memory (lost only if the daemon stops before delivery).
                if str(err) != self._store_error:
                    log.error(
                        "outbox cannot store readings path=%s error=%s held_in_memory=%d (%s)",
                        self._outbox.path,
                        err,
                        len(self._unstored),
                        storage_hint(err),
                    )
                self._store_error = str(err)
                return
            self._unstored.popleft()
            if self._store_error is not None:
                log.info("outbox stores readings again path=%s", self._outbox.path)
                self._store_error = None

    def publish_rejected(self, payload: str) -> None:
        """Best effort: sent now if connected, else dropped (diagnostics, not data)."""
        self._publish_best_effort(self.topics.rejected, payload)

    def publish_event(self, payload: str) -> None:
        """Best effort, like `publish_rejected`."""
        self._publish_best_effort(self.topics.event, payload)

    @property
    def connected(self) -> bool:
        with self._cond:
            return self._connected

    def flush(self, timeout_s: float) -> bool:
        """Wait until the outbox is empty (every reading acknowledged) or the timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._undelivered() == 0 and not self._unstored, timeout=timeout_s
            )

    # -- paho client and callbacks (paho's network thread) -------------------------

    def _make_client(self) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            # Clean session: durability is the outbox's job, paho re-sends the one
            # message in flight after a reconnect, and subscriptions are renewed in
            # on_connect. A persistent session would only make the broker queue stale
            # Home Assistant status messages for us while we are away.
            clean_session=True,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        # An exception in a callback must not kill paho's network thread (and with it
        # every reconnect): paho logs it and carries on.
        client.suppress_exceptions = True
        paho_log = logging.getLogger(f"{__name__}.paho")
        paho_log.addFilter(_demote_not_connected)
        client.enable_logger(paho_log)
        if self._mqtt.username is not None:
            password = read_password(self._mqtt.password_file) if self._mqtt.password_file else None
            client.username_pw_set(self._mqtt.username, password)
        elif self._mqtt.password_file is not None:
            raise PublishConfigError(
                "mqtt.password_file: set, but mqtt.username is not (MQTT sends no password without"
                " a user name)"
            )
        if self._mqtt.tls is not None:
            _configure_tls(client, self._mqtt.tls)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.message_callback_add(self.topics.ha_status, self._on_ha_status)
        return client

    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            # Refused (bad password, not authorised, ...): not connected. paho closes
            # the socket and retries with back-off, which picks up a fixed broker.
            log.error(
                "mqtt connect refused host=%s port=%d client_id=%s reason=%s%s",
                self._mqtt.host,
                self._mqtt.port,
                self._client_id,
                reason_code,
                _REFUSAL_HINTS.get(reason_code.getName(), " (retrying)"),
            )
            return
        self._connect_failures = 0
        log.info(
            "mqtt connected host=%s port=%d client_id=%s",
            self._mqtt.host,
            self._mqtt.port,
            self._client_id,
        )
        with self._cond:
            if self._stopping:
                # stop() has already decided not to announce "offline"; announcing
                # "online" now would leave a stopped daemon marked available.
                return
            # Subscribing here renews the subscription after every reconnect.
            client.subscribe(self.topics.ha_status, qos=_CONTROL_QOS)
            # Frigate's order: state first, "online" last, so Home Assistant never
            # marks the sensor available before it knows what it is.
            self._publish_discovery(client)
            client.publish(self.topics.status, ONLINE, qos=_CONTROL_QOS, retain=True)
            self._connected = True
            self._connects += 1
            self._cond.notify_all()

    def _on_connect_fail(self, client: paho.Client, userdata: object) -> None:
        # The broker is down or unreachable; paho retries with back-off. One warning
        # per outage, not one per attempt, so a week-long outage does not flood the log.
        self._connect_failures += 1
        level = logging.WARNING if self._connect_failures == 1 else logging.DEBUG
        # paho does not pass the cause; with TLS on, a handshake failure (wrong CA,
        # expired certificate) looks the same as a broker that is down.
        log.log(
            level,
            "mqtt connect failed host=%s port=%d tls=%s attempts=%d (retrying)",
            self._mqtt.host,
            self._mqtt.port,
            self._mqtt.tls is not None,
            self._connect_failures,
        )

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            was_connected = self._connected
            self._connected = False
            self._cond.notify_all()
        if was_connected and not self._stopping:
            log.warning("mqtt disconnected reason=%s (reconnecting)", reason_code)

    def _on_ha_status(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        # A retained "online" is a replay at subscribe time, right after on_connect
        # already sent discovery; only a live one means Home Assistant restarted.
        if msg.payload == ONLINE.encode() and not msg.retain:
            log.info("home assistant online, re-sending discovery topic=%s", msg.topic)
            self._publish_discovery(client)

    def _publish_discovery(self, client: paho.Client) -> None:
        if not self._mqtt.discovery:
            return
        payload = discovery_payload(self._mqtt, self._meter, self.topics, self._version)
        client.publish(self.topics.discovery, payload, qos=_CONTROL_QOS, retain=True)

    def _publish_best_effort(self, topic: str, payload: str) -> None:
        client = self._client
        if client is None or not self.connected:
            log.debug("mqtt offline, dropped best-effort message topic=%s", topic)
            return
        # QoS 0: never queued in paho's memory, so a long outage cannot grow it.
        info = client.publish(topic, payload, qos=0, retain=False)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.debug("mqtt dropped best-effort message topic=%s rc=%s", topic, info.rc)

    def _announce_offline(self, client: paho.Client, timeout_s: float) -> None:
        # A clean disconnect does not trigger the Last Will, so say it ourselves.
        info = client.publish(self.topics.status, OFFLINE, qos=_CONTROL_QOS, retain=True)
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError) as err:
            log.warning("mqtt offline status not sent error=%s", err)
            return
        if not info.is_published():
            log.warning("mqtt offline status not acknowledged timeout_s=%.1f", timeout_s)

    # -- delivery thread -----------------------------------------------------------

    def _deliver_forever(self) -> None:
        backoff_s = _MIN_BACKOFF_S
        while True:
            try:
                message, connects = self._next_message()
                if message is None:
                    return
                if self._deliver(message):
                    _fault_pause(message.id)
                    with self._cond:
                        if message.id == _UNSTORED_ID:
                            self._unstored.popleft()
                            self._unstored_in_flight = False
                        else:
                            self._delivered_through = message.id
                            self._remove_delivered()
                        self._cond.notify_all()  # flush() waits for removals
                    log.debug("reading delivered id=%d topic=%s", message.id, message.topic)
                else:
                    with self._cond:
                        self._unstored_in_flight = False
                    self._wait_for_reconnect(connects)
                backoff_s = _MIN_BACKOFF_S
            except Exception:
                # An outbox I/O error, say: the readings stay in the file, so keep the
                # thread alive and try again later instead of never delivering again.
                log.exception("delivery failed, retrying retry_in_s=%.0f", backoff_s)
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping, timeout=backoff_s)
                backoff_s = min(backoff_s * 2, _MAX_BACKOFF_S)

    def _next_message(self) -> tuple[Message | None, int]:
        """Block until connected with something to send; (None, _) means stop."""
        with self._cond:
            while True:
                if self._stopping:
                    return None, self._connects
                if self._connected:
                    message = self._outbox.oldest(after=self._delivered_through)
                    if message is not None:
                        return message, self._connects
                    if self._unstored:
                        self._unstored_in_flight = True
                        head = self._unstored[0]
                        reading = Message(
                            _UNSTORED_ID, self.topics.reading, head, True, self._mqtt.qos
                        )
                        return reading, self._connects
                self._cond.wait()

    def _remove_delivered(self) -> None:
        """Delete what the broker acknowledged (lock held); a refusal is logged once."""
        try:
            self._outbox.remove_through(self._delivered_through)
        except sqlite3.Error as err:
            if str(err) != self._remove_error:
                log.error(
                    "outbox cannot remove delivered readings path=%s error=%s (delivery goes"
                    " on; after a restart they are sent once more; %s)",
                    self._outbox.path,
                    err,
                    storage_hint(err),
                )
            self._remove_error = str(err)
            return
        if self._remove_error is not None:
            log.info("outbox removes delivered readings again path=%s", self._outbox.path)
            self._remove_error = None

    def _undelivered(self) -> int:
        """Readings not yet acknowledged, in the outbox (lock held)."""
        if self._remove_error is None:
            return len(self._outbox)
        try:
            return self._outbox.count_after(self._delivered_through)
        except sqlite3.Error:
            return len(self._outbox)  # cannot tell: count the undeleted as owed

    def _wait_for_reconnect(self, connects: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or self._connects != connects)

    def _deliver(self, message: Message) -> bool:
        """Send one message and wait for its acknowledgement; False to retry later.

        A message sent while connected stays in paho's memory until acknowledged and
        is re-sent by paho after a reconnect, so we keep waiting on it rather than
        publishing a second copy. Only a publish that did not get onto the wire
        (the connection dropped just before) returns False; paho still holds that
        copy and sends it after the reconnect, ahead of our retry: one duplicate.
        """
        client = self._client
        assert client is not None  # the delivery thread starts after the client
        info = client.publish(
            message.topic, message.payload, qos=message.qos, retain=message.retain
        )
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            log.debug("reading not sent id=%d (disconnected, waiting for reconnect)", message.id)
            return False
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.error(
                "reading not sent id=%d rc=%s (retrying after reconnect)", message.id, info.rc
            )
            return False
        while True:
            try:
                info.wait_for_publish(_WAIT_SLICE_S)
            except (RuntimeError, ValueError) as err:
                # QoS 0 only: the connection dropped before the packet was written.
                log.debug("reading not sent id=%d error=%s", message.id, err)
                return False
            if info.is_published():
                return True
            with self._cond:
                if self._stopping:
                    return False


def storage_hint(err: sqlite3.Error) -> str:
    """What to do about an outbox write the state directory's disk refused."""
    text = str(err).lower()
    if "full" in text:
        return "free space on the state directory's disk"
    if "readonly" in text or "read-only" in text:
        return (
            "the state directory is read-only: an SD card with errors is remounted"
            " read-only, check dmesg and mount"
        )
    return "the state directory's disk failed a write: check dmesg and the SD card"


def _reading_key(payload: str) -> tuple[object, object] | None:
    """(value, raw) of a reading payload; None for anything else."""
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(body, dict) or "value" not in body or "raw" not in body:
        return None
    return body["value"], body["raw"]


def _fault_pause(message_id: int) -> None:
    try:
        delay_s = float(os.environ.get(FAULT_DELAY_DELIVERY_ENV) or 0)
    except ValueError:
        return
    if delay_s > 0:
        log.warning(
            "fault injection: delivered id=%d, pausing delay_s=%g before removing it from"
            " the outbox",
            message_id,
            delay_s,
        )
        time.sleep(delay_s)


def _configure_tls(client: paho.Client, tls: TlsConfig) -> None:
    """TLS as configured; `insecure` skips the host name check, never the CA check."""
    try:
        client.tls_set(
            ca_certs=tls.ca_file,
            certfile=tls.cert_file,
            keyfile=tls.key_file,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    except (OSError, ssl.SSLError, ValueError) as err:
        raise PublishConfigError(f"mqtt.tls: cannot load the TLS files: {err}") from err
    if tls.insecure:
        client.tls_insecure_set(True)
