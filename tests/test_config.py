"""The config loader: valid files load, every bad file gives clear one-line problems."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from edgemeter.config import (
    Config,
    ConfigError,
    as_dict,
    default_config,
    load_config,
    parse_config,
    parse_text,
)

ROOT = Path(__file__).resolve().parent.parent

MINIMAL = """\
meter:
  digits: 6
camera:
  source: files
  path: /tmp/frames/*.jpg
window: {x: 10, y: 20, width: 300, height: 80}
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_text(text)
    return info.value.problems


def test_minimal_file_is_valid_and_fills_defaults() -> None:
    config = parse_text(MINIMAL)
    assert config.meter.digits == 6
    assert config.meter.id == "meter"
    assert config.camera.path == "/tmp/frames/*.jpg"
    assert (config.window.x, config.window.y, config.window.width, config.window.height) == (
        10,
        20,
        300,
        80,
    )
    assert config.mqtt.topic_prefix == "edgemeter"
    assert config.mqtt.qos == 1
    assert config.state.path == "/var/lib/edgemeter/state.json"


def test_example_config_yaml_is_valid() -> None:
    config = load_config(ROOT / "config.yaml")
    assert config.camera.source == "picamera2"


def test_embedded_default_uses_the_simulated_odometer_and_a_local_broker() -> None:
    config = default_config()
    assert config.camera.source == "simulated"
    assert config.mqtt.host == "127.0.0.1"


def test_negative_width_is_named_with_value_and_expectation() -> None:
    bad = MINIMAL.replace("width: 300", "width: -3")
    assert problems_of(bad) == ["window.width: must be a positive integer, got -3"]


def test_wrong_types_are_each_reported() -> None:
    bad = MINIMAL.replace("digits: 6", "digits: six").replace("x: 10", "x: 1.5")
    assert sorted(problems_of(bad)) == [
        "meter.digits: must be an integer from 1 to 12, got 'six'",
        "window.x: must be an integer >= 0, got 1.5",
    ]


def test_unknown_key_is_an_error_naming_the_known_keys() -> None:
    bad = MINIMAL.replace("  digits: 6", "  digits: 6\n  digts: 7")
    (problem,) = problems_of(bad)
    assert problem.startswith("meter.digts: unknown key (known keys here: id, digits, unit,")


def test_missing_window_is_an_error() -> None:
    bad = MINIMAL.split("window:", maxsplit=1)[0]
    assert problems_of(bad) == [
        "window: is required (window.x, window.y, window.width, window.height in pixels)"
    ]


def test_missing_window_field_is_an_error() -> None:
    bad = MINIMAL.replace(
        "window: {x: 10, y: 20, width: 300, height: 80}", "window: {x: 10, y: 20}"
    )
    assert sorted(problems_of(bad)) == [
        "window.height: is required (a positive integer)",
        "window.width: is required (a positive integer)",
    ]


def test_bad_yaml_syntax_names_line_and_column() -> None:
    (problem,) = problems_of("meter:\n  digits: [6\nwindow: {x: 1}\n")
    assert problem.startswith("line 3, column 7: YAML syntax error")


def test_bad_choice_lists_the_choices() -> None:
    bad = MINIMAL.replace("source: files", "source: webcam")
    assert problems_of(bad) == [
        "camera.source: must be one of picamera2, opencv, files, simulated, got 'webcam'"
    ]


def test_files_source_needs_a_path() -> None:
    bad = MINIMAL.replace("  path: /tmp/frames/*.jpg\n", "")
    assert problems_of(bad) == [
        "camera.path: is required when camera.source is files (a glob such as /data/*.jpg)"
    ]


def test_frozen_camera_limit_defaults_below_the_watchdog_limit() -> None:
    config = parse_text(MINIMAL.replace("source: files", "source: opencv"))
    assert config.camera.frozen_after_s == 60
    assert config.camera.frozen_after_s < config.watchdog.frame_timeout_s


def test_frozen_camera_limit_must_be_positive() -> None:
    bad = MINIMAL.replace("source: files", "source: opencv\n  frozen_after_s: 0")
    assert problems_of(bad) == ["camera.frozen_after_s: must be a number > 0, got 0"]


def test_frozen_camera_limit_must_be_below_the_watchdog_limit() -> None:
    bad = (
        MINIMAL.replace("source: files", "source: opencv\n  frozen_after_s: 30")
        + "watchdog: {frame_timeout_s: 30}\n"
    )
    assert problems_of(bad) == [
        "camera.frozen_after_s: must be less than watchdog.frame_timeout_s (30), got 30:"
        " otherwise systemd restarts the service before a frozen camera is reported"
    ]


def test_frozen_camera_limit_does_not_bind_a_replay_of_files() -> None:
    # A replay may repeat a picture, so it is never checked for a frozen camera.
    text = MINIMAL.replace("source: files", "source: files\n  frozen_after_s: 500")
    assert parse_text(text).camera.frozen_after_s == 500


def test_corners_must_be_four_points() -> None:
    bad = MINIMAL.replace("height: 80}", "height: 80, corners: [[0, 0], [10, 0]]}")
    (problem,) = problems_of(bad)
    assert problem.startswith("window.corners: must be four [x, y] points")


def test_corners_load_as_tuples() -> None:
    good = MINIMAL.replace(
        "height: 80}", "height: 80, corners: [[10, 20], [310, 22], [309, 100], [11, 98]]}"
    )
    assert parse_text(good).window.corners == ((10, 20), (310, 22), (309, 100), (11, 98))


def test_meter_id_must_be_topic_safe() -> None:
    bad = MINIMAL.replace("digits: 6", "digits: 6\n  id: 'my meter/1'")
    (problem,) = problems_of(bad)
    assert problem.startswith("meter.id: must be letters, digits, '_' or '-' only")


def test_top_level_must_be_a_mapping() -> None:
    assert problems_of("- a\n- b\n") == [
        "the top level: must be a mapping of keys to values, got [a, b]"
    ]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert "file not found" in info.value.problems[0]


def test_effective_config_round_trips() -> None:
    config = parse_text(MINIMAL)
    assert parse_config(as_dict(config)) == config


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgemeter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MINIMAL.replace("width: 300", "width: -3"),
            "window.width: must be a positive integer, got -3",
        ),
        (
            MINIMAL.replace("digits: 6", "digits: [6]"),
            "meter.digits: must be an integer from 1 to 12",
        ),
        (MINIMAL + "mqtt:\n  prot: 1883\n", "mqtt.prot: unknown key"),
        (MINIMAL.split("window:", maxsplit=1)[0], "window: is required"),
        ("meter: {digits: 6\n", "YAML syntax error"),
    ],
    ids=["negative-size", "wrong-type", "unknown-key", "missing-window", "bad-yaml"],
)
def test_check_config_reports_bad_file_with_exit_2_and_no_traceback(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    result = run_cli("check-config", str(path))
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_check_config_prints_effective_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL)
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    effective = yaml.safe_load(result.stdout)
    assert effective["mqtt"]["discovery_prefix"] == "homeassistant"
    assert effective["window"]["width"] == 300


def test_run_with_bad_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL.replace("height: 80", "height: 0"))
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 2
    assert "window.height: must be a positive integer, got 0" in result.stderr


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
known_sections = st.sampled_from(
    ["meter", "camera", "window", "ocr", "plausibility", "state", "mqtt", "log", "watchdog"]
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        known_sections,
        st.dictionaries(
            st.sampled_from(
                ["x", "y", "width", "height", "digits", "source", "path", "port", "tls"]
            ),
            yaml_values,
            max_size=5,
        )
        | yaml_values,
        max_size=6,
    )
)
def test_loader_gives_a_config_or_a_config_error_never_anything_else(data: object) -> None:
    try:
        result = parse_config(data)
    except ConfigError as err:
        assert err.problems
        assert all(isinstance(p, str) and p for p in err.problems)
    else:
        assert isinstance(result, Config)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_loader_never_raises_on_arbitrary_text(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_text(text)
