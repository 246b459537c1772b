"""The classifier, with Tesseract settling the drums it cannot (`ocr.engine:
classifier+tesseract`).

The classifier withholds a drum it cannot place surely. Often it has still narrowed
that drum down to a digit and one neighbour: the drum stands between the two, or just
short of its digit, a question of where the drum stands. Tesseract, reading the shape
of what shows, answers that well. Where the classifier has not narrowed a drum down (a
smudged, half-lit or cut-off digit) Tesseract is no help: there it is as often sure
and wrong, so it is not asked. Tesseract runs only on frames the classifier withholds,
so on most frames this costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgemeter.classify import ClassifierEngine, reached_mass
from edgemeter.ocr import Cells, NoReading, OcrEngine, Reading

# A drum is narrowed down when its likeliest digit and the likelier of that digit's two
# neighbours hold this much of the network's probability.
NARROWED = 0.9
# Tesseract's confidence that settles such a drum. Choosing between two digits the
# classifier left, it needs less than a reading from scratch: on the real train split's
# validation tenth, 0.3 adds 6 of 522 digits and 21 of 757 mid-roll drums read, and no
# wrong one (0.6, the gate: 4 and 9; 0.1: one wrong). The drum it settles then carries
# at least the gate's confidence.
SETTLES = 0.3


def candidates(probs: npt.NDArray[np.float64]) -> frozenset[int]:
    """The digits one drum may show by the network's distribution: its likeliest digit
    and the likelier neighbour, when the two hold NARROWED of the mass; else none."""
    mass = reached_mass(probs)
    digit = int(np.argmax(mass))
    neighbour = max((digit + 1) % 10, (digit - 1) % 10, key=lambda d: float(mass[d]))
    if float(mass[digit] + mass[neighbour]) < NARROWED:
        return frozenset()
    return frozenset((digit, neighbour))


def _carried(own: str, other: str) -> int:
    """How far moving a drum from `own` to `other` turns the drum above it: +1 from 9
    to 0, -1 from 0 to 9, else 0."""
    return {("9", "0"): 1, ("0", "9"): -1}.get((own, other), 0)


def settle(
    mine: Reading, probs: npt.NDArray[np.float64], theirs: Reading | NoReading, gate: float
) -> Reading:
    """The classifier's reading with its uncertain drums settled by Tesseract's, or the
    classifier's reading unchanged (still below the gate) when Tesseract cannot.

    Tesseract must read every drum at SETTLES or more, agree on every drum the
    classifier is sure of, and give each other drum one of its `candidates`. A drum moved across 9|0
    turns the drum above it by one, so that one must have moved too (and so cannot be
    one the classifier is sure of). A last drum Tesseract moves may be rolling in: the
    reading says it is approaching.
    """
    if not isinstance(theirs, Reading) or len(theirs.digits) != len(mine.digits):
        return mine
    if theirs.confidence < SETTLES:
        return mine
    sure = [c >= gate for c in mine.confidences]
    for i, (own, other) in enumerate(zip(mine.digits, theirs.digits, strict=True)):
        if sure[i]:
            if own != other:
                return mine
        elif int(other) not in candidates(probs[i]):
            return mine
        carry = _carried(own, other)
        if carry and i > 0 and int(theirs.digits[i - 1]) != (int(mine.digits[i - 1]) + carry) % 10:
            return mine
    drums = range(len(sure))
    return Reading(
        theirs.digits,
        tuple(mine.confidences[i] if sure[i] else max(gate, theirs.confidences[i]) for i in drums),
        tuple(mine.rolling[i] if sure[i] else theirs.rolling[i] for i in drums),
        approaching=mine.approaching or theirs.digits[-1] != mine.digits[-1],
    )


@dataclass
class TiebreakEngine:
    """The classifier first; Tesseract only on a reading the classifier withholds.

    `gate`: the confidence a reading needs (plausibility.min_confidence)."""

    classifier: ClassifierEngine
    tesseract: OcrEngine
    gate: float
    name = "classifier+tesseract"

    def read(self, window: npt.NDArray[Any], digits: int) -> Reading | NoReading:
        return self.read_seen(window, digits)[0]

    def read_seen(
        self, window: npt.NDArray[Any], digits: int
    ) -> tuple[Reading | NoReading, Cells | None]:
        mine, cells, probs = self.classifier.read_drums(window, digits)
        if not isinstance(mine, Reading) or probs is None or mine.confidence >= self.gate:
            return mine, cells
        return settle(mine, probs, self.tesseract.read(window, digits), self.gate), cells
