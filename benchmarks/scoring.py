"""Scoring: what a path made of each window, judged against the truth at a confidence gate.

A frame is `read` when the path gives every digit with a confidence at or above the
gate and they are the digits the counter has reached (or, for a real mid-roll digit,
the next one: both neighbours of a drum between two digits are right); `wrong` when it
gives digits at or above the gate that are anything else; `unread` otherwise. The
gate is the daemon's `plausibility.min_confidence` (0.6 by default): the judge rejects
a reading with any digit below it, so a reading under the gate never becomes a value.

Per digit, each drum of each frame counts once: read (above the gate and right), wrong
(above the gate, not right) or unread (below the gate, or the frame gave no reading).

The naive baseline, for the ratio the issue asks for: crop, Otsu threshold, one
`pytesseract.image_to_string` call with `--psm 7` and a digit whitelist; a result of
the right length is a reading (it has no confidence: always above any gate).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
import pytesseract

from edgemeter.config import PlausibilityConfig
from edgemeter.ocr import Cells, NoReading, OcrEngine, Reading

GATE = PlausibilityConfig().min_confidence
# Of the way to the next digit, from where a drum shows mostly the next one.
LATE_ROLL = 0.75
SWEEP_GATES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
BASELINE = "baseline"
Verdict = Literal["read", "wrong", "unread"]


@dataclass(frozen=True)
class Outcome:
    """What a path made of one window, and what it should have made of it."""

    truth: str
    reading: Reading | NoReading
    neighbours: tuple[str, ...] = ()  # also right (real mid-roll: the next digit)
    value: float | None = None  # the simulated counter's exact value


def next_value(value: float, digits: int) -> str:
    """The reading the counter will show once its last drum has turned."""
    return str((math.floor(value) + 1) % 10**digits).zfill(digits)


def late_roll(outcome: Outcome) -> bool:
    """A wrong reading that is the next value while the last drum is nearly there.

    The counter has not reached it (its value is the floor), but it shows more of the
    next digit than of the one it is leaving: the least harmful way to be wrong, told
    apart so that the tables show what kind of wrong remains.
    """
    value, reading = outcome.value, outcome.reading
    if value is None or not isinstance(reading, Reading):
        return False
    ahead = reading.digits == next_value(value, len(outcome.truth))
    return ahead and value - math.floor(value) >= LATE_ROLL


def verdict(outcome: Outcome, gate: float) -> Verdict:
    reading = outcome.reading
    if not isinstance(reading, Reading) or len(reading.digits) != len(outcome.truth):
        return "unread"
    if reading.confidence < gate:
        return "unread"
    if reading.digits == outcome.truth or reading.digits in outcome.neighbours:
        return "read"
    return "wrong"


def digit_verdicts(outcome: Outcome, gate: float) -> list[Verdict]:
    reading = outcome.reading
    if not isinstance(reading, Reading) or len(reading.digits) != len(outcome.truth):
        return ["unread"] * len(outcome.truth)
    right = [outcome.truth, *outcome.neighbours]
    out: list[Verdict] = []
    for i, (digit, confidence) in enumerate(zip(reading.digits, reading.confidences, strict=True)):
        if confidence < gate:
            out.append("unread")
        elif any(digit == r[i] for r in right):
            out.append("read")
        else:
            out.append("wrong")
    return out


@dataclass
class Tally:
    """Counts of frames and digits by verdict, at one gate."""

    read: int = 0
    wrong: int = 0
    unread: int = 0
    late_roll: int = 0  # of the wrong ones: the next value, the drum nearly there
    digits: dict[str, int] = field(default_factory=lambda: {"read": 0, "wrong": 0, "unread": 0})

    @classmethod
    def of(cls, outcomes: Iterable[Outcome], gate: float = GATE) -> Tally:
        tally = cls()
        for outcome in outcomes:
            frame = verdict(outcome, gate)
            tally.read += frame == "read"
            tally.wrong += frame == "wrong"
            tally.unread += frame == "unread"
            tally.late_roll += frame == "wrong" and late_roll(outcome)
            for digit in digit_verdicts(outcome, gate):
                tally.digits[digit] += 1
        return tally

    @property
    def n(self) -> int:
        return self.read + self.wrong + self.unread

    def pct(self, count: int) -> float:
        return 100.0 * count / self.n if self.n else 0.0

    def digit_pct(self, kind: str) -> float:
        total = sum(self.digits.values())
        return 100.0 * self.digits[kind] / total if total else 0.0


class Recorder:
    """An engine that remembers what it read: the daemon's reads, scored frame by frame.

    It is the real engine, called by the daemon's own cycle; it only keeps a copy of
    each result so that one OCR pass serves the single-frame and the stream score.
    """

    def __init__(self, engine: OcrEngine) -> None:
        self.engine = engine
        self.name = engine.name
        self.results: list[Reading | NoReading] = []

    def read(self, window: Any, digits: int) -> Reading | NoReading:
        return self.read_seen(window, digits)[0]

    def read_seen(self, window: Any, digits: int) -> tuple[Reading | NoReading, Cells | None]:
        result, cells = self.engine.read_seen(window, digits)
        self.results.append(result)
        return result, cells

    def take(self) -> list[Reading | NoReading]:
        taken, self.results = self.results, []
        return taken


def baseline_read(window: np.ndarray, digits: int) -> Reading | NoReading:
    """The naive pipeline: Otsu, one Tesseract process per window, --psm 7, digits only."""
    grey = cv2.cvtColor(window, cv2.COLOR_BGR2GRAY) if window.ndim == 3 else window
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    text = pytesseract.image_to_string(
        binary, config="--psm 7 -c tessedit_char_whitelist=0123456789"
    )
    found = "".join(c for c in text if c.isdigit())
    if len(found) != digits:
        return NoReading(f"baseline read {len(found)} digits")
    return Reading(found, (1.0,) * digits, (False,) * digits)


def sweep(outcomes: Sequence[Outcome], gates: Sequence[float] = SWEEP_GATES) -> list[Tally]:
    return [Tally.of(outcomes, gate) for gate in gates]
