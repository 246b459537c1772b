"""Shared fixtures: a real Mosquitto on a free loopback port.

`broker` is a started plain broker (anonymous access, persistence on), stopped after
the test. `make_broker` builds others (users, TLS, not yet started); every broker it
made is stopped after the test. Both skip the test when Mosquitto is not installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from broker import Broker, mosquitto_binary


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """make_broker(start=True, users=None, tls=False, require_client_cert=False) -> Broker."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto)")
    brokers: list[Broker] = []

    def make(*, start: bool = True, **options: Any) -> Broker:
        broker = Broker(tmp_path / f"broker{len(brokers)}", **options)
        brokers.append(broker)
        if start:
            broker.start()
        return broker

    try:
        yield make
    finally:
        for broker in brokers:
            broker.stop()


@pytest.fixture
def broker(make_broker: Callable[..., Broker]) -> Broker:
    """A started Mosquitto on 127.0.0.1:<free port>, stopped after the test."""
    return make_broker()
