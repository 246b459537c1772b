"""The configuration: a typed, validated object loaded once at start.

Every key, its default and its bounds are written once, in the dataclasses below.
Loading checks the whole file and reports every problem at once, one line each,
naming the key path, the bad value and what is expected. Unknown keys are errors:
a misspelt key that is silently ignored is the classic "my setting does nothing".
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(Exception):
    """The configuration is unusable; `problems` holds one message per problem."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__("\n".join(problems))


def _num(default: Any, **bounds: Any) -> Any:
    """A field with bounds that the loader enforces (`min`, `max`, `gt`, `required`)."""
    return field(default=default, metadata=bounds)


@dataclass(frozen=True)
class MeterConfig:
    id: str = field(default="meter", metadata={"pattern": "id"})
    digits: int = _num(6, min=1, max=12)
    unit: str = "km"
    decimals: int = _num(0, min=0, max=6)
    name: str | None = None
    device_class: Literal["distance", "water", "gas", "energy"] | None = None


@dataclass(frozen=True)
class SimulatedConfig:
    seed: int = _num(1, min=0)
    start: float = _num(12345.0, min=0)
    per_frame: float = _num(0.3, min=0)
    roll_fraction: float = _num(0.25, min=0, max=1)
    hard: bool = False


@dataclass(frozen=True)
class CameraConfig:
    source: Literal["picamera2", "opencv", "files", "simulated"] = "simulated"
    path: str | None = None
    loop: bool = False
    device: int | str = 0
    interval_s: float = _num(5.0, min=0)
    width: int = _num(2304, min=16)
    height: int = _num(1296, min=16)
    exposure_us: int | None = _num(None, min=1)
    analogue_gain: float | None = _num(None, min=1)
    lens_position: float | None = _num(None, min=0)
    settle_s: float = _num(1.0, min=0)
    timeout_s: float = _num(5.0, gt=0)
    frozen_after_s: float = _num(60.0, gt=0)
    simulated: SimulatedConfig = field(default_factory=SimulatedConfig)


@dataclass(frozen=True)
class WindowConfig:
    x: int = _num(0, min=0, required=True)
    y: int = _num(0, min=0, required=True)
    width: int = _num(0, min=1, required=True)
    height: int = _num(0, min=1, required=True)
    rotation: float = _num(0.0, min=-180, max=180)
    corners: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True)
class OcrConfig:
    # The classifier reads more and errs less than Tesseract on every benchmark set
    # (benchmarks/RESULTS.md) in under a quarter of the time. With Tesseract settling the
    # drums it cannot (edgemeter/tiebreak.py) it reads more again, with no more wrong,
    # for Tesseract's time on the frames the classifier withholds only.
    engine: Literal["auto", "tesserocr", "pytesseract", "classifier", "classifier+tesseract"] = (
        "classifier+tesseract"
    )
    tessdata: str | None = None
    timeout_s: float = _num(10.0, gt=0)


@dataclass(frozen=True)
class PlausibilityConfig:
    min_confidence: float = _num(0.6, min=0, max=1)
    max_rate_per_hour: float | None = _num(None, gt=0)
    max_jump: float | None = _num(None, gt=0)
    confirm_cycles: int = _num(3, min=1, max=1000)
    rebaseline_cycles: int = _num(10, min=2, max=10000)
    wrap: bool = True
    burst: int = _num(3, min=1, max=15)


@dataclass(frozen=True)
class StateConfig:
    path: str = "/var/lib/edgemeter/state.json"


@dataclass(frozen=True)
class TlsConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False


@dataclass(frozen=True)
class MqttConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = _num(1883, min=1, max=65535)
    username: str | None = None
    password_file: str | None = None
    tls: TlsConfig | None = None
    client_id: str | None = None
    topic_prefix: str = field(default="edgemeter", metadata={"pattern": "topic"})
    qos: int = _num(1, min=0, max=2)
    discovery: bool = True
    discovery_prefix: str = field(default="homeassistant", metadata={"pattern": "topic"})
    keepalive_s: int = _num(60, min=5, max=65535)
    outbox_max: int = _num(100000, min=10)


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = False
    bind: str = "127.0.0.1"
    port: int = _num(8080, min=1, max=65535)
    username: str | None = None
    password_file: str | None = None


@dataclass(frozen=True)
class HistoryConfig:
    enabled: bool = True
    max_age_days: float = _num(365.0, gt=0)
    max_rows: int = _num(200000, min=100)
    rejected_frames: int = _num(20, min=0, max=1000)


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class WatchdogConfig:
    frame_timeout_s: float = _num(120.0, gt=0)


@dataclass(frozen=True)
class Config:
    meter: MeterConfig = field(default_factory=MeterConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    ocr: OcrConfig = field(default_factory=OcrConfig)
    plausibility: PlausibilityConfig = field(default_factory=PlausibilityConfig)
    state: StateConfig = field(default_factory=StateConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    log: LogConfig = field(default_factory=LogConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)


_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_TOPIC_RE = re.compile(r"^[^#+\s]+$")
_PATTERNS = {
    "id": (_ID_RE, "letters, digits, '_' or '-' only (it is used in MQTT topics and entity ids)"),
    "topic": (_TOPIC_RE, "an MQTT topic without wildcards (+, #) or spaces"),
}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(float(value))  # type: ignore[arg-type]


def _bounds_text(kind: str, meta: Mapping[str, Any]) -> str:
    lo, hi, gt = meta.get("min"), meta.get("max"), meta.get("gt")
    if kind == "integer" and lo == 1 and hi is None:
        return "a positive integer"
    if lo is not None and hi is not None:
        return (
            f"an {kind} from {lo} to {hi}" if kind == "integer" else f"a {kind} from {lo} to {hi}"
        )
    article = "an" if kind == "integer" else "a"
    if lo is not None:
        return f"{article} {kind} >= {lo}"
    if gt is not None:
        return f"{article} {kind} > {gt}"
    return f"{article} {kind}"


def _in_bounds(value: float, meta: Mapping[str, Any]) -> bool:
    lo, hi, gt = meta.get("min"), meta.get("max"), meta.get("gt")
    return not (
        (lo is not None and value < lo)
        or (hi is not None and value > hi)
        or (gt is not None and value <= gt)
    )


def _show(value: object) -> str:
    text = repr(value) if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True)
    text = text.strip().removesuffix("...").strip()
    return text if len(text) <= 60 else text[:57] + "..."


def _convert(
    value: object, hint: Any, meta: Mapping[str, Any], path: str, problems: list[str]
) -> Any:
    """Check `value` against the field type `hint`; append a message and return None if wrong."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _convert(value, options[0], meta, path, problems)
        # int | str (camera.device): an index or a URL/path
        if _is_int(value) or isinstance(value, str):
            return value
        problems.append(f"{path}: must be a device index or a URL/path, got {_show(value)}")
        return None
    if origin is Literal:
        if value in args:
            return value
        choices = ", ".join(str(a) for a in args)
        problems.append(f"{path}: must be one of {choices}, got {_show(value)}")
        return None
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path, problems)  # type: ignore[arg-type]
    if hint is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{path}: must be true or false, got {_show(value)}")
        return None
    if hint is int:
        if _is_int(value) and _in_bounds(value, meta):  # type: ignore[arg-type]
            return value
        problems.append(f"{path}: must be {_bounds_text('integer', meta)}, got {_show(value)}")
        return None
    if hint is float:
        if _is_number(value) and _in_bounds(float(value), meta):  # type: ignore[arg-type]
            return float(value)  # type: ignore[arg-type]
        problems.append(f"{path}: must be {_bounds_text('number', meta)}, got {_show(value)}")
        return None
    if hint is str:
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{path}: must be a non-empty string, got {_show(value)}")
            return None
        pattern = meta.get("pattern")
        if pattern is not None and not _PATTERNS[pattern][0].match(value):
            problems.append(f"{path}: must be {_PATTERNS[pattern][1]}, got {_show(value)}")
            return None
        return value
    if origin is tuple:  # window.corners: four [x, y] points
        return _corners(value, path, problems)
    raise TypeError(f"config schema has an unsupported type at {path}: {hint!r}")


def _corners(
    value: object, path: str, problems: list[str]
) -> tuple[tuple[float, float], ...] | None:
    expected = "four [x, y] points (top-left, top-right, bottom-right, bottom-left)"
    if not isinstance(value, list) or len(value) != 4:
        problems.append(f"{path}: must be {expected}, got {_show(value)}")
        return None
    points: list[tuple[float, float]] = []
    for point in value:
        if not (isinstance(point, list) and len(point) == 2 and all(_is_number(c) for c in point)):
            problems.append(f"{path}: must be {expected}, got {_show(value)}")
            return None
        if any(float(c) < 0 for c in point):
            problems.append(f"{path}: corner coordinates must be >= 0, got {_show(point)}")
            return None
        points.append((float(point[0]), float(point[1])))
    return tuple(points)


def _build(cls: type[Any], data: object, path: str, problems: list[str]) -> Any:
    where = path or "the top level"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        problems.append(f"{where}: must be a mapping of keys to values, got {_show(data)}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            known = ", ".join(fields)
            problems.append(f"{_join(path, str(key))}: unknown key (known keys here: {known})")
    values: dict[str, Any] = {}
    for name, fld in fields.items():
        key_path = _join(path, name)
        if name not in data:
            if fld.metadata.get("required"):
                problems.append(
                    f"{key_path}: is required ({_bounds_text('integer', fld.metadata)})"
                )
            continue
        converted = _convert(data[name], hints[name], fld.metadata, key_path, problems)
        if converted is not None or data[name] is None:
            values[name] = converted
    try:
        return cls(**values)
    except TypeError:
        return None  # a None placed into a non-optional field: already reported above


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _cross_checks(config: Config) -> list[str]:
    """Rules that involve more than one key."""
    problems = []
    camera = config.camera
    if camera.source == "files" and not camera.path:
        problems.append(
            "camera.path: is required when camera.source is files (a glob such as /data/*.jpg)"
        )
    timeout = config.watchdog.frame_timeout_s
    if camera.source != "files" and camera.frozen_after_s >= timeout:
        problems.append(
            f"camera.frozen_after_s: must be less than watchdog.frame_timeout_s ({timeout:g}),"
            f" got {camera.frozen_after_s:g}: otherwise systemd restarts the service before"
            " a frozen camera is reported"
        )
    mqtt = config.mqtt
    if mqtt.password_file and not mqtt.username:
        problems.append("mqtt.username: is required when mqtt.password_file is set")
    http = config.http
    if http.password_file and not http.username:
        problems.append("http.username: is required when http.password_file is set")
    if http.enabled and not _is_loopback(http.bind) and not (http.username and http.password_file):
        problems.append(
            f"http.bind: {http.bind!r} reaches beyond this machine, so the page needs a login:"
            " set http.username and http.password_file (or bind 127.0.0.1)"
        )
    if mqtt.tls and bool(mqtt.tls.cert_file) != bool(mqtt.tls.key_file):
        problems.append(
            "mqtt.tls: cert_file and key_file must be given together (client certificate)"
        )
    return problems


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def parse_config(data: object, source: str = "config", require_window: bool = True) -> Config:
    """Validate already-parsed YAML; raise ConfigError listing every problem.

    `require_window=False` is for `edgemeter locate`, which finds the window for a
    config that does not have one yet.
    """
    problems: list[str] = []
    if data is None:
        data = {}
    if not require_window and isinstance(data, Mapping) and "window" not in data:
        data = {**data, "window": {"x": 0, "y": 0, "width": 1, "height": 1}}
    if isinstance(data, Mapping) and "window" not in data:
        problems.append(
            "window: is required (window.x, window.y, window.width, window.height in pixels)"
        )
    config = _build(Config, data, "", problems)
    if config is not None and not problems:
        problems.extend(_cross_checks(config))
    if problems or config is None:
        raise ConfigError(problems or ["the configuration is empty"], source)
    return typing.cast(Config, config)


def parse_text(text: str, source: str = "config", require_window: bool = True) -> Config:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError([f"{where}YAML syntax error: {problem}"], source) from err
    return parse_config(data, source, require_window)


def load_config(path: str | os.PathLike[str], require_window: bool = True) -> Config:
    """Read and validate a config file; every failure is a ConfigError naming the file."""
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigError(
            ["file not found (create it from the example config.yaml)"], source
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([f"cannot read the file: {err}"], source) from err
    return parse_text(text, source, require_window)


class SecretError(Exception):
    """A secret file cannot be used; the message names the key and the file, never its content."""


def read_secret(path: str, key: str) -> str:
    """A password kept in its own file (never in the YAML), without the trailing newline."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise SecretError(f"{key}: cannot read {path}: {reason}") from err
    except UnicodeDecodeError as err:
        raise SecretError(f"{key}: {path} is not UTF-8 text") from err
    secret = text.rstrip("\r\n")
    if not secret:
        raise SecretError(f"{key}: {path} is empty")
    return secret


def default_config() -> Config:
    """The embedded default: the simulated odometer and a broker on localhost."""
    text = resources.files("edgemeter").joinpath("default.yaml").read_text(encoding="utf-8")
    return parse_text(text, "embedded default")


def as_dict(config: Config) -> dict[str, Any]:
    """The effective configuration, every default filled in, for `check-config`."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    raw = dataclasses.asdict(config)
    return typing.cast(dict[str, Any], _map(raw, plain))


def _map(value: Any, fn: Any) -> Any:
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    return fn(value)
