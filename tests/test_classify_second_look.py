"""The classifier's second look: a reading the gate withholds is read again with taller
cuts, for when row finding took part of each digit for the digit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_classify import window_of

from edgemeter.classify import SECOND_LOOK, TALLER, ClassifierEngine, Seen, keeps_sure
from edgemeter.ocr import NoReading, Reading, Row, row_hypotheses, to_grey

GATE = 0.6


def reading(digits: str, *confidences: float, approaching: bool = False) -> Reading:
    return Reading(digits, confidences, (False,) * len(digits), approaching)


@pytest.fixture(scope="module")
def engine() -> ClassifierEngine:
    return ClassifierEngine(gate=GATE)


def test_a_row_found_too_short_is_read_with_taller_cuts(engine: ClassifierEngine) -> None:
    window = window_of(385206.0)
    grey = to_grey(window)
    rows = row_hypotheses(grey, 6)
    assert isinstance(rows, list)
    # Row finding that took the upper part of each digit for the digit.
    short = [dataclasses.replace(r, digit_height=r.digit_height / TALLER[-1]) for r in rows]
    first = engine._choose(grey, short, 6)
    assert not (isinstance(first[0], Reading) and first[0].confidence >= GATE), first[0]

    got = engine._second_look(grey, short, 6, first)[0]

    assert isinstance(got, Reading) and got.digits == "385206"
    assert got.confidence >= SECOND_LOOK


class Canned(ClassifierEngine):
    """The real engine, with the readings of the taller cuts given per scale."""

    def __init__(self, taller: dict[float, Reading | NoReading]) -> None:
        super().__init__(gate=GATE)
        self.taller = taller
        self.looks: list[float] = []

    def _choose(self, grey: np.ndarray, rows: list[Row], digits: int) -> Seen:
        scale = round(rows[0].digit_height / 20.0, 2)
        self.looks.append(scale)
        return self.taller[scale], None, None


def second_look(
    first: Reading | NoReading, taller: dict[float, Reading | NoReading]
) -> tuple[Reading | NoReading, list[float]]:
    engine = Canned(taller)
    row = Row(((10.0, 10.0),), 0.0, 20.0, 15.0, frozenset({0}))
    got = engine._second_look(np.zeros((40, 40), np.uint8), [row], 4, (first, None, None))[0]
    return got, engine.looks


def test_a_reading_that_clears_the_gate_gets_no_second_look() -> None:
    first = reading("0127", 0.9, 0.9, 0.9, 0.7)

    got, looks = second_look(first, {})

    assert got is first and looks == []


def test_the_most_confident_taller_reading_above_the_bar_wins() -> None:
    first = reading("0127", 0.9, 0.9, 0.9, 0.3)
    taller = {1.25: reading("0127", 0.9, 0.9, 0.9, 0.85), 1.5: reading("0128", 0.9, 0.9, 0.9, 0.95)}

    got, looks = second_look(first, taller)

    assert got == taller[1.5] and looks == list(TALLER)


@pytest.mark.parametrize(
    ("second", "why"),
    [
        (reading("0127", 0.9, 0.9, 0.9, 0.7), "above the gate but below the second-look bar"),
        (reading("0137", 0.9, 0.9, 0.95, 0.95), "changes a drum the first look was sure of"),
        (reading("0128", 0.9, 0.9, 0.9, 0.95, approaching=True), "its last drum may be rolling in"),
        (NoReading("blank"), "no reading"),
    ],
)
def test_a_second_look_that_is_not_sure_enough_leaves_the_first(
    second: Reading | NoReading, why: str
) -> None:
    first = reading("0127", 0.9, 0.9, 0.9, 0.3)

    got, _ = second_look(first, dict.fromkeys(TALLER, second))

    assert got is first, why


def test_keeps_sure_compares_only_the_drums_read_at_the_gate() -> None:
    first = reading("0127", 0.9, 0.9, 0.3, 0.3)

    assert keeps_sure(first, reading("0199", 1, 1, 1, 1), GATE)
    assert not keeps_sure(first, reading("0227", 1, 1, 1, 1), GATE)
    assert keeps_sure(NoReading("rival rows"), reading("0227", 1, 1, 1, 1), GATE)
