"""Single-frame accuracy and speed of the OCR path, against the naive baseline.

    python benchmarks/accuracy.py [--frames 300] [--sets clean,hard,styles,real]

Sets (fixed seeds, so every run scores the same frames):
- clean:  the default simulated counter, no effects, no mid-roll;
- hard:   the default counter under random hard conditions, ~25 % mid-roll;
- styles: random installations (font, colours, polarity, size, rotation) under hard
          conditions, drawn from fonts the OCR was never tuned on (HELD_OUT_FONTS);
- tuned-styles: the same with the fonts used while tuning (TUNE_FONTS), for contrast;
- real:   ../shared/data/meterdigits `test` split, one-digit windows.

A frame's path is what the daemon does: crop the window, read, and treat a reading
with a digit below the confidence threshold as no reading. `read` = the digits the
counter has reached, `wrong` = any other digits, `unread` = no reading. The baseline
is the naive pipeline: crop, Otsu threshold, one pytesseract call with --psm 7 and a
digit whitelist. Figures are printed as a table; nothing here is a test.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytesseract

from edgemeter import simulate
from edgemeter.config import OcrConfig
from edgemeter.ocr import NoReading, Reading, make_engine
from edgemeter.window import DigitWindow, crop

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "data" / "meterdigits"
MIN_CONFIDENCE = 0.6

# Fonts used while developing the OCR; the `styles` set draws only from the others.
TUNE_FONTS = simulate.TUNE_FONTS
HELD_OUT_FONTS = simulate.HELD_OUT_FONTS


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # the window, already cropped
    truth: str
    neighbours: tuple[str, ...] = ()  # also right for a mid-roll real digit


@dataclass
class Score:
    read: int = 0
    wrong: int = 0
    unread: int = 0
    digits_right: int = 0
    digits_total: int = 0
    ms: list[float] | None = None

    def add(self, got: str | None, sample: Sample, ms: float) -> None:
        if self.ms is None:
            self.ms = []
        self.ms.append(ms)
        self.digits_total += len(sample.truth)
        if got is None:
            self.unread += 1
            return
        self.digits_right += sum(a == b for a, b in zip(got, sample.truth, strict=False))
        if got == sample.truth or got in sample.neighbours:
            self.read += 1
        else:
            self.wrong += 1

    @property
    def n(self) -> int:
        return self.read + self.wrong + self.unread

    def row(self, name: str, path: str) -> str:
        ms = self.ms or [0.0]
        p90 = float(np.percentile(ms, 90))
        pct = 100.0 / max(self.n, 1)
        digit_acc = 100.0 * self.digits_right / max(self.digits_total, 1)
        return (
            f"| {name} | {path} | {self.n} | {self.read * pct:.1f} | {self.wrong * pct:.1f} |"
            f" {self.unread * pct:.1f} | {digit_acc:.1f} |"
            f" {statistics.median(ms):.1f} | {p90:.1f} |"
        )


def simulated(name: str, frames: int) -> Iterator[Sample]:
    seeds = {"clean": 11, "hard": 12, "styles": 13, "tuned-styles": 14}
    rng = np.random.default_rng(seeds[name])
    style = simulate.default_style()
    fonts = [f for f in (HELD_OUT_FONTS if name == "styles" else TUNE_FONTS)]
    installations = max(1, frames // 25)
    for index in range(frames):
        if name in ("styles", "tuned-styles") and index % (frames // installations or 1) == 0:
            style = simulate.random_style(rng, fonts)
        value = float(rng.integers(0, 10**style.digits))
        if name != "clean" and rng.random() < 0.25:
            value += float(rng.uniform(0.15, 0.85))
        conditions = (
            simulate.Conditions() if name == "clean" else simulate.random_conditions(rng, hard=True)
        )
        frame = simulate.render(style, value, conditions, rng)
        window = crop(frame.image, DigitWindow(*frame.window))
        yield Sample(window, frame.truth)


def real(limit: int) -> Iterator[Sample]:
    with (REAL / "labels.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "test"]
    digits = [r for r in rows if r["label"] != "N"][: limit or None]
    for row in digits:
        image = cv2.imread(str(REAL / row["file"]))
        yield Sample(image, row["label"])


def real_rolling(limit: int) -> Iterator[Sample]:
    with (REAL / "labels.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "test" and r["label"] == "N"]
    for row in rows[: limit or None]:
        position = float(row["position"])
        low = int(position) % 10
        image = cv2.imread(str(REAL / row["file"]))
        yield Sample(image, str(low), (str((low + 1) % 10),))


def edgemeter_path(engine_name: str) -> Callable[[np.ndarray, int], str | None]:
    engine = make_engine(OcrConfig(engine=engine_name))  # type: ignore[arg-type]

    def read(window: np.ndarray, digits: int) -> str | None:
        result = engine.read(window, digits)
        if isinstance(result, NoReading):
            return None
        assert isinstance(result, Reading)
        return result.digits if result.confidence >= MIN_CONFIDENCE else None

    return read


def baseline(window: np.ndarray, digits: int) -> str | None:
    grey = cv2.cvtColor(window, cv2.COLOR_BGR2GRAY)
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    text = pytesseract.image_to_string(
        binary, config="--psm 7 -c tessedit_char_whitelist=0123456789"
    )
    found = "".join(c for c in text if c.isdigit())
    return found if len(found) == digits else None


def score(samples: Iterator[Sample], reader: Callable[[np.ndarray, int], str | None]) -> Score:
    result = Score()
    for index, sample in enumerate(samples):
        started = time.perf_counter()
        got = reader(sample.image, len(sample.truth))
        result.add(got, sample, (time.perf_counter() - started) * 1000)
        if index % 50 == 49:
            print(f"  ... {index + 1}", file=sys.stderr, flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300, help="frames per simulated set")
    parser.add_argument("--real", type=int, default=0, help="real digits to score (0: all)")
    parser.add_argument("--sets", default="clean,hard,styles,tuned-styles,real")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()

    paths: dict[str, Callable[[np.ndarray, int], str | None]] = {
        f"edgemeter ({args.engine})": edgemeter_path(args.engine)
    }
    if not args.no_baseline:
        paths["naive baseline"] = baseline
    print("| set | path | n | read % | wrong % | unread % | digit acc % | ms median | ms p90 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.sets.split(","):
        for path_name, reader in paths.items():
            print(f"{name} / {path_name}", file=sys.stderr, flush=True)
            if name == "real":
                print(score(real(args.real), reader).row("real 0-9", path_name), flush=True)
                print(
                    score(real_rolling(args.real), reader).row("real mid-roll", path_name),
                    flush=True,
                )
            else:
                print(score(simulated(name, args.frames), reader).row(name, path_name), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
