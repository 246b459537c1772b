"""The classifier's smoothed look: a reading still withheld after the second look has its
row found again on smoothed copies of the window, for dim frames whose sensor noise
breaks the row finder's binarisations. Frames from the renderer, in tuning typefaces."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgemeter import classify, simulate
from edgemeter.classify import RESCUED, SECOND_LOOK, ClassifierEngine, rescues
from edgemeter.ocr import NoReading, Reading

GATE = 0.6
# Frames of random_window() that the first two looks withhold and a smoothed look reads.
RESCUED_SEEDS = (30, 51, 77)
FRAMES = 40


def reading(digits: str, *confidences: float, approaching: bool = False) -> Reading:
    return Reading(digits, confidences, (False,) * len(digits), approaching)


def random_window(seed: int) -> tuple[np.ndarray, str]:
    """A small-digit counter in a tuning typeface under conditions drawn from the hard
    range (dim to bright, noise, blur, glare, JPEG): its window and the truth."""
    rng = np.random.default_rng(seed)
    value = float(rng.integers(100000, 999999))
    style = simulate.random_style(rng, simulate.TUNE_FONTS)
    style = dataclasses.replace(style, digit_height=int(rng.integers(20, 26)))
    frame = simulate.render(style, value, simulate.random_conditions(rng, hard=True), rng)
    x, y, w, h = frame.window
    return frame.image[y : y + h, x : x + w], frame.truth


@pytest.fixture(scope="module")
def engine() -> ClassifierEngine:
    return ClassifierEngine(gate=GATE)


def at_gate(got: Reading | NoReading) -> str | None:
    return got.digits if isinstance(got, Reading) and got.confidence >= GATE else None


@pytest.mark.parametrize("seed", RESCUED_SEEDS)
def test_a_noisy_window_is_placed_on_a_smoothed_copy(
    engine: ClassifierEngine, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    window, truth = random_window(seed)
    with monkeypatch.context() as patch:
        patch.setattr(classify, "SMOOTHED", ())
        assert at_gate(engine.read(window, len(truth))) is None

    got = engine.read(window, len(truth))

    assert isinstance(got, Reading) and got.digits == truth
    assert got.confidence >= RESCUED


def test_smoothed_looks_leave_every_read_frame_alone_and_add_no_wrong_reading(
    engine: ClassifierEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    rescued = 0
    for seed in range(FRAMES):
        window, truth = random_window(seed)
        with monkeypatch.context() as patch:
            patch.setattr(classify, "SMOOTHED", ())
            before = engine.read(window, len(truth))
        after = engine.read(window, len(truth))
        if at_gate(before) is not None:
            assert after == before, seed
        elif at_gate(after) is not None:
            assert at_gate(after) == truth, seed
            rescued += 1
    assert rescued >= 1  # seed 30 is among them


@pytest.mark.parametrize(
    ("later", "why"),
    [
        (reading("0127", 0.9, 0.9, 0.95, 0.7), "below the second-look bar"),
        (reading("0127", 0.9, 0.9, 0.95, 0.85), "an unsure drum below RESCUED"),
        (reading("0137", 0.9, 0.9, 0.95, 0.95), "changes a drum the first look was sure of"),
        (reading("0128", 0.9, 0.9, 0.95, 0.95, approaching=True), "may be rolling in"),
    ],
)
def test_rescues_refuses(later: Reading, why: str) -> None:
    first = reading("0127", 0.9, 0.9, 0.9, 0.3)

    assert not rescues(first, later, GATE), why


def test_rescues_takes_a_sure_reading_that_keeps_the_sure_drums() -> None:
    first = reading("0127", 0.9, 0.9, 0.9, 0.3)

    # The sure drums may read lower than RESCUED, as long as they clear the bar.
    assert rescues(first, reading("0128", SECOND_LOOK, 0.9, 0.9, RESCUED), GATE)
    assert rescues(NoReading("no row"), reading("0128", 0.95, 0.95, 0.95, 0.95), GATE)
    assert not rescues(NoReading("no row"), reading("0128", 0.95, 0.95, 0.95, 0.85), GATE)
