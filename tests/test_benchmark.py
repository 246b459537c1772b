"""The benchmark command still runs and prints its whole table (a few frames only).

Not a benchmark: no figure is compared with a target here (that would flake on a slow
machine); the run is checked for its rows, and its percentages for being percentages.
The scoring rules it applies are checked on hand-made readings.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from broker import mosquitto_binary

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import cells, hardset, realset  # noqa: E402
from benchmarks.accuracy import ENGINES, parse_args  # noqa: E402
from benchmarks.scoring import (  # noqa: E402
    GATE,
    Outcome,
    Tally,
    digit_verdicts,
    late_roll,
    verdict,
)
from edgemeter import simulate  # noqa: E402
from edgemeter.classify import ClassifierEngine  # noqa: E402
from edgemeter.ocr import NoReading, Reading  # noqa: E402

PATHS = (*ENGINES, "baseline")

Table = tuple[list[str], list[list[str]]]


def reading(digits: str, *confidences: float) -> Reading:
    return Reading(digits, confidences, (False,) * len(digits))


# --------------------------------------------------------------------------- rules


def test_a_reading_counts_only_when_every_digit_clears_the_gate() -> None:
    assert verdict(Outcome("0123", reading("0123", 0.9, 0.9, 0.9, 0.9)), 0.6) == "read"
    assert verdict(Outcome("0123", reading("0124", 0.9, 0.9, 0.9, 0.9)), 0.6) == "wrong"
    assert verdict(Outcome("0123", reading("0124", 0.9, 0.9, 0.9, 0.5)), 0.6) == "unread"
    assert verdict(Outcome("0123", NoReading("dark")), 0.6) == "unread"
    assert digit_verdicts(Outcome("0123", reading("0124", 0.9, 0.9, 0.3, 0.9)), 0.6) == [
        "read",
        "read",
        "unread",
        "wrong",
    ]


def test_a_real_mid_roll_digit_is_right_as_either_neighbour() -> None:
    rolling = {"truth": "7", "neighbours": ("8",)}
    assert verdict(Outcome(reading=reading("8", 0.9), **rolling), 0.6) == "read"  # type: ignore[arg-type]
    assert verdict(Outcome(reading=reading("7", 0.9), **rolling), 0.6) == "read"  # type: ignore[arg-type]
    assert verdict(Outcome(reading=reading("1", 0.9), **rolling), 0.6) == "wrong"  # type: ignore[arg-type]
    tally = Tally.of(
        [
            Outcome("7", reading("7", 0.9)),
            Outcome("7", reading("1", 0.9)),
            Outcome("7", NoReading("")),
        ]
    )
    assert (tally.read, tally.wrong, tally.unread, tally.n) == (1, 1, 1, 3)


def test_the_next_value_with_the_drum_nearly_there_is_wrong_but_told_apart() -> None:
    nearly = Outcome("019", reading("020", 0.9, 0.9, 0.9), value=19.8)
    assert verdict(nearly, 0.6) == "wrong"
    assert late_roll(nearly)
    assert not late_roll(Outcome("019", reading("020", 0.9, 0.9, 0.9), value=19.5))
    assert not late_roll(Outcome("019", reading("021", 0.9, 0.9, 0.9), value=19.8))
    assert late_roll(Outcome("999", reading("000", 0.9, 0.9, 0.9), value=999.9))  # the wrap
    tally = Tally.of([nearly, Outcome("019", reading("018", 0.9, 0.9, 0.9), value=19.8)])
    assert (tally.wrong, tally.late_roll) == (2, 1)


def test_the_hard_set_uses_only_held_out_typefaces_and_its_twins_only_tuning_ones() -> None:
    hardset.check_fonts()
    assert len(hardset.INSTALLATIONS) >= 10
    held_out = {i.font for i in hardset.INSTALLATIONS}
    assert held_out <= set(simulate.HELD_OUT_FONTS)
    assert not held_out & set(simulate.TUNE_FONTS)
    for twin in hardset.streams(seen=True, cycles=1, burst=1):
        assert twin.style.font in simulate.TUNE_FONTS


# --------------------------------------------------------------------------- the command


def test_without_the_real_data_the_default_run_skips_it_and_says_so(tmp_path: Path) -> None:
    args = parse_args(["--real-data", str(tmp_path)])
    assert "real" not in args.sections and "hard" in args.sections
    assert args.skipped is not None and str(tmp_path) in args.skipped


def test_asking_for_the_real_set_without_its_data_is_an_error_naming_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--sections", "real", "--real-data", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--real-data" in capsys.readouterr().err


def tables(text: str) -> dict[str, Table]:
    """Every Markdown table of the output, by the heading (or line) above it."""
    found: dict[str, Table] = {}
    title = ""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("|") and index + 1 < len(lines) and lines[index + 1].startswith("|--"):
            headers = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            for row in lines[index + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip("|").split("|")])
            found[title] = (headers, rows)
        elif line.strip() and not line.startswith("|"):
            title = line.strip()
    return found


def find(found: dict[str, Table], start: str, part: str = "") -> Table:
    matches = [title for title in found if title.startswith(start) and part in title]
    assert len(matches) == 1, f"{start!r}: {matches} in {list(found)}"
    return found[matches[0]]


def column(table: Table, name: str) -> list[str]:
    headers, rows = table
    return [row[headers.index(name)] for row in rows]


def first_column(table: Table) -> list[str]:
    return [row[0] for row in table[1]]


@pytest.fixture(scope="module")
def output() -> str:
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto)")
    sections = "hard,seen,real,sweep,speed,memory,cells"
    if not realset.available():
        sections = "hard,seen,sweep,speed,memory,cells"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--sections",
            sections,
            "--installations",
            "2",
            "--cycles",
            "2",
            "--real",
            "4",
            "--timing-frames",
            "4",
            "--memory-frames",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_every_percentage_in_the_output_is_between_0_and_100(output: str) -> None:
    checked = 0
    for headers, rows in tables(output).values():
        for i, name in enumerate(headers):
            if "%" in name:
                for row in rows:
                    assert 0.0 <= float(row[i]) <= 100.0, (name, row)
                    checked += 1
    assert checked > 100


def test_the_hard_set_and_its_twin_have_a_row_per_installation_and_path(output: str) -> None:
    found = tables(output)
    names = [i.name for i in hardset.INSTALLATIONS[:2]]
    for title in ("### Hard set", "### Seen styles"):
        single = find(found, title, "single frame")
        assert first_column(single) == [*names, "all"]
        assert column(single, "frames") == ["6", "6", "12"]  # 2 cycles of a burst of 3
        for path in PATHS:
            assert f"{path} wrong %" in single[0]
    stream = find(found, "### Hard set", "stream")
    assert [(r[0], r[1]) for r in stream[1]] == [
        *((n, e) for n in names for e in ENGINES),
        *(("all", e) for e in ENGINES),
    ]
    assert all(int(v) >= 0 for v in column(stream, "wrong published"))
    summary = find(found, "### Summary")
    assert {(r[0], r[1]) for r in summary[1]} >= {(s, p) for s in ("hard", "seen") for p in PATHS}


def test_the_real_set_sweep_speed_and_memory_sections_are_there(output: str) -> None:
    found = tables(output)
    if realset.available():
        real = find(found, "### Real set")
        assert {(r[0], r[1]) for r in real[1]} == {
            (p, d) for p in PATHS for d in ("0-9", "mid-roll")
        }
        assert first_column(find(found, "Per digit")) == list("0123456789")
    sweep = find(found, "### Confidence gate sweep")
    assert first_column(sweep) == ["0.30", "0.40", "0.50", "0.60", "0.70", "0.80", "0.90", "0.95"]
    speed = find(found, "Load average before")
    assert first_column(speed) == list(PATHS)
    assert all(float(v) > 0 for v in column(speed, "median ms"))
    assert column(speed, "faster than baseline")[-1] == "1.0x"
    memory = find(found, "### Memory")
    assert first_column(memory) == list(ENGINES)
    assert column(memory, "exit") == ["0"] * len(ENGINES)
    assert all(float(v) > 10 for v in column(memory, "peak RSS MB (VmHWM)"))
    assert re.search(r"load average at start [\d.]+ [\d.]+ [\d.]+", output)


def test_the_cells_section_reads_the_hard_sets_own_frames_as_the_hard_set_does(
    output: str,
) -> None:
    # The same frames and the same classifier: its found-cells column must be the
    # hard set's classifier column, or the section measures something else.
    found = tables(output)
    hard = find(found, "### Hard set", "single frame")
    diagnosis = find(found, "### Hard set, classifier alone")
    assert column(diagnosis, "found cells read %") == column(hard, "classifier read %")
    assert first_column(diagnosis) == first_column(hard)
    frames = [int(v) for v in column(diagnosis, "frames")]
    assert frames[-1] == sum(frames[:-1])
    for row in diagnosis[1]:
        only_true, only_found, neither = (int(v) for v in row[-3:])
        assert only_true + only_found + neither <= int(row[1])
    assert find(found, "### Frames read by neither")[0] == ["kind", "frames"]


def test_a_clean_frame_reads_on_its_true_cells() -> None:
    style = simulate.default_style()
    frame = simulate.render(style, 52817.0, simulate.Conditions(), np.random.default_rng(0))
    x, y, w, h = frame.window
    window = frame.image[y : y + h, x : x + w]

    got = cells.on_true_cells(
        ClassifierEngine(), window, (x, y), frame.cells, float(style.digit_height), 0.0
    )

    assert got.digits == frame.truth
    assert got.confidence >= GATE


@pytest.mark.parametrize(
    ("got", "rolling", "kind"),
    [
        (reading("1234", 1.0, 1.0, 0.9, 0.95), False, "a drum wrong at the gate"),
        (reading("1235", 1.0, 1.0, 1.0, 0.3), True, "the last drum, rolling"),
        (reading("1235", 1.0, 1.0, 1.0, 0.3), False, "the last drum, settled"),
        (reading("1235", 1.0, 0.2, 1.0, 1.0), False, "one other drum"),
        (reading("1235", 0.1, 0.2, 1.0, 1.0), False, "several drums"),
    ],
)
def test_a_miss_on_the_true_cells_is_told_by_its_drums(
    got: Reading, rolling: bool, kind: str
) -> None:
    assert cells.kind_of_miss(got, "1235", rolling) == kind


def test_a_condition_taken_away_is_gone_from_every_frame_and_the_rest_stay() -> None:
    drawn = simulate.Conditions(brightness=0.3, glare=0.6, blur=1.5, noise=9.0, motion=4.0)

    assert hardset.easier(drawn, ("glare",)) == dataclasses.replace(drawn, glare=0.0)
    assert hardset.easier(drawn, ("dim",)).brightness == 0.8
    plain = hardset.easier(drawn, ("blur", "noise"))
    assert (plain.blur, plain.motion, plain.noise, plain.glare) == (0.0, 0.0, 0.0, 0.6)
    stream = hardset.streams(False, cycles=1, burst=1, installations=1, without=("glare",))[0]
    rng = np.random.default_rng(5)
    assert all(stream.conditions(rng).glare == 0.0 for _ in range(50))


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--sections", "cells", "--without", "rain"], "--without: unknown rain"),
        (["--sections", "hard", "--without", "glare"], "only the cells section"),
    ],
)
def test_taking_conditions_away_is_checked_and_only_for_the_cells_section(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert said in capsys.readouterr().err
