"""Accuracy and speed of the reading path, per engine, against the naive baseline.

    python -m benchmarks [--cycles 30] [--real 0] [--sections hard,seen,real,sweep,speed,memory]

Prints Markdown tables (progress goes to stderr); nothing here is a test. Sections:

- hard:   the hard set (benchmarks/hardset.py): 12 simulated installations in
          typefaces nothing was tuned or trained on, each a stream of `--cycles`
          cycles of a burst of frames. Single-frame score per installation and path,
          then the stream score: the daemon's own cycle (burst vote + judge with the
          default rules) replayed over each installation.
- seen:   the same installations in typefaces used for tuning and training.
- real:   meterdigits `test` split as one-digit windows (benchmarks/realset.py).
- sweep:  read and wrong against the confidence gate, hard set and real 0-9.
- speed:  whole path per frame (window, preprocessing, OCR, verdict), all paths taking
          turns on the same frames; ratios against the baseline; a Raspberry Pi 4
          estimate. Run it when the machine is quiet (the load is printed).
- memory: a real daemon process per engine on a files replay into a real Mosquitto:
          peak RSS and CPU per reading.
- cells:  (not run by default) the classifier on the hard set's drums where the engine
          finds them and where the renderer put them: which frames the cell finder
          loses and which the network does (benchmarks/cells.py). With
          `--without glare,blur,...` it does so with those imaging conditions taken
          from every frame: what each costs.

Scoring rules: benchmarks/scoring.py. The gate is the daemon's default
`plausibility.min_confidence`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import subprocess
import sys
import typing
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import cells, hardset, realset, speed
from benchmarks.scoring import BASELINE, GATE, SWEEP_GATES, Outcome, Tally, baseline_read
from benchmarks.stream import StreamScore, replay
from edgemeter.classify import ClassifierEngine
from edgemeter.config import OcrConfig, PlausibilityConfig
from edgemeter.daemon import single_threaded
from edgemeter.ocr import OcrEngine, OcrUnavailable, make_engine

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("hard", "seen", "real", "sweep", "speed", "memory")
# Run only when asked for by name.
DIAGNOSTICS = ("cells",)
ENGINES = ("tesserocr", "classifier", "classifier+tesseract")
# A Raspberry Pi 4 (Cortex-A72, 1.5-1.8 GHz) is taken as 3 to 5 times slower per core
# than this machine for this work; no Pi was at hand to measure it.
PI4_SLOWER = (3.0, 5.0)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def say(text: str = "") -> None:
    print(text, flush=True)


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def _uncommitted() -> str:
    """Files of the reading path that differ from the commit (others work in this tree)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "edgemeter"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return ""
    return ", ".join(line[3:] for line in done.stdout.splitlines())


def _model_hash() -> str:
    model = ROOT / "edgemeter" / "models" / "drum_classifier.onnx"
    return hashlib.sha256(model.read_bytes()).hexdigest()[:12] if model.is_file() else "none"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def header(argv: Sequence[str]) -> None:
    say("# edgemeter benchmark")
    say()
    say(f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    command = " ".join(["python -m benchmarks", *argv])
    say(f"- command: `{command}`")
    say(
        f"- machine: {platform.machine()}, {os.cpu_count()} cores ({_cpu_model()}),"
        f" Python {platform.python_version()}, load average at start {_load()}"
    )
    dirty = _uncommitted()
    say(
        f"- commit {_git_commit()}"
        + (f" with uncommitted changes to {dirty}" if dirty else "")
        + f", classifier model sha256 {_model_hash()}"
    )
    say(f"- confidence gate {GATE} (plausibility.min_confidence default)")


# --------------------------------------------------------------------------- sections


def frame_tables(
    title: str, streams: list[hardset.Stream], outcomes: dict[str, dict[str, list[Outcome]]]
) -> None:
    """outcomes: installation -> path -> frame outcomes."""
    paths = list(next(iter(outcomes.values())))
    headers = ["installation", "look", "frames"]
    for path in paths:
        headers += [f"{path} read %", f"{path} wrong %", f"{path} unread %"]
    rows: list[list[object]] = []
    for stream in streams:
        by_path = outcomes[stream.label]
        row: list[object] = [stream.label, stream.installation.look(), len(by_path[paths[0]])]
        for path in paths:
            tally = Tally.of(by_path[path])
            row += [tally.pct(tally.read), tally.pct(tally.wrong), tally.pct(tally.unread)]
        rows.append(row)
    every = {p: [o for s in streams for o in outcomes[s.label][p]] for p in paths}
    total: list[object] = ["all", "", len(every[paths[0]])]
    for path in paths:
        tally = Tally.of(every[path])
        total += [tally.pct(tally.read), tally.pct(tally.wrong), tally.pct(tally.unread)]
    rows.append(total)
    say(f"### {title}: single frame, per installation")
    say()
    say(table(headers, rows))
    say()


def summary_rows(name: str, outcomes: dict[str, list[Outcome]]) -> list[list[object]]:
    rows: list[list[object]] = []
    for path, found in outcomes.items():
        t = Tally.of(found)
        rows.append(
            [
                name,
                path,
                t.n,
                t.pct(t.read),
                t.pct(t.wrong),
                t.pct(t.unread),
                t.pct(t.late_roll),
                t.digit_pct("read"),
                t.digit_pct("wrong"),
            ]
        )
    return rows


SUMMARY = [
    "set",
    "path",
    "frames",
    "read %",
    "wrong %",
    "unread %",
    "wrong: late roll %",
    "digit read %",
    "digit wrong %",
]


def stream_table(
    title: str, scores: dict[str, dict[str, StreamScore]], per_installation: bool
) -> None:
    """scores: installation -> engine -> score."""
    headers = [
        "installation",
        "engine",
        "cycles",
        "values shown",
        "published right %",
        "values missed",
        "wrong published",
        "of which late roll",
        "cycles accepted %",
        "rebaselines",
    ]
    rows: list[list[object]] = []
    engines = list(next(iter(scores.values())))
    totals = {engine: StreamScore() for engine in engines}
    for label, by_engine in scores.items():
        for engine, score in by_engine.items():
            totals[engine].add(score)
            if per_installation:
                rows.append(_stream_row(label, engine, score))
    rows += [_stream_row("all", engine, score) for engine, score in totals.items()]
    say(f"### {title}: stream (daemon cycle, burst vote + judge, default rules)")
    say()
    say(table(headers, rows))
    say()


def _stream_row(label: str, engine: str, score: StreamScore) -> list[object]:
    return [
        label,
        engine,
        score.cycles,
        len(score.shown),
        score.coverage_pct,
        score.missed,
        score.wrong,
        score.wrong_late_roll,
        score.accepted_pct,
        score.rebaselines,
    ]


def run_hard(
    seen: bool, args: argparse.Namespace, engines: dict[str, OcrEngine]
) -> tuple[dict[str, list[Outcome]], list[list[object]]]:
    """Replay every installation; print its tables; return all outcomes per path."""
    title = "Seen styles (tuning typefaces)" if seen else "Hard set (held-out typefaces)"
    streams = hardset.streams(seen, args.cycles, args.burst, args.installations or None)
    outcomes: dict[str, dict[str, list[Outcome]]] = {}
    scores: dict[str, dict[str, StreamScore]] = {}
    for stream in streams:
        progress(f"{'seen' if seen else 'hard'}: {stream.label}")
        result = replay(stream, engines, baseline=not args.no_baseline)
        outcomes[stream.label] = result.outcomes
        scores[stream.label] = result.scores
    frame_tables(title, streams, outcomes)
    stream_table(title, scores, per_installation=not seen)
    paths = list(next(iter(outcomes.values())))
    every = {p: [o for s in streams for o in outcomes[s.label][p]] for p in paths}
    return every, summary_rows("seen" if seen else "hard", every)


def run_real(
    args: argparse.Namespace, engines: dict[str, OcrEngine]
) -> tuple[dict[str, list[Outcome]], list[list[object]]]:
    data = args.real_data
    digits, rolling = realset.load_test_split(args.real, data)
    readers: dict[str, realset.Reader] = {name: e.read for name, e in engines.items()}
    if not args.no_baseline:
        readers[BASELINE] = baseline_read
    progress(f"real: {len(digits)} digits 0-9")
    still = realset.score(digits, readers, data)
    progress(f"real: {len(rolling)} mid-roll")
    moving = realset.score(rolling, readers, data)
    say(f"### Real set: meterdigits test split (labels sha256 {realset.labels_hash(data)})")
    say()
    rows: list[list[object]] = []
    for path in readers:
        a, b = Tally.of(still[path]), Tally.of(moving[path])
        rows.append([path, "0-9", a.n, a.pct(a.read), a.pct(a.wrong), a.pct(a.unread)])
        rows.append([path, "mid-roll", b.n, b.pct(b.read), b.pct(b.wrong), b.pct(b.unread)])
    say(
        table(
            ["path", "digits", "n", "read %", "wrong % (mid-roll: neither neighbour)", "unread %"],
            rows,
        )
    )
    say()
    say("Per digit, 0-9:")
    say()
    headers = ["digit", "n"]
    for path in readers:
        headers += [f"{path} read %", f"{path} wrong %", f"{path} unread %"]
    per_digit: list[list[object]] = []
    for d in "0123456789":
        row: list[object] = [d, sum(o.truth == d for o in still[next(iter(readers))])]
        for path in readers:
            t = Tally.of(o for o in still[path] if o.truth == d)
            row += [t.pct(t.read), t.pct(t.wrong), t.pct(t.unread)]
        per_digit.append(row)
    say(table(headers, per_digit))
    say()
    return still, summary_rows("real 0-9", still) + summary_rows("real mid-roll", moving)


def run_sweep(sets: dict[str, dict[str, list[Outcome]]], engines: Sequence[str]) -> None:
    headers = ["gate"]
    columns: list[tuple[str, str]] = []
    for name, by_path in sets.items():
        for engine in engines:
            if engine in by_path:
                columns.append((name, engine))
                headers += [f"{name} {engine} read %", f"{name} {engine} wrong %"]
    rows: list[list[object]] = []
    for gate in SWEEP_GATES:
        row: list[object] = [f"{gate:.2f}"]
        for name, engine in columns:
            t = Tally.of(sets[name][engine], gate)
            row += [t.pct(t.read), t.pct(t.wrong)]
        rows.append(row)
    say("### Confidence gate sweep (single frame)")
    say()
    say(table(headers, rows))
    say()


def run_speed(args: argparse.Namespace, engines: dict[str, OcrEngine]) -> None:
    streams = hardset.streams(False, args.cycles, 1, args.installations or None)
    per_stream = max(1, args.timing_frames // len(streams))
    before = _load()
    progress(f"speed: {per_stream} frames per installation, load {before}")
    timings = speed.time_paths(streams, engines, per_stream)
    after = _load()
    base = timings[BASELINE].median_ms
    burst = args.burst
    rows: list[list[object]] = []
    for path, t in timings.items():
        rows.append(
            [
                path,
                len(t.wall_ms),
                t.median_ms,
                t.p90_ms,
                f"{base / t.median_ms:.1f}x" if t.median_ms else "-",
                t.cpu_median_ms,
                t.cpu_mean_ms,
                f"{burst * t.cpu_mean_ms / 1000:.3f}",
                f"{PI4_SLOWER[0] * t.median_ms:.0f}-{PI4_SLOWER[1] * t.median_ms:.0f}",
                f"{PI4_SLOWER[0] * t.p90_ms:.0f}-{PI4_SLOWER[1] * t.p90_ms:.0f}",
            ]
        )
    say("### Speed: whole path per frame (window, preprocessing, OCR, verdict)")
    say()
    say(f"Load average before {before}, after {after}.")
    say()
    say(
        table(
            [
                "path",
                "frames",
                "median ms",
                "p90 ms",
                "faster than baseline",
                "CPU ms/frame median",
                "CPU ms/frame mean",
                f"CPU s per reading (burst {burst}, mean)",
                "Pi 4 median ms (x3-x5)",
                "Pi 4 p90 ms (x3-x5)",
            ],
            rows,
        )
    )
    say()


def run_memory(args: argparse.Namespace, engines: Sequence[str]) -> None:
    stream = hardset.streams(False, args.cycles, 1, 1)[0]
    progress(f"memory: daemon processes on {args.memory_frames} frames of {stream.label}")
    found = speed.daemon_memory(stream, list(engines), args.memory_frames)
    rows: list[list[object]] = []
    for m in found:
        low, high = (factor * m.cpu_per_reading_s for factor in PI4_SLOWER)
        rows.append(
            [
                m.engine,
                m.long.frames,
                m.long.exit_code,
                m.long.accepted,
                m.long.peak_rss_mb,
                m.long.cpu_s,
                f"{m.cpu_per_reading_s:.3f}",
                f"{low:.2f}-{high:.2f}",
            ]
        )
    say(
        f"### Memory: `python -m edgemeter run` on a files replay of {stream.label},"
        " real Mosquitto, history on"
    )
    say()
    say(
        table(
            [
                "engine",
                "frames",
                "exit",
                "accepted",
                "peak RSS MB (VmHWM)",
                "CPU s total",
                "CPU s per frame (N-1 diff)",
                "Pi 4 CPU s per frame (x3-x5)",
            ],
            rows,
        )
    )
    say()


# --------------------------------------------------------------------------- main


def run_cells(args: argparse.Namespace) -> None:
    engine = ClassifierEngine()
    streams = hardset.streams(
        False, args.cycles, args.burst, args.installations or None, args.without
    )
    total = cells.CellsScore()
    rows: list[list[object]] = []
    for stream in streams:
        progress(f"cells: {stream.label}")
        score = cells.score_stream(stream, engine)
        total.add(score)
        rows.append(_cells_row(stream.label, score))
    rows.append(_cells_row("all", total))
    easier = f" (without {', '.join(args.without)})" if args.without else ""
    say(
        f"### Hard set{easier}, classifier alone: "
        "drums where the engine finds them, and where they are"
    )
    say()
    headers = [
        "installation",
        "frames",
        "found cells read %",
        "true cells read %",
        "read on true cells only",
        "read on found cells only",
        "read by neither",
    ]
    say(table(headers, rows))
    say()
    say("### Frames read by neither: what keeps the true cells' reading from the gate")
    say()
    kinds = [[kind, count] for kind, count in total.neither.most_common()]
    say(table(["kind", "frames"], kinds or [["none", 0]]))
    say()


def _cells_row(label: str, score: cells.CellsScore) -> list[object]:
    def pct(count: int) -> float:
        return 100.0 * count / score.frames if score.frames else 0.0

    neither = sum(score.neither.values())
    return [
        label,
        score.frames,
        pct(score.found),
        pct(score.true),
        score.true_only,
        score.found_only,
        neither,
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--sections", help=f"comma-separated (default: {','.join(SECTIONS)})")
    parser.add_argument(
        "--real-data", type=Path, default=realset.DATA, help="the meterdigits folder"
    )
    parser.add_argument("--engines", default=",".join(ENGINES), help="ocr.engine values")
    parser.add_argument("--cycles", type=int, default=30, help="cycles per installation")
    parser.add_argument("--burst", type=int, default=PlausibilityConfig().burst)
    parser.add_argument("--installations", type=int, default=0, help="first N only (0: all)")
    parser.add_argument("--real", type=int, default=0, help="real images per group (0: all)")
    parser.add_argument("--timing-frames", type=int, default=120)
    parser.add_argument("--memory-frames", type=int, default=60)
    parser.add_argument("--no-baseline", action="store_true")
    conditions = ("dim", *hardset.EASIER)
    parser.add_argument(
        "--without",
        default="",
        help=f"cells section only: conditions taken from every frame ({','.join(conditions)})",
    )
    args = parser.parse_args(argv)
    args.without = tuple(c for c in args.without.split(",") if c)
    odd = [c for c in args.without if c not in conditions]
    if odd:
        parser.error(f"--without: unknown {', '.join(odd)} (known: {', '.join(conditions)})")
    sections = [s for s in (args.sections or ",".join(SECTIONS)).split(",") if s]
    unknown = [s for s in sections if s not in (*SECTIONS, *DIAGNOSTICS)]
    if unknown:
        every = ", ".join((*SECTIONS, *DIAGNOSTICS))
        parser.error(f"--sections: unknown {', '.join(unknown)} (known: {every})")
    explicit = bool(args.sections)
    args.sections = sections
    if args.without and "cells" not in sections:
        parser.error("--without: only the cells section takes conditions away (--sections cells)")
    args.engines = [e for e in args.engines.split(",") if e]
    known = typing.get_args(typing.get_type_hints(OcrConfig)["engine"])
    wrong = [e for e in args.engines if e not in known]
    if wrong or not args.engines:
        parser.error(f"--engines: {', '.join(wrong) or 'none'} (known: {', '.join(known)})")
    if "speed" in sections and args.no_baseline:
        parser.error("--no-baseline: the speed section measures against the baseline")
    args.skipped = None
    if "real" in sections and not realset.available(args.real_data):
        missing = f"{args.real_data}/labels.csv not found (give the folder with --real-data)"
        if explicit:
            parser.error(f"--sections real: {missing}")
        # A fresh clone without the shared data still gets every other table.
        args.skipped = f"real set skipped: {missing}"
        args.sections.remove("real")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(given)
    single_threaded()  # time the path as the daemon runs it
    try:
        engines = {name: make_engine(OcrConfig(engine=name)) for name in args.engines}
    except OcrUnavailable as err:
        print(f"benchmark: an engine is unavailable: {err}", file=sys.stderr)
        return 3
    header(given)
    if args.skipped:
        say(f"- {args.skipped}")
    say()
    summary: list[list[object]] = []
    swept: dict[str, dict[str, list[Outcome]]] = {}
    if "hard" in args.sections:
        swept["hard"], rows = run_hard(False, args, engines)
        summary += rows
    if "seen" in args.sections:
        _, rows = run_hard(True, args, engines)
        summary += rows
    if "real" in args.sections:
        swept["real 0-9"], rows = run_real(args, engines)
        summary += rows
    if summary:
        say("### Summary: single frame at the default gate")
        say()
        say(table(SUMMARY, summary))
        say()
    if "sweep" in args.sections and swept:
        run_sweep(swept, args.engines)
    if "speed" in args.sections:
        run_speed(args, engines)
    if "memory" in args.sections:
        run_memory(args, args.engines)
    if "cells" in args.sections:
        run_cells(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
