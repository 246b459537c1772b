"""The classifier with Tesseract settling the drums it cannot (edgemeter.tiebreak):
the rule on hand-made distributions, then the engine with the real classifier and the
real Tesseract on rendered counters."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
from test_classify import _mixed, window_of

from edgemeter import simulate
from edgemeter.classify import ClassifierEngine
from edgemeter.config import OcrConfig
from edgemeter.ocr import Cells, NoReading, OcrEngine, Reading, make_engine
from edgemeter.tiebreak import TiebreakEngine, candidates, settle
from edgemeter.window import DigitWindow, crop

GATE = 0.6
SURE = _mixed((5.0, 1.0))  # a drum settled on 5 (only its digit matters below)


def torn(low: int) -> np.ndarray:
    """A drum half-way between `low` and the next digit."""
    return _mixed((low + 0.5, 0.5), (low + 1.0, 0.5))


def smudged() -> np.ndarray:
    """A drum the network has no idea of: its mass over unrelated digits."""
    return _mixed((3.0, 0.4), (7.0, 0.3), (5.0, 0.3))


def reading(digits: str, confidences: tuple[float, ...], approaching: bool = False) -> Reading:
    return Reading(digits, confidences, (False,) * len(digits), approaching)


# --------------------------------------------------------------------------- the rule


def test_a_drum_between_two_digits_may_be_either() -> None:
    assert candidates(torn(7)) == {7, 8}
    assert candidates(torn(9)) == {9, 0}


def test_a_drum_the_network_has_no_idea_of_has_no_candidates() -> None:
    assert candidates(smudged()) == frozenset()


def test_tesseract_settles_a_torn_last_drum() -> None:
    mine = reading("0127", (1.0, 1.0, 1.0, 0.3))
    probs = np.stack([SURE, SURE, SURE, torn(7)])

    settled = settle(mine, probs, reading("0128", (0.9, 0.9, 0.9, 0.95)), GATE)

    assert settled.digits == "0128"
    # The classifier's confidence where it was sure, Tesseract's where it settled.
    assert settled.confidences == (1.0, 1.0, 1.0, 0.95)
    # A last drum Tesseract moved may still be rolling in: the judge waits a cycle.
    assert settled.approaching


def test_tesseract_confirming_the_classifier_does_not_flag_a_settled_drum() -> None:
    mine = reading("0127", (1.0, 1.0, 1.0, 0.3))
    probs = np.stack([SURE, SURE, SURE, torn(7)])

    settled = settle(mine, probs, reading("0127", (0.9, 0.9, 0.9, 0.95)), GATE)

    assert settled.digits == "0127" and settled.confidence == 0.95
    assert not settled.approaching


def test_a_drum_settled_by_a_less_sure_tesseract_carries_the_gate() -> None:
    mine = reading("0127", (1.0, 1.0, 1.0, 0.3))
    probs = np.stack([SURE, SURE, SURE, torn(7)])

    settled = settle(mine, probs, reading("0128", (0.9, 0.9, 0.9, 0.4)), GATE)

    assert settled.digits == "0128" and settled.confidences == (1.0, 1.0, 1.0, GATE)


@pytest.mark.parametrize(
    ("theirs", "why"),
    [
        (reading("0137", (0.9, 0.9, 0.9, 0.9)), "disagrees on a drum the classifier is sure of"),
        (reading("0126", (0.9, 0.9, 0.9, 0.9)), "a digit the classifier ruled out"),
        (reading("0128", (0.9, 0.9, 0.9, 0.2)), "Tesseract too unsure even of a choice of two"),
        (reading("128", (0.9, 0.9, 0.9)), "another number of drums"),
        (NoReading("no row found"), "no reading"),
    ],
)
def test_tesseract_cannot_overrule_or_guess(theirs: Reading | NoReading, why: str) -> None:
    mine = reading("0127", (1.0, 1.0, 1.0, 0.3))
    probs = np.stack([SURE, SURE, SURE, torn(7)])

    assert settle(mine, probs, theirs, GATE) is mine, why


def test_tesseract_is_not_asked_about_a_drum_the_classifier_has_no_idea_of() -> None:
    # A smudged first drum that Tesseract reads surely (and wrongly, as it does).
    mine = reading("931010", (0.15, 1.0, 1.0, 1.0, 1.0, 1.0))
    probs = np.stack([smudged(), SURE, SURE, SURE, SURE, SURE])

    assert settle(mine, probs, reading("931010", (0.99,) * 6), GATE) is mine


def test_a_wrap_from_9_to_0_must_turn_the_drum_above() -> None:
    mine = reading("0129", (1.0, 1.0, 0.4, 0.3))
    probs = np.stack([SURE, SURE, torn(2), torn(9)])

    assert settle(mine, probs, reading("0120", (0.9,) * 4), GATE) is mine
    assert settle(mine, probs, reading("0130", (0.9,) * 4), GATE).digits == "0130"


def test_a_wrap_under_a_drum_the_classifier_is_sure_of_is_refused() -> None:
    mine = reading("0130", (1.0, 1.0, 1.0, 0.3))
    probs = np.stack([SURE, SURE, SURE, torn(9)])

    assert settle(mine, probs, reading("0139", (0.9,) * 4), GATE) is mine


# --------------------------------------------------------------------------- the engine


class Counting:
    """A real engine that counts its calls."""

    def __init__(self, engine: OcrEngine) -> None:
        self.engine = engine
        self.name = engine.name
        self.calls = 0

    def read(self, window: Any, digits: int) -> Reading | NoReading:
        self.calls += 1
        return self.engine.read(window, digits)

    def read_seen(self, window: Any, digits: int) -> tuple[Reading | NoReading, Cells | None]:
        return self.read(window, digits), None


@pytest.fixture(scope="module")
def classifier() -> ClassifierEngine:
    return ClassifierEngine()


@pytest.fixture(scope="module")
def tesseract() -> OcrEngine:
    return make_engine(OcrConfig(engine="auto"))


def test_a_clear_frame_is_the_classifiers_and_costs_no_tesseract_call(
    classifier: ClassifierEngine, tesseract: OcrEngine
) -> None:
    window = window_of(483920.0)
    spy = Counting(tesseract)
    engine = TiebreakEngine(classifier, spy, GATE)

    got, cells = engine.read_seen(window, 6)

    assert got == classifier.read(window, 6)
    assert isinstance(got, Reading) and got.digits == "483920"
    assert isinstance(cells, Cells) and len(cells.cells) == 6
    assert spy.calls == 0


def test_tesseract_reads_only_what_the_classifier_withholds_and_adds_no_wrong_reading(
    classifier: ClassifierEngine, tesseract: OcrEngine
) -> None:
    # Hard conditions, a last drum mid-roll in every other frame: some frames the
    # classifier withholds. Every frame the classifier reads is left alone; what the
    # engine reads at the gate is the truth.
    rng = np.random.default_rng(11)
    spy = Counting(tesseract)
    engine = TiebreakEngine(classifier, spy, GATE)
    withheld = 0
    for index in range(40):
        value = 10_000.0 + 37 * index + (0.85 if index % 2 else 0.0)
        conditions = simulate.random_conditions(rng, hard=True)
        frame = simulate.render(simulate.default_style(), value, conditions, rng)
        window = crop(frame.image, DigitWindow(*frame.window))
        alone = classifier.read(window, 6)
        before = spy.calls
        got = engine.read(window, 6)
        if isinstance(alone, Reading) and alone.confidence >= GATE:
            assert got == alone and spy.calls == before
            continue
        if isinstance(alone, Reading):
            withheld += 1
            assert spy.calls == before + 1
        if isinstance(got, Reading) and got.confidence >= GATE:
            assert got.digits == frame.truth, (index, got, frame.truth)
    assert withheld > 0, "no frame of the 40 was withheld: the test proves nothing"


def test_the_config_selects_it_with_its_gate() -> None:
    engine = make_engine(OcrConfig(engine="classifier+tesseract"), 0.75)

    assert isinstance(engine, TiebreakEngine)
    assert engine.name == "classifier+tesseract" and engine.gate == 0.75


def test_without_tesseract_it_reads_with_the_classifier_alone_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = OcrConfig(engine="classifier+tesseract", tessdata="/nonexistent/tessdata")

    with caplog.at_level(logging.WARNING):
        engine = make_engine(config)

    assert isinstance(engine, ClassifierEngine)
    assert "Tesseract is unavailable" in caplog.text
    assert "apt-get install tesseract-ocr" in caplog.text
