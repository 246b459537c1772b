"""A burst short of a majority takes a second burst: the daemon's cycle with the real
classifier on rendered frames, the second burst from a callable as the camera gives it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edgemeter import simulate
from edgemeter.config import Config, parse_config
from edgemeter.daemon import Daemon
from edgemeter.notify import Notifier
from edgemeter.ocr import make_engine
from edgemeter.source import Frame, SourceError, open_source
from edgemeter.state import StateStore

T0 = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)


def config_for(frame: simulate.SimFrame, tmp_path: Path) -> Config:
    x, y, width, height = frame.window
    return parse_config(
        {
            "meter": {"id": "burst", "digits": 6},
            "camera": {"source": "simulated"},
            "window": {"x": x, "y": y, "width": width, "height": height},
            "state": {"path": str(tmp_path / "state.json")},
            "mqtt": {"enabled": False},
            "history": {"enabled": False},
        },
        "test",
    )


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Daemon, Frame, Frame]:
    rendered = simulate.render(
        simulate.default_style(), 483920.0, simulate.Conditions(), np.random.default_rng(3)
    )
    config = config_for(rendered, tmp_path)
    source = open_source(config.camera, 6)
    daemon = Daemon(
        config,
        make_engine(config.ocr),
        source,
        None,
        StateStore(tmp_path / "state.json"),
        Notifier(""),
    )
    good = Frame(rendered.image, T0, "test", truth=rendered.truth)
    dark = Frame(np.zeros_like(rendered.image), T0 + timedelta(seconds=1), "test")
    return daemon, good, dark


def test_one_sure_frame_of_three_takes_a_second_burst_and_is_read(
    setup: tuple[Daemon, Frame, Frame],
) -> None:
    daemon, good, dark = setup
    asked: list[int] = []

    def more(count: int) -> list[Frame]:
        asked.append(count)
        return [good] * count

    cycle = daemon.cycle([good, dark, dark], more=more)

    assert asked == [3]
    assert cycle.verdict.accepted and cycle.verdict.value == 483920


def test_without_a_second_burst_one_sure_frame_of_three_is_no_reading(
    setup: tuple[Daemon, Frame, Frame],
) -> None:
    daemon, good, dark = setup

    cycle = daemon.cycle([good, dark, dark])

    assert not cycle.verdict.accepted
    assert "short of a majority" in str(cycle.reading)


def test_a_burst_already_settled_or_unread_asks_for_nothing_more(
    setup: tuple[Daemon, Frame, Frame],
) -> None:
    daemon, good, dark = setup

    def more(count: int) -> list[Frame]:
        raise AssertionError("a second burst was asked for")

    assert daemon.cycle([good, good, dark], more=more).verdict.accepted
    assert not daemon.cycle([dark, dark, dark], more=more).verdict.accepted


def test_a_camera_that_fails_on_the_second_burst_leaves_the_first_vote(
    setup: tuple[Daemon, Frame, Frame],
) -> None:
    daemon, good, dark = setup

    def more(count: int) -> list[Frame]:
        raise SourceError("camera gone")

    cycle = daemon.cycle([good, dark, dark], more=more)

    assert not cycle.verdict.accepted
    assert "short of a majority" in str(cycle.reading)
