"""The classifier engine: the packaged model, on real drum crops and simulated counters.

Real crops come from ../shared/data/meterdigits (its `test` split, never trained on);
those tests skip when the data set is not beside the repository. No timing assertions:
speed is measured by `scripts/train_classifier.py --report`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edgemeter import classify, simulate
from edgemeter.classify import CellGeometry, ClassifierEngine, DrumPosition, ModelError
from edgemeter.ocr import NoReading, Reading, Row, row_hypotheses

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "meterdigits"
GATE = 0.6
BLACK, WHITE, RED = (22, 22, 22), (238, 238, 238), (40, 60, 215)


@pytest.fixture(scope="module")
def engine() -> ClassifierEngine:
    return ClassifierEngine()


def frame_of(value: float, style: simulate.CounterStyle | None = None) -> simulate.SimFrame:
    return simulate.render(
        style or simulate.default_style(), value, simulate.Conditions(), np.random.default_rng(0)
    )


def window_of(value: float, style: simulate.CounterStyle | None = None) -> np.ndarray:
    frame = frame_of(value, style)
    x, y, w, h = frame.window
    return frame.image[y : y + h, x : x + w]


def last_drum(value: float, style: simulate.CounterStyle | None = None) -> np.ndarray:
    """The last drum of a counter (default style), cut as the engine cuts a cell."""
    style = style or simulate.default_style()
    frame = frame_of(value, style)
    x, y, w, h = frame.cells[-1]
    where = CellGeometry((x + w / 2, y + h / 2), 0.0, float(style.digit_height))
    return classify.cut(cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY), where)


def real_test_crops() -> list[tuple[str, int]]:
    """Three clear crops per digit from the test split: settled, at least 30 px wide,
    the first by file name."""
    if not (REAL / "labels.csv").is_file():
        return []
    with (REAL / "labels.csv").open() as handle:
        rows = sorted(
            (r for r in csv.DictReader(handle) if r["split"] == "test"), key=lambda r: r["file"]
        )
    picked: list[tuple[str, int]] = []
    for digit in range(10):
        clear = [
            r["file"]
            for r in rows
            if r["label"] == str(digit)
            and float(r["position"]) == digit
            and r["kind"] == "roller"
            and int(r["width"]) >= 30
        ]
        picked.extend((name, digit) for name in clear[:3])
    return picked


# --------------------------------------------------------------------------- the model


def test_the_packaged_model_loads() -> None:
    engine = ClassifierEngine()

    assert engine.name == "classifier"
    assert engine.model_path == classify.DEFAULT_MODEL
    assert engine.info.calibration(1.0) == pytest.approx(1.0)


def test_a_corrupt_model_file_is_a_clear_error(tmp_path: Path) -> None:
    model = tmp_path / "drum_classifier.onnx"
    model.write_bytes(b"not an onnx file at all" * 20)
    shutil.copy(classify.DEFAULT_MODEL.with_suffix(".json"), model.with_suffix(".json"))

    with pytest.raises(ModelError, match="corrupt"):
        ClassifierEngine(model)


def test_a_missing_model_file_says_how_to_get_one(tmp_path: Path) -> None:
    model = tmp_path / "drum_classifier.onnx"
    shutil.copy(classify.DEFAULT_MODEL.with_suffix(".json"), model.with_suffix(".json"))

    with pytest.raises(ModelError, match=r"missing.*train_classifier"):
        ClassifierEngine(model)


def packaged_with(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the packaged model whose metadata `edit` has changed."""
    model = tmp_path / "drum_classifier.onnx"
    shutil.copy(classify.DEFAULT_MODEL, model)
    meta = json.loads(classify.DEFAULT_MODEL.with_suffix(".json").read_text())
    edit(meta)
    model.with_suffix(".json").write_text(json.dumps(meta))
    return model


def test_metadata_for_another_input_size_is_refused(tmp_path: Path) -> None:
    model = packaged_with(tmp_path, lambda meta: meta.update(input=[64, 40]))

    with pytest.raises(ModelError, match="input"):
        ClassifierEngine(model)


@pytest.mark.parametrize(("classes", "outputs"), [(200, 201), (150, 151), (200, 101)])
def test_metadata_in_tenths_or_twentieths_is_accepted_and_other_steps_refused(
    tmp_path: Path, classes: int, outputs: int
) -> None:
    model = packaged_with(tmp_path, lambda meta: meta.update(classes=classes, outputs=outputs))

    if (classes, outputs) == (200, 201):
        assert ClassifierEngine(model).info.classes == 200
    else:
        with pytest.raises(ModelError, match="classes" if classes == 150 else "outputs"):
            ClassifierEngine(model)


@pytest.mark.parametrize(("key", "value"), [("below", -0.5), ("last", 1.5), ("last", -0.1)])
def test_metadata_with_a_support_share_out_of_range_is_refused(
    tmp_path: Path, key: str, value: float
) -> None:
    model = packaged_with(tmp_path, lambda meta: meta["calibration"].update({key: value}))

    with pytest.raises(ModelError, match=key):
        ClassifierEngine(model)


# --------------------------------------------------------------------------- one cell


def test_real_test_crops_are_read_right_and_confidently(engine: ClassifierEngine) -> None:
    crops = real_test_crops()
    if not crops:
        pytest.skip("meterdigits data set not found")

    drums = [(engine.classify_cell(cv2.imread(str(REAL / name))), digit) for name, digit in crops]

    confident = [(drum, digit) for drum, digit in drums if drum.confidence >= GATE]
    assert all(drum.digit == digit for drum, digit in confident), confident
    # A washed-out drum may be left unread, but hardly any of these clear ones.
    assert len(confident) >= 0.9 * len(crops)


def test_a_settled_synthetic_drum_is_its_digit(engine: ClassifierEngine) -> None:
    drum = engine.classify_cell(last_drum(123457.0), light=True)

    assert isinstance(drum, DrumPosition)
    assert drum.digit == 7
    assert not drum.rolling
    assert drum.confidence >= GATE
    assert abs(drum.position - 7.0) < 0.15


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.7])
def test_a_mid_roll_synthetic_drum_has_reached_the_lower_digit(
    engine: ClassifierEngine, fraction: float
) -> None:
    drum = engine.classify_cell(last_drum(123454.0 + fraction), light=True)

    assert drum.rolling
    assert drum.digit == 4 or drum.confidence < GATE
    assert 4.0 < drum.position < 5.0


def test_the_polarity_of_a_drum_is_judged_from_its_face() -> None:
    dark_on_light = dataclasses.replace(simulate.default_style(), fg=BLACK, bg=WHITE)

    light = classify.light_on_dark(last_drum(123457.0))
    dark = classify.light_on_dark(last_drum(123457.0, dark_on_light))

    assert (light, dark) == (True, False)


def test_an_inverted_drum_reaches_the_network_as_the_same_image() -> None:
    cell = last_drum(123457.0)

    a = classify.normalise(cell)
    b = classify.normalise(255 - cell)

    assert np.abs(a - b).max() < 0.05


def test_a_dark_on_light_drum_reads_its_digit(engine: ClassifierEngine) -> None:
    dark_on_light = dataclasses.replace(simulate.default_style(), fg=BLACK, bg=WHITE)

    drum = engine.classify_cell(last_drum(123457.0, dark_on_light))

    assert drum.digit == 7
    assert drum.confidence >= GATE


def test_a_cell_cut_between_two_drums_is_no_confident_digit(engine: ClassifierEngine) -> None:
    # What a cell finder off by half a drum hands over: two half digits and the gap.
    style = simulate.default_style()
    frame = frame_of(123456.0, style)
    (x0, y0, w0, h0), (x1, _, w1, _) = frame.cells[2], frame.cells[3]
    centre = ((x0 + w0 / 2 + x1 + w1 / 2) / 2, y0 + h0 / 2)
    where = CellGeometry(centre, 0.0, float(style.digit_height))
    grey = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)

    drum = engine.classify_cell(classify.cut(grey, where))

    assert drum.confidence < GATE


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize("value", [123456.0, 204718.03, 990099.05, 3.0, 580311.06])
def test_clean_default_frames_read_the_truth(engine: ClassifierEngine, value: float) -> None:
    reading = engine.read(window_of(value), 6)

    assert isinstance(reading, Reading), reading
    assert reading.digits == simulate.counter_truth(value, 6)
    assert reading.rolling == (False,) * 6
    assert reading.confidence >= GATE


def test_a_carry_is_read_as_the_value_reached(engine: ClassifierEngine) -> None:
    reading = engine.read(window_of(123459.6), 6)

    assert isinstance(reading, Reading), reading
    assert reading.rolling[-2:] == (True, True)
    for digit, expected, conf in zip(reading.digits, "123459", reading.confidences, strict=True):
        assert digit == expected or conf < GATE


@pytest.mark.parametrize(
    "window",
    [np.zeros((120, 400, 3), np.uint8), np.full((120, 400, 3), 128, np.uint8)],
    ids=["black", "uniform-grey"],
)
def test_a_blank_window_is_no_reading(engine: ClassifierEngine, window: np.ndarray) -> None:
    assert isinstance(engine.read(window, 6), NoReading)


def test_a_black_one_drum_window_is_no_reading(engine: ClassifierEngine) -> None:
    assert isinstance(engine.read(np.zeros((44, 24, 3), np.uint8), 1), NoReading)


# --------------------------------------------------------------------------- carry logic


def _peaked(position: float) -> np.ndarray:
    """A distribution over the tenths that is sure of `position`."""
    probs = np.full(classify.CLASSES, 1e-6)
    probs[round(position * 10) % classify.CLASSES] = 1.0
    return probs / probs.sum()


IDENTITY = classify.Calibration((0.0, 1.0), (0.0, 1.0))


def test_a_carried_drum_reads_the_digit_it_is_leaving() -> None:
    probs = np.stack([_peaked(p) for p in (1.0, 2.6, 9.6, 9.6)])

    reading = classify.assemble(probs, IDENTITY)

    assert reading.digits == "1299"
    assert reading.rolling == (False, True, True, True)
    assert reading.confidence > 0.9


def test_a_higher_drum_half_turned_without_a_carry_is_not_trusted() -> None:
    probs = np.stack([_peaked(p) for p in (1.0, 2.5, 4.0)])

    reading = classify.assemble(probs, IDENTITY)

    assert reading.confidences[1] < GATE


def test_a_carry_over_small_tilted_drums_is_read() -> None:
    # Three drums turning at once leave three whole digits to find the row by: the
    # other three drums are placed by the pitch and judged by the network.
    style = dataclasses.replace(simulate.default_style(), rotation=4.0, digit_height=22)

    reading = ClassifierEngine().read(window_of(918299.5, style), 6)

    assert isinstance(reading, Reading), reading
    assert reading.digits == "918299"
    assert reading.confidence >= GATE


def test_drums_of_two_colours_read(engine: ClassifierEngine) -> None:
    # Dark red digits on white drums, black digits on the three red decimal drums.
    style = dataclasses.replace(
        simulate.default_style(),
        fg=(33, 26, 124),
        bg=(230, 230, 230),
        last_fg=BLACK,
        last_bg=RED,
        decimal_drums=3,
    )

    reading = engine.read(window_of(918300.0, style), 6)

    assert isinstance(reading, Reading), reading
    assert reading.digits == "918300"
    assert reading.confidence >= GATE


def test_asking_for_more_drums_than_the_counter_has_is_never_a_confident_reading(
    engine: ClassifierEngine,
) -> None:
    style = dataclasses.replace(
        simulate.default_style(), fg=BLACK, bg=WHITE, last_fg=WHITE, last_bg=RED, decimal_drums=2
    )

    reading = engine.read(window_of(123456.0, style), 7)

    assert isinstance(reading, NoReading) or reading.confidence < GATE, reading


# --------------------------------------------------------------------------- support


def _mixed(*weights: tuple[float, float]) -> np.ndarray:
    """A distribution over the tenths with `weight` at each `position`."""
    probs = np.full(classify.OUTPUTS, 1e-6)
    for position, weight in weights:
        probs[round(position * 10) % classify.CLASSES] += weight
    return np.asarray(probs / probs.sum(), dtype=np.float64)


def test_a_drum_just_short_of_a_digit_is_that_digit_with_full_support() -> None:
    # Labelled 3 (within a tenth of it), the network spreads it over 2.8 and 2.9.
    drum = classify.decode(_mixed((2.8, 0.45), (2.9, 0.55)), IDENTITY)

    assert drum.digit == 3
    assert drum.confidence > 0.99


def test_support_reaches_only_one_tenth_below_a_digit() -> None:
    # Mass at 2.7 is the drum still showing 2: split with 2.9, neither digit is sure.
    drum = classify.decode(_mixed((2.7, 0.5), (2.9, 0.5)), IDENTITY)

    assert drum.confidence <= 0.5 + 1e-3


def test_an_even_split_between_x8_and_x9_is_not_confidently_the_next_digit() -> None:
    # Half-way between 2.8 and 2.9 the drum has not reached 3: with the tenth below
    # counted only up to half the mass on 2.9, the split leaves 3 short of sure.
    calibration = classify.Calibration((0.0, 1.0), (0.0, 1.0), below=0.5)

    split = classify.decode(_mixed((2.8, 0.45), (2.9, 0.55)), calibration)
    spill = classify.decode(_mixed((2.8, 0.25), (2.9, 0.75)), calibration)

    assert split.confidence < 0.85
    assert spill.digit == 3
    assert spill.confidence > 0.99


def test_the_support_of_the_digit_reached_at_x8_is_its_own() -> None:
    # 2.8 has reached 2 (a counter's value is floor(position)).
    drum = classify.decode(_mixed((2.8, 1.0)), IDENTITY)

    assert drum.digit == 2
    assert drum.confidence > 0.99


def test_a_drum_at_x8_is_not_trusted_as_its_floor_when_the_last_tenth_does_not_count() -> None:
    # Photographed drums at 2.8 are labelled "between", those at 2.9 "3"; a model that
    # cannot tell them apart well enough must not call 2.8 a sure 2.
    doubtful = classify.Calibration((0.0, 1.0), (0.0, 1.0), last=0.0)

    at_x8 = classify.decode(_mixed((2.8, 1.0)), doubtful)
    at_x7 = classify.decode(_mixed((2.7, 1.0)), doubtful)
    twentieths = classify.decode(_twentieths((2.8, 0.5), (2.75, 0.5)), doubtful)

    assert (at_x8.digit, at_x8.confidence) == (2, pytest.approx(0.0, abs=1e-3))
    assert (at_x7.digit, at_x7.confidence) == (2, pytest.approx(1.0, abs=1e-3))
    assert (twentieths.digit, twentieths.confidence) == (2, pytest.approx(0.5, abs=1e-3))


def _twentieths(*weights: tuple[float, float]) -> np.ndarray:
    """A distribution over the twentieths of the turn (and not-a-digit) with `weight`
    at each `position`."""
    probs = np.full(201, 1e-6)
    for position, weight in weights:
        probs[round(position * 20) % 200] += weight
    return np.asarray(probs / probs.sum(), dtype=np.float64)


HALF_BELOW = classify.Calibration((0.0, 1.0), (0.0, 1.0), below=0.5)


def test_in_twentieths_a_drum_a_tenth_short_of_a_digit_is_that_digit() -> None:
    # Spilling a little onto 2.85, which counts up to half the mass on 2.9.
    drum = classify.decode(_twentieths((2.9, 0.75), (2.85, 0.25)), HALF_BELOW)

    assert drum.digit == 3
    assert drum.confidence > 0.99
    assert 2.85 < drum.position < 2.9


def test_in_twentieths_a_drum_at_x85_is_not_confidently_the_next_digit() -> None:
    at = classify.decode(_twentieths((2.85, 0.9), (2.9, 0.1)), HALF_BELOW)
    split = classify.support(_twentieths((2.85, 0.5), (2.9, 0.5)), 3, HALF_BELOW.below)

    assert (at.digit, at.confidence) == (2, pytest.approx(0.9, abs=1e-3))
    assert split == pytest.approx(0.75, abs=1e-3)


def test_in_twentieths_the_support_does_not_reach_x8() -> None:
    drum = classify.decode(_twentieths((2.8, 0.5), (2.9, 0.5)), IDENTITY)

    assert drum.confidence <= 0.5 + 1e-3


def test_a_carry_reads_alike_in_tenths_and_twentieths() -> None:
    positions = (1.0, 2.6, 9.6, 9.65)

    tenths = classify.assemble(np.stack([_peaked(p) for p in positions]), IDENTITY)
    twentieths = classify.assemble(np.stack([_twentieths((p, 1.0)) for p in positions]), IDENTITY)

    assert tenths.digits == twentieths.digits == "1299"
    assert twentieths.rolling == (False, True, True, True)
    assert twentieths.confidence > 0.9


def test_the_classifier_is_selectable_in_the_config() -> None:
    from edgemeter.config import OcrConfig
    from edgemeter.ocr import make_engine

    assert make_engine(OcrConfig(engine="classifier")).name == "classifier"


def over_serial(counter: np.ndarray) -> tuple[np.ndarray, list[Row], Reading | NoReading]:
    """A counter's window with a serial number under the drums (a second row of six
    digits, less than half as tall), its row hypotheses, and how the serial's rows
    read when taken alone."""
    small_style = dataclasses.replace(simulate.default_style(), digit_height=18)
    small = window_of(987654.0, small_style)
    width = max(counter.shape[1], small.shape[1])
    composite = np.vstack(
        [
            cv2.copyMakeBorder(counter, 0, 0, 0, width - counter.shape[1], cv2.BORDER_REPLICATE),
            cv2.copyMakeBorder(small, 0, 0, 0, width - small.shape[1], cv2.BORDER_REPLICATE),
        ]
    )
    grey = cv2.cvtColor(composite, cv2.COLOR_BGR2GRAY)
    rows = row_hypotheses(grey, 6)
    assert isinstance(rows, list)
    alone = ClassifierEngine()._choose(grey, [r for r in rows if r.digit_height < 30], 6)[0]
    return composite, rows, alone


def test_small_print_below_the_counter_is_neither_the_counter_nor_its_rival(
    engine: ClassifierEngine,
) -> None:
    composite, rows, alone = over_serial(window_of(123456.0))
    heights = sorted(round(row.digit_height) for row in rows)
    assert heights[0] < 0.5 * heights[-1], heights  # both rows were found
    # The serial reads just as well as the counter when taken alone.
    assert isinstance(alone, Reading) and alone.digits == "987654", alone

    grey = cv2.cvtColor(composite, cv2.COLOR_BGR2GRAY)
    reading = engine._choose(grey, rows, 6)[0]

    assert isinstance(reading, Reading), reading
    assert reading.digits == "123456"
    assert reading.confidence >= GATE


def test_small_print_is_not_read_when_glare_leaves_the_counter_unsure(
    engine: ClassifierEngine,
) -> None:
    # The counter's row cannot clear the gate (its last drum half-way, a glare spot
    # washing out another drum), but most of its drums still read: it is still the
    # counter, so the serial number under it must not stand in for it.
    counter = window_of(123455.5)
    frame = frame_of(123455.5)
    x, y, w, h = frame.cells[2]
    wx, wy = frame.window[:2]
    cv2.circle(counter, (x - wx + w // 2, y - wy + h // 2), round(0.45 * w), (255,) * 3, -1)
    composite, rows, alone = over_serial(cv2.GaussianBlur(counter, (0, 0), 1.0))
    assert any(r.digit_height < 30 for r in rows)  # the serial's row was found
    assert isinstance(alone, Reading) and alone.digits == "987654", alone
    assert alone.confidence >= GATE

    reading = engine.read(composite, 6)

    assert not (isinstance(reading, Reading) and reading.digits == "987654"), reading
    assert not (isinstance(reading, Reading) and reading.confidence >= GATE), reading


@pytest.mark.parametrize("value", [123455.82, 123455.85, 123455.88])
def test_a_last_drum_rolling_in_is_the_floor_or_flagged_approaching(
    engine: ClassifierEngine, value: float
) -> None:
    # Most of the way into the next digit, the counter has not reached it: a reader
    # that calls it the next digit must say the drum is not there yet, so that the
    # judge waits a cycle instead of publishing a value the counter has not shown.
    reading = engine.read(window_of(value), 6)

    assert isinstance(reading, Reading), reading
    assert reading.digits in ("123455", "123456")
    assert reading.digits == "123455" or reading.approaching, reading


@pytest.mark.parametrize("value", [123455.0, 123455.04, 123456.0])
def test_a_settled_last_drum_is_not_approaching(engine: ClassifierEngine, value: float) -> None:
    reading = engine.read(window_of(value), 6)

    assert isinstance(reading, Reading), reading
    assert not reading.approaching, reading
