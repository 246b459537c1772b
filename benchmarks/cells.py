"""Where the classifier loses hard-set frames: finding the drums, or reading them.

The renderer knows where every drum is. This section reads each hard-set frame twice
with the classifier alone: as the engine does (the row found in the window), and on
cells cut at the drums' true centres with the installation's digit height and
rotation. A frame read on the true cells but not on the found ones is the cell
finder's to win; one that neither reads is the network's (and the kinds of those say
what the network misses). A diagnostic for whoever works on the OCR next; not a
default section.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from benchmarks import hardset
from benchmarks.scoring import GATE, Outcome, digit_verdicts, verdict
from edgemeter import classify
from edgemeter.ocr import NoReading, Reading, to_grey
from edgemeter.window import DigitWindow, crop


@dataclass
class CellsScore:
    """Frames of one installation by which cells read them (at the gate)."""

    frames: int = 0
    found: int = 0  # read right on the cells the engine finds
    true: int = 0  # read right on the true cells
    true_only: int = 0
    found_only: int = 0
    neither: Counter[str] = field(default_factory=Counter)  # kind -> frames

    def add(self, other: CellsScore) -> None:
        self.frames += other.frames
        self.found += other.found
        self.true += other.true
        self.true_only += other.true_only
        self.found_only += other.found_only
        self.neither.update(other.neither)


def on_true_cells(
    engine: classify.ClassifierEngine,
    window: np.ndarray,
    origin: tuple[int, int],
    cells: tuple[tuple[int, int, int, int], ...],
    digit_height: float,
    rotation: float,
) -> Reading:
    """The classifier's reading of cells cut at the drums' true centres (frame boxes,
    `origin` the window's top left in the frame)."""
    grey = to_grey(window)
    x0, y0 = origin
    inputs = []
    for x, y, w, h in cells:
        where = classify.CellGeometry((x + w / 2 - x0, y + h / 2 - y0), rotation, digit_height)
        cell = classify.cut(grey, where)
        inputs.append(classify.normalise(cell, classify.light_on_dark(cell)))
    probs = engine.probabilities(np.stack(inputs)[:, None])
    return classify.assemble(probs, engine.info.calibration)


def kind_of_miss(reading: Reading, truth: str, rolling: bool) -> str:
    """What keeps a reading on the true cells from being read: a drum read wrong at the
    gate, or which drums stay under it."""
    drums = digit_verdicts(Outcome(truth, reading), GATE)
    if "wrong" in drums:
        return "a drum wrong at the gate"
    unsure = [i for i, drum in enumerate(drums) if drum == "unread"]
    if unsure == [len(truth) - 1]:
        return "the last drum, rolling" if rolling else "the last drum, settled"
    if len(unsure) == 1:
        return "one other drum"
    return "several drums"


def score_stream(stream: hardset.Stream, engine: classify.ClassifierEngine) -> CellsScore:
    x, y, w, h = stream.window
    window = DigitWindow(x=x, y=y, width=w, height=h)
    height, rotation = float(stream.style.digit_height), stream.style.rotation
    score = CellsScore()
    for cycle in stream:
        for shot in cycle.shots:
            image = crop(shot.image, window)
            found = engine.read(image, len(shot.truth))
            true = on_true_cells(engine, image, (x, y), shot.cells, height, rotation)
            found_ok = _read(found, shot.truth)
            true_ok = _read(true, shot.truth)
            score.frames += 1
            score.found += found_ok
            score.true += true_ok
            score.true_only += true_ok and not found_ok
            score.found_only += found_ok and not true_ok
            if not found_ok and not true_ok:
                score.neither[kind_of_miss(true, shot.truth, shot.rolling)] += 1
    return score


def _read(reading: Reading | NoReading, truth: str) -> bool:
    return verdict(Outcome(truth, reading), GATE) == "read"
