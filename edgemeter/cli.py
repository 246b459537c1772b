"""The `edgemeter` command: read, check-config, run.

Exit status: 0 success, 1 a runtime failure (an image that could not be opened, a
camera that stays away), 2 a configuration error (systemd does not restart on it:
restarting cannot fix a typo), 3 a missing engine (Tesseract not installed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import yaml

from edgemeter import __version__
from edgemeter.config import Config, ConfigError, as_dict, default_config, load_config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_ENGINE = 3

log = logging.getLogger("edgemeter")


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="config file (default: the embedded default)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgemeter",
        description="Read a mechanical counter with a camera and publish it over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"edgemeter {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at debug level (overrides log.level)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="run the daemon: read, judge, publish, persist",
        description="Run the daemon. Without --config it runs the embedded default:"
        " the simulated odometer and an MQTT broker on 127.0.0.1:1883.",
    )
    _config_option(run)

    read = commands.add_parser(
        "read",
        help="read digits from image files, one JSON line per image",
        description="OCR each image with the config's window and OCR settings (no plausibility,"
        " no MQTT); print one JSON object per image.",
    )
    _config_option(read)
    read.add_argument("images", nargs="+", metavar="IMAGE")

    snapshot = commands.add_parser(
        "snapshot",
        help="grab one frame and draw the window, the digit cells and the reading on it",
        description="Write a PNG of one frame with the window and each digit cell outlined,"
        " the reading beside it, and the digits as the OCR sees them: how to tune window.*.",
    )
    _config_option(snapshot)
    snapshot.add_argument("--out", type=Path, default=Path("snapshot.png"), help="PNG to write")

    locate = commands.add_parser(
        "locate",
        help="find the counter in a frame and propose window.* values",
        description="Grab one frame, look for a row of meter.digits digits, and print"
        " window.* values to paste into the config (the config may have no window yet).",
    )
    _config_option(locate)
    locate.add_argument("--out", type=Path, default=Path("locate.png"), help="PNG to write")

    history = commands.add_parser(
        "history",
        help="print or export the accepted readings, rejections and events",
        description="Print the history kept under the state directory (run it as the"
        " daemon's user, e.g. sudo -u edgemeter).",
    )
    _config_option(history)
    history.add_argument(
        "--since",
        default="7d",
        help="ISO date/time (2026-11-01, 2026-11-01T12:00) or age (7d, 12h, 30m), or 'all'"
        " (default: 7d)",
    )
    history.add_argument("--csv", action="store_true", help="CSV with a header row")

    check = commands.add_parser(
        "check-config", help="validate a config file and print the effective config"
    )
    check.add_argument("config", type=Path, metavar="FILE")
    return parser


def setup_logging(level: str, verbose: bool = False) -> None:
    """One line per event on stderr; journald adds the time and the unit name."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else getattr(logging, level.upper()),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def _load(path: Path | None, require_window: bool = True) -> Config:
    return default_config() if path is None else load_config(path, require_window)


def _report_config_error(err: ConfigError) -> int:
    print(f"edgemeter: invalid configuration in {err.source}:", file=sys.stderr)
    for problem in err.problems:
        print(f"  {problem}", file=sys.stderr)
    return EXIT_CONFIG


def cmd_check_config(path: Path) -> int:
    config = load_config(path)
    print(f"# {path}: valid. Effective configuration, defaults filled in:")
    print(yaml.safe_dump(as_dict(config), sort_keys=False, allow_unicode=True), end="")
    return EXIT_OK


def cmd_read(config: Config, images: Sequence[str]) -> int:
    # Imported here so `check-config` and `--help` stay fast and need no OpenCV.
    from edgemeter.ocr import NoReading, OcrUnavailable, make_engine  # noqa: PLC0415
    from edgemeter.source import ImageError, load_image  # noqa: PLC0415
    from edgemeter.window import DigitWindow, WindowError, crop  # noqa: PLC0415

    try:
        engine = make_engine(config.ocr, config.plausibility.min_confidence)
    except OcrUnavailable as err:
        print(f"edgemeter: {err}", file=sys.stderr)
        return EXIT_ENGINE
    window = DigitWindow.from_config(config.window)
    status = EXIT_OK
    for image_path in images:
        line: dict[str, object] = {"image": image_path, "reading": None, "confidence": 0.0}
        try:
            image = load_image(image_path)
        except ImageError as err:
            status = EXIT_FAILURE
            line["reason"] = str(err)
        else:
            try:
                result = engine.read(crop(image, window), config.meter.digits)
            except WindowError as err:
                line["reason"] = str(err)
            else:
                if isinstance(result, NoReading):
                    line["reason"] = result.reason
                else:
                    line["reading"] = result.digits
                    line["confidence"] = round(result.confidence, 3)
                    line["reason"] = None
        print(json.dumps(line), flush=True)
    return status


def cmd_history(config: Config, since_text: str, as_csv: bool) -> int:
    from edgemeter.daemon import state_dir  # noqa: PLC0415
    from edgemeter.history import History, HistoryError, format_entries, parse_since  # noqa: PLC0415

    try:
        since = None if since_text == "all" else parse_since(since_text, datetime.now(UTC))
    except ValueError as err:
        print(f"edgemeter: --since: {err}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        history = History(state_dir(config), config.history, read_only=True)
        try:
            entries = history.entries(since=since)
        finally:
            history.close()
    except HistoryError as err:
        print(f"edgemeter: {err}", file=sys.stderr)
        return EXIT_FAILURE
    sys.stdout.write(format_entries(entries, csv=as_csv))
    return EXIT_OK


def cmd_run(config: Config) -> int:
    from edgemeter.daemon import run  # noqa: PLC0415

    return run(config)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging("info", args.verbose)
    try:
        if args.command == "check-config":
            return cmd_check_config(args.config)
        config = _load(args.config, require_window=args.command != "locate")
        setup_logging(config.log.level, args.verbose)
        if args.command == "read":
            return cmd_read(config, args.images)
        if args.command == "snapshot":
            from edgemeter.snapshot import run_snapshot  # noqa: PLC0415

            return run_snapshot(config, args.out)
        if args.command == "locate":
            from edgemeter.locate import run_locate  # noqa: PLC0415

            return run_locate(config, args.out)
        if args.command == "history":
            return cmd_history(config, args.since, args.csv)
        return cmd_run(config)
    except ConfigError as err:
        return _report_config_error(err)
    except KeyboardInterrupt:
        return 130
