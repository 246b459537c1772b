"""Real set: photographed meter digits (meterdigits `test` split) as one-digit windows.

Each image is one drum cropped by the camera project that collected it, so it is given
to the path as the window of a one-digit counter: the path finds the digit in it,
cleans it and reads it, as it would one drum of a counter. Digits 0-9 are scored
against their label. A drum caught between two digits (label `N`) is right when read
as either neighbour of its position (the digit it is leaving or the one it is
reaching), and the figure that matters is how often the answer is neither.

Only the `test` split is read; nothing may be trained or tuned on it.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmarks.scoring import Outcome
from edgemeter.ocr import NoReading, Reading

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "meterdigits"


@dataclass(frozen=True)
class RealDigit:
    file: str
    label: str  # 0-9 or N
    position: float
    kind: str  # roller or lcd

    @property
    def truth(self) -> str:
        """The digit the drum has reached (for N: the lower neighbour)."""
        return self.label if self.label != "N" else str(int(self.position) % 10)

    @property
    def neighbours(self) -> tuple[str, ...]:
        return () if self.label != "N" else (str((int(self.position) + 1) % 10),)


def available(data: Path = DATA) -> bool:
    return (data / "labels.csv").is_file()


def load_test_split(limit: int = 0, data: Path = DATA) -> tuple[list[RealDigit], list[RealDigit]]:
    """(digits 0-9, mid-roll) of the test split, each in file order, `limit` each (0: all)."""
    with (data / "labels.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "test"]
    found = [RealDigit(r["file"], r["label"], float(r["position"]), r["kind"]) for r in rows]
    digits = [d for d in found if d.label != "N"]
    rolling = [d for d in found if d.label == "N"]
    return digits[: limit or None], rolling[: limit or None]


def labels_hash(data: Path = DATA) -> str:
    return hashlib.sha256((data / "labels.csv").read_bytes()).hexdigest()[:12]


def images(digits: list[RealDigit], data: Path = DATA) -> Iterator[tuple[RealDigit, np.ndarray]]:
    for digit in digits:
        image = cv2.imread(str(data / digit.file), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"{data / digit.file}: cannot be read as an image")
        yield digit, image


Reader = Callable[[np.ndarray, int], Reading | NoReading]


def score(
    digits: list[RealDigit], readers: dict[str, Reader], data: Path = DATA
) -> dict[str, list[Outcome]]:
    """Every reader on every image (each image loaded once)."""
    out: dict[str, list[Outcome]] = {name: [] for name in readers}
    for digit, image in images(digits, data):
        for name, reader in readers.items():
            out[name].append(Outcome(digit.truth, reader(image, 1), digit.neighbours))
    return out
