"""The OCR stage against real Tesseract (both backends), on simulated counter frames.

Frames come from `edgemeter.simulate` and are cropped to their generous window, as the
daemon does. No timing assertions: speed is measured by the benchmark, not here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest

from edgemeter import simulate
from edgemeter.config import OcrConfig
from edgemeter.ocr import (
    Cells,
    NoReading,
    OcrUnavailable,
    PytesseractEngine,
    Reading,
    TesserocrEngine,
    make_engine,
    preprocess,
    read_window,
    row_hypotheses,
)

Engine = TesserocrEngine | PytesseractEngine
BLACK, WHITE = (22, 22, 22), (238, 238, 238)


def _engine(name: str) -> Engine:
    try:
        return make_engine(OcrConfig(engine=name))  # type: ignore[arg-type]
    except OcrUnavailable as err:
        pytest.skip(f"{name} unavailable: {err}")


@pytest.fixture(scope="module", params=["tesserocr", "pytesseract"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield _engine(request.param)


@pytest.fixture(scope="module")
def fast() -> Engine:
    """One engine for the tests that are about the images, not the backend."""
    try:
        return make_engine(OcrConfig(engine="auto"))
    except OcrUnavailable as err:
        pytest.skip(str(err))


def window_of(
    value: float,
    style: simulate.CounterStyle | None = None,
    conditions: simulate.Conditions | None = None,
) -> np.ndarray:
    """The generous window around the counter of a simulated frame showing `value`."""
    frame = simulate.render(
        style or simulate.default_style(),
        value,
        conditions or simulate.Conditions(),
        np.random.default_rng(0),
    )
    x, y, w, h = frame.window
    return frame.image[y : y + h, x : x + w]


def dark_on_light() -> simulate.CounterStyle:
    return dataclasses.replace(simulate.default_style(), fg=BLACK, bg=WHITE)


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("value", [123456.0, 204718.03, 990099.05, 3.0, 111111.0, 580311.06])
def test_clean_default_frames_read_exactly(engine: Engine, value: float) -> None:
    reading = engine.read(window_of(value), 6)

    assert isinstance(reading, Reading), reading
    assert reading.digits == simulate.counter_truth(value, 6)
    assert reading.rolling == (False,) * 6
    assert reading.confidence >= 0.9


@pytest.mark.parametrize(
    "style", [simulate.default_style(), dark_on_light()], ids=["light-on-dark", "dark-on-light"]
)
def test_both_polarities_read(engine: Engine, style: simulate.CounterStyle) -> None:
    reading = engine.read(window_of(654321.0, style), 6)

    assert isinstance(reading, Reading), reading
    assert reading.digits == "654321"


def test_a_red_last_drum_of_the_other_polarity_reads(fast: Engine) -> None:
    style = dataclasses.replace(dark_on_light(), last_fg=WHITE, last_bg=(40, 36, 185))

    reading = fast.read(window_of(305821.0, style), 6)

    assert isinstance(reading, Reading), reading
    assert reading.digits == "305821"


def test_a_few_degrees_of_rotation_and_small_digits_still_read(fast: Engine) -> None:
    style = dataclasses.replace(simulate.default_style(), rotation=3.0, digit_height=24)

    reading = fast.read(window_of(123456.0, style), 6)

    assert isinstance(reading, Reading), reading
    assert reading.digits == "123456"


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_a_mid_roll_last_drum_is_flagged_and_never_confidently_the_next_digit(
    engine: Engine, fraction: float
) -> None:
    reading = engine.read(window_of(123456.0 + fraction), 6)

    assert isinstance(reading, Reading), reading
    assert reading.digits[:5] == "12345"
    assert reading.rolling[-1]
    # The lower (leaving) digit, or an admission that the drum could not be read.
    assert reading.digits[-1] == "6" or reading.confidences[-1] < 0.6


def test_a_carry_flags_every_turning_drum(fast: Engine) -> None:
    reading = fast.read(window_of(123459.8), 6)

    assert isinstance(reading, Reading), reading
    assert reading.rolling == (False, False, False, False, True, True)
    for digit, expected, conf in zip(reading.digits, "123459", reading.confidences, strict=True):
        assert digit == expected or conf < 0.6


def test_confidences_lie_between_zero_and_one(fast: Engine) -> None:
    hard = simulate.random_conditions(np.random.default_rng(3), hard=True)
    for value in (482913.0, 482913.4, 77.9):
        reading = fast.read(window_of(value, conditions=hard), 6)
        if isinstance(reading, Reading):
            assert len(reading.confidences) == 6
            assert all(0.0 <= c <= 1.0 for c in reading.confidences)


# --------------------------------------------------------------------------- no reading


@pytest.mark.parametrize(
    "window",
    [
        np.zeros((120, 400, 3), np.uint8),
        np.full((120, 400, 3), 128, np.uint8),
        np.zeros((0, 0, 3), np.uint8),
        np.full((4, 4), 200, np.uint8),
    ],
    ids=["black", "uniform-grey", "empty", "tiny"],
)
def test_blank_windows_give_a_reason_not_an_exception(fast: Engine, window: np.ndarray) -> None:
    reading = fast.read(window, 6)

    assert isinstance(reading, NoReading)
    assert reading.reason


def test_a_black_frame_says_it_is_blank(fast: Engine) -> None:
    reading = fast.read(np.zeros((120, 400, 3), np.uint8), 6)

    assert reading == NoReading("window is blank (no contrast)")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_noise_is_no_reading(fast: Engine, seed: int) -> None:
    noise = np.random.default_rng(seed).integers(0, 256, (150, 420, 3), dtype=np.uint8)

    assert isinstance(fast.read(noise, 6), NoReading)


@pytest.mark.parametrize("digits", [5, 7])
def test_the_wrong_digit_count_is_no_reading(engine: Engine, digits: int) -> None:
    reading = engine.read(window_of(123456.0), digits)

    assert reading == NoReading(f"found 6 digit cells, expected {digits}")


# --------------------------------------------------------------------------- cells


def test_cells_give_one_box_per_drum_inside_the_window() -> None:
    window = window_of(123456.0)

    cells = preprocess(window, 6)

    assert isinstance(cells, Cells)
    assert len(cells.boxes) == 6
    height, width = window.shape[:2]
    xs = [x for x, _, _, _ in cells.boxes]
    assert xs == sorted(xs)
    for x, y, w, h in cells.boxes:
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
    for cell in cells.cells:
        assert cell.light_on_dark
        assert cell.glyphs[0].role == "settled"
        assert cell.glyphs[0].image.dtype == np.uint8 and cell.glyphs[0].image.ndim == 2


def test_read_seen_gives_the_read_and_the_cells_it_read(fast: Engine) -> None:
    window = window_of(987654.0)

    reading, cells = fast.read_seen(window, 6)

    assert reading == fast.read(window, 6) == read_window(window, 6, fast)[0]
    assert isinstance(reading, Reading) and reading.digits == "987654"
    preprocessed = preprocess(window, 6)
    assert isinstance(cells, Cells) and isinstance(preprocessed, Cells)
    assert cells.boxes == preprocessed.boxes


def test_read_seen_gives_no_cells_for_a_blank_window(fast: Engine) -> None:
    reading, cells = fast.read_seen(np.full((60, 240, 3), 128, np.uint8), 6)

    assert isinstance(reading, NoReading) and cells is None


def test_a_one_digit_window_is_read_as_one_drum(fast: Engine) -> None:
    frame = simulate.render(
        simulate.default_style(), 123457.0, simulate.Conditions(), np.random.default_rng(0)
    )
    x, y, w, h = frame.cells[-1]

    reading = fast.read(frame.image[y : y + h, x : x + w], 1)

    assert isinstance(reading, Reading), reading
    assert reading.digits == "7"


# --------------------------------------------------------------------------- engines


def test_make_engine_gives_the_pytesseract_backend() -> None:
    engine = _engine("pytesseract")

    assert engine.name == "pytesseract"
    reading = engine.read(window_of(246801.0), 6)
    assert isinstance(reading, Reading) and reading.digits == "246801"


@pytest.mark.parametrize("name", ["auto", "tesserocr", "pytesseract"])
def test_a_bogus_tessdata_is_unavailable_with_a_clear_message(name: str) -> None:
    config = OcrConfig(engine=name, tessdata="/nonexistent/tessdata")  # type: ignore[arg-type]

    with pytest.raises(OcrUnavailable) as err:
        make_engine(config)

    assert "/nonexistent/tessdata has no eng.traineddata" in str(err.value)


def test_a_missing_tesseract_binary_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import pytesseract

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")

    with pytest.raises(OcrUnavailable, match=r"tesseract not found: apt-get install tesseract-ocr"):
        make_engine(OcrConfig(engine="pytesseract"))


# --------------------------------------------------------------------------- row hypotheses


def test_row_hypotheses_hold_the_true_drums_of_a_two_colour_counter() -> None:
    style = dataclasses.replace(
        simulate.default_style(),
        fg=(33, 26, 124),
        bg=(230, 230, 230),
        last_fg=BLACK,
        last_bg=(40, 60, 215),
        decimal_drums=3,
    )
    frame = simulate.render(style, 918300.0, simulate.Conditions(), np.random.default_rng(0))
    wx, wy, ww, wh = frame.window
    truth = [(x + w / 2 - wx, y + h / 2 - wy) for x, y, w, h in frame.cells]

    rows = row_hypotheses(frame.image[wy : wy + wh, wx : wx + ww], 6)

    assert not isinstance(rows, NoReading), rows
    assert all(len(row.centres) == 6 for row in rows)
    assert all(-0.5 * row.pitch < x < ww + 0.5 * row.pitch for row in rows for x, _ in row.centres)
    on_the_drums = [
        row
        for row in rows
        if all(
            abs(cx - tx) < 0.2 * style.digit_height and abs(cy - ty) < 0.2 * style.digit_height
            for (cx, cy), (tx, ty) in zip(row.centres, truth, strict=True)
        )
    ]
    assert len(on_the_drums) >= 1


def test_row_hypotheses_follow_the_rotation_of_the_row() -> None:
    style = dataclasses.replace(simulate.default_style(), rotation=3.0)

    rows = row_hypotheses(window_of(123456.0, style), 6)

    assert not isinstance(rows, NoReading), rows
    # The renderer turns the counter counter-clockwise for a positive rotation.
    assert all(abs(row.angle - 3.0) < 1.0 for row in rows), [r.angle for r in rows]


@pytest.mark.parametrize("digits", [0, -2])
def test_row_hypotheses_refuse_a_digit_count_below_one(digits: int) -> None:
    rows = row_hypotheses(window_of(123456.0), digits)

    assert isinstance(rows, NoReading)
    assert "at least 1" in rows.reason


def test_row_hypotheses_of_a_blank_window_say_so() -> None:
    rows = row_hypotheses(np.full((120, 400, 3), 90, np.uint8), 6)

    assert isinstance(rows, NoReading)
    assert "blank" in rows.reason
