"""Classifier engine: each drum cell read by a small trained network, not by Tesseract.

The row comes from `ocr.row_hypotheses` (the Tesseract engine's row finding, without
its glyph cleaning): every way the drums may lie, when some were not found as whole
digits (turning, of another colour, seven-segment pieces). Each drum is cut at a fixed
geometry around the digit band, made grey with the digit light on dark,
contrast-stretched and scaled to the network's input, and the placement whose drums
read best is kept (see `ClassifierEngine._choose`); a reading below the gate gets a
second look with taller cuts, then a look at rows found on smoothed copies of the
window (`_second_look`, `_smoothed_look`). The network says where the drum
stands, as a distribution over the 100 tenths of its turn (3.4: 40 % of the way from 3
to 4; a model may tell twentieths apart instead, see STEPS_PER_DIGIT), or that the cell
shows no drum digit at all (a cut between two drums, the bezel). From that
distribution:

* the digit the drum has reached: the tenths from d - 0.1 to d + 0.8 count as d. A drum
  a tenth short of d shows d all but whole (the real labels call it d); at d + 0.8 it
  has not reached d + 1 (a counter's value is floor(position)), so that is still d;
* whether it is rolling: most of the mass off the settled tenths (d - 0.1 .. d + 0.1);
* the confidence: the mass that supports the winning digit, mapped through the
  calibration stored with the model, so that a digit at or above 0.6 is wrong well
  under 0.5 % of the time on held-out data. The support reaches one tenth below the
  digit's own tenths (d - 0.2), up to a share (`Calibration.below`) of the mass on
  d - 0.1: a drum at d - 0.1 looks all but the same as one at d - 0.2, so the network
  spills mass onto it, and without it a third of the photographed drums settled at
  d - 0.1 were withheld though read right. But a drum at d - 0.15 has not reached d
  and splits its mass evenly: the cap keeps that from counting as d. A drum between
  two readings splits its mass and is not trusted. A model may also count only a
  share (`Calibration.last`) of the mass on d + 0.8 for d: a drum seen there may be
  one that shows d + 1 all but whole.

The higher drums are read knowing the lower ones (Geneva carry): a drum turns only
while every drum below it stands at 9 going to 0, and then by as much as the last one
has turned. So a higher drum's reached digit is the one its position sits nearest once
that expected turn is taken off; a higher drum caught half-way while the drum below
stands still is no digit at all and gets a low confidence.

It needs neither torch nor onnx at run time: OpenCV's dnn module runs the ONNX file.
It does not judge plausibility and keeps no state between frames; the model is trained
by scripts/train_classifier.py.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edgemeter.ocr import (
    DEFAULT_GATE,
    Cell,
    Cells,
    Glyph,
    NoReading,
    Reading,
    Row,
    grey_percentiles,
    row_hypotheses,
    to_grey,
)

Image = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float32]
# A reading, the cells as the network saw them, and its distribution per drum.
Seen = tuple[Reading | NoReading, Cells | None, npt.NDArray[np.float64] | None]

MODEL_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = MODEL_DIR / "drum_classifier.onnx"

# The network's input: grey, digit light on dark, this many pixels high and wide.
INPUT_H, INPUT_W = 32, 20
# The cut around a drum, in settled-digit heights: the digit fills about two thirds of
# the height, as in the photographed one-drum crops the model also learns from.
CROP_H, CROP_W = 1.54, 0.85
# Steps of a drum's turn per digit that a model may tell apart: tenths, or twentieths,
# which give a drum a tenth short of its digit (it shows the digit all but whole) and
# one 0.15 short (it has not reached it) classes of their own. The model's JSON says
# which; the decoding below works in the model's steps, its rules in tenths.
STEPS_PER_DIGIT = (10, 20)
# The turn in tenths; one more output says the cell shows no drum digit at all (cut
# between two drums, a separator, the bezel): the cell finder's mistakes, which the
# network must not read as digits.
CLASSES = 100
NOT_A_DIGIT = CLASSES
OUTPUTS = CLASSES + 1
# Reached digit d owns the tenths d - 0.1 .. d + 0.8 (offset of its first tenth).
REACHED_FROM = -1
# A drum within a tenth of a digit is settled on it.
SETTLED_TENTHS = 1
# A last drum this far short of its reached digit (in digits) may still be rolling in:
# the judge waits for a second cycle before it takes the value (plausibility.judge).
APPROACHING = 0.05
# A higher drum stands this many tenths off where the carry puts it, at most: slack in
# the gearing. Further off (half-way between two digits) it gives no digit.
SLACK_TENTHS = 3
# Below this spread of grey levels a cell shows nothing (as ocr.MIN_CONTRAST).
MIN_CONTRAST = 12.0
# A second placement of the row's missing drums that reads at this confidence or more
# makes the window ambiguous: no reading.
RIVAL = 0.3
# A row whose every drum was found whole and reads at this confidence needs no rival.
SURE = 0.9
# Rows of digits less than this fraction of the tallest row that reads are small print
# beside the counter (a serial number, an OBIS code): never the counter, nor its rival.
SMALL_PRINT = 0.7
# A reading the gate withholds gets a second look, with every cut this much taller: row
# finding may have taken part of each digit for the digit (the hole of a seven-segment
# 0, the upper half of a blurred digit, a styled drum's inner face), and a cut around a
# part shows the network no whole digit.
TALLER = (1.25, 1.5)
# A second look is a second chance at a confident reading, so it must clear more than
# the gate: at least this, and agree with every drum the first look was sure of.
SECOND_LOOK = 0.8
# A reading still withheld gets its row found again on copies of the window smoothed by
# these Gaussian sigmas (pixels), and its cells cut from the window itself: sensor
# noise in a dim frame breaks the row finder's binarisations into specks and merged
# blobs, and the row it then finds is off by a drum or part of a digit. Noise is per
# pixel, so the sigmas are in pixels, not digit heights.
SMOOTHED = (0.8, 1.2, 1.6)
# A drum that only a smoothed look reads must read at least this: that look is a third
# chance, and the window it reads is one the first looks could not place.
RESCUED = 0.9


class ModelError(Exception):
    """The classifier model is missing, corrupt or does not fit this code."""


@dataclass(frozen=True)
class DrumPosition:
    """Where one drum stands, as read from its cell.

    `position` 0..10 in digits (3.4: 40 % of the way from 3 to 4; 9.9: almost 0),
    `digit` the digit the drum has reached, `rolling` whether it is between digits,
    `confidence` 0..1 that `digit` is right.
    """

    position: float
    digit: int
    rolling: bool
    confidence: float


# --------------------------------------------------------------------------- cutting


def light_on_dark(grey: Image) -> bool:
    """Whether a drum cell shows a light digit on a darker drum.

    The drum's face is most of a cell cut around its digit (strokes, even a bold 8 or
    two part digits of a turning drum, cover well under half), so the median sits on
    the face's side of mid-grey. This beats asking which polarity looks more like a
    glyph: a thin 1 looks like a glyph either way round.
    """
    h, w = grey.shape
    core = grey[h // 10 : h - h // 10, w // 10 : w - w // 10]
    if core.size == 0:
        core = grey
    lo, median, hi = grey_percentiles(np.ascontiguousarray(core, np.uint8), (2, 50, 98))
    return bool(median < (lo + hi) / 2)


def normalise(cell: npt.NDArray[Any], light: bool | None = None) -> FloatArray:
    """A cell image as the network's input: grey, digit light on dark, INPUT_H x
    INPUT_W, grey levels stretched so the 2nd..98th percentile spans 0..1, centred.

    `light`: whether the digit is the lighter (None: `light_on_dark` decides). The
    percentiles, not min and max: a specular dot or a dead pixel would otherwise set
    the scale.
    """
    grey = to_grey(cell)
    if light is None:
        light = light_on_dark(grey)
    if not light:
        grey = 255 - grey
    h, w = grey.shape
    interp = cv2.INTER_AREA if h > INPUT_H or w > INPUT_W else cv2.INTER_LINEAR
    small = np.asarray(cv2.resize(grey, (INPUT_W, INPUT_H), interpolation=interp), np.uint8)
    lo, hi = grey_percentiles(small, (2, 98))
    out = (small.astype(np.float32) - lo) / max(hi - lo, 8.0)
    return np.asarray(np.clip(out, -0.25, 1.25) - 0.5, dtype=np.float32)


@dataclass(frozen=True)
class CellGeometry:
    """Where to cut one drum: the centre of its digit band, the row's direction, and
    the settled digit height (window pixels)."""

    centre: tuple[float, float]
    angle: float  # degrees, the row's direction in the window (counter-clockwise +)
    digit_height: float


def cut(grey: Image, where: CellGeometry, height: float = CROP_H, width: float = CROP_W) -> Image:
    """The drum's cell at the fixed geometry, levelled (window pixels beyond the edge
    repeat the edge)."""
    out_h = max(4, round(height * where.digit_height))
    out_w = max(3, round(width * where.digit_height))
    matrix = cv2.getRotationMatrix2D(where.centre, -where.angle, 1.0)
    matrix[0, 2] += out_w / 2 - where.centre[0]
    matrix[1, 2] += out_h / 2 - where.centre[1]
    warped = cv2.warpAffine(
        grey, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return np.asarray(warped, dtype=np.uint8)


# --------------------------------------------------------------------------- decoding


def steps_of(probs: npt.NDArray[np.float64]) -> int:
    """Steps per digit of a distribution over the turn, with or without the
    not-a-digit output: 101 or 100 values are tenths, 201 or 200 twentieths."""
    return len(probs) // 10


def _turn(probs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The distribution over the turn's steps alone (not-a-digit dropped)."""
    return np.asarray(probs[: 10 * steps_of(probs)], dtype=np.float64)


def _steps(tenths: int, per_digit: int) -> int:
    return tenths * per_digit // 10


def reached_mass(probs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Probability of each reached digit 0-9 from the turn (the not-a-digit output,
    if given, belongs to none)."""
    per = steps_of(probs)
    rolled = np.roll(_turn(probs), -_steps(REACHED_FROM, per))
    return np.asarray(rolled.reshape(10, per).sum(axis=1), dtype=np.float64)


def support(
    probs: npt.NDArray[np.float64], digit: int, below: float = 1.0, last: float = 1.0
) -> float:
    """The mass behind a reached digit: its own steps, and the mass on the tenth under
    them (d - 0.2 up to d - 0.1) up to `below` times the mass on its first own step
    (d - 0.1).

    In tenths: a drum at d - 0.1 spills onto d - 0.2 less than it keeps; one half-way
    between the two (d - 0.15, which has not reached d) splits evenly, and must not
    count as d. In twentieths, d - 0.15 has a step of its own: a drum standing there
    puts little mass on d - 0.1, so the cap keeps it from counting as d.

    `last`: the share of the mass on d + 0.8 that counts for d. The photographed drums
    there are labelled "between" and those a tenth further "d + 1", and the network
    cannot always tell the two apart: a drum it puts at d + 0.8 may be one that shows
    d + 1 all but whole.
    """
    turn = _turn(probs)
    per = steps_of(probs)
    first = per * digit + _steps(REACHED_FROM, per)
    own = turn[(first + np.arange(per)) % len(turn)].sum()
    spill = turn[(first - 1 - np.arange(_steps(1, per))) % len(turn)].sum()
    under = min(float(spill), below * float(turn[first % len(turn)]))
    at_last = float(turn[(per * digit + _steps(8, per)) % len(turn)])
    return float(own + under - (1.0 - last) * at_last)


@functools.cache
def _near_digits(per: int, reach: int) -> npt.NDArray[np.intp]:
    """Indices of the steps within `reach` of each digit 0-9 on a turn of `per` steps per
    digit, one row per digit (cached: every drum of every frame asks for the same)."""
    offsets = np.arange(-reach, reach + 1)
    index = np.asarray((per * np.arange(10)[:, None] + offsets) % (10 * per), dtype=np.intp)
    index.setflags(write=False)
    return index


def _circular_mean(turn: npt.NDArray[np.float64], centre: int, reach: int) -> float:
    """Mean step of the mass within `reach` steps of `centre`, in steps (may be <0)."""
    offsets = np.arange(-reach, reach + 1)
    weights = turn[(centre + offsets) % len(turn)]
    total = float(weights.sum())
    if total <= 0:
        return float(centre)
    return centre + float((weights * offsets).sum()) / total


def position_of(probs: npt.NDArray[np.float64]) -> float:
    """Where the drum stands, 0..10: the mean within 0.4 of the most likely step."""
    turn = _turn(probs)
    per = steps_of(probs)
    peak = int(np.argmax(turn))
    return (_circular_mean(turn, peak, _steps(4, per)) / per) % 10.0


@dataclass(frozen=True)
class Calibration:
    """Support of the winning digit (`support`) -> confidence, piecewise linear (knots
    ascending)."""

    raw: tuple[float, ...]
    confidence: tuple[float, ...]
    below: float = 1.0  # how much of d - 0.2 counts for d: see `support`
    last: float = 1.0  # how much of d + 0.8 counts for d: see `support`

    def __call__(self, mass: float) -> float:
        return float(np.interp(mass, self.raw, self.confidence))


def decode(probs: npt.NDArray[np.float64], calibration: Calibration) -> DrumPosition:
    """One drum's reading from its distribution over the tenths (and not-a-digit)."""
    turn = _turn(probs)
    per = steps_of(probs)
    mass = reached_mass(turn)
    digit = int(np.argmax(mass))
    settled = float(turn[_near_digits(per, _steps(SETTLED_TENTHS, per))].sum())
    return DrumPosition(
        position=round(position_of(turn), 3),
        digit=digit,
        rolling=settled < 0.5,
        confidence=round(calibration(support(turn, digit, calibration.below, calibration.last)), 3),
    )


@dataclass(frozen=True)
class _Drum:
    digit: int
    confidence: float
    rolling: bool
    turned: float  # how far past `digit` the drum stands, in digits (-0.1 .. 0.9)


def _last_drum(probs: npt.NDArray[np.float64], calibration: Calibration) -> _Drum:
    read = decode(probs, calibration)
    turned = (read.position - read.digit + 5.0) % 10.0 - 5.0
    return _Drum(read.digit, read.confidence, read.rolling, turned)


def _higher_drum(probs: npt.NDArray[np.float64], carry: float, calibration: Calibration) -> _Drum:
    """A drum read knowing how far the drums below it make it turn (`carry`, digits).

    Taken back by `carry`, the drum should stand on a digit: its reached digit is the
    one with the most mass within SLACK_TENTHS of it. Mass half-way between two digits
    when nothing below turns it is a misread or a slipped drum: no confident digit.
    """
    per = steps_of(probs)
    shift = round(carry * per)
    settled = np.roll(_turn(probs), -shift) if shift else _turn(probs)
    slack = _steps(SLACK_TENTHS, per)
    mass = settled[_near_digits(per, slack)].sum(axis=1)
    digit = int(np.argmax(mass))
    own = (_circular_mean(settled, per * digit, _steps(4, per)) / per) - digit
    rolling = carry >= SETTLED_TENTHS / 10 or abs(own) > SETTLED_TENTHS / 10 + 0.05
    return _Drum(digit, calibration(float(mass[digit])), rolling, carry + own)


def assemble(probs: npt.NDArray[np.float64], calibration: Calibration) -> Reading:
    """The reading of a row of drums (most significant first) with the carry applied:
    a drum turns by the last drum's turn while every drum below it shows 9."""
    n = probs.shape[0]
    drums: list[_Drum] = [_last_drum(probs[n - 1], calibration)]
    carry = max(0.0, drums[0].turned) if drums[0].digit == 9 else 0.0
    for i in range(n - 2, -1, -1):
        drum = _higher_drum(probs[i], carry, calibration)
        drums.append(drum)
        if drum.digit != 9:
            carry = 0.0
    drums.reverse()
    return Reading(
        "".join(str(d.digit) for d in drums),
        tuple(round(float(np.clip(d.confidence, 0.0, 1.0)), 3) for d in drums),
        tuple(d.rolling for d in drums),
        approaching=drums[-1].turned < -APPROACHING,
    )


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class ModelInfo:
    """What the model file's sidecar JSON says: how to feed it and how to trust it."""

    temperature: float
    calibration: Calibration
    classes: int = CLASSES  # steps of the whole turn: 100 (tenths) or 200 (twentieths)


def _load_info(path: Path) -> ModelInfo:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ModelError(f"classifier model metadata {path} is missing") from err
    except (OSError, ValueError) as err:
        raise ModelError(f"classifier model metadata {path} is unreadable: {err}") from err
    try:
        classes = meta["classes"]
        expected = {
            "input": [INPUT_H, INPUT_W],
            "crop": [CROP_H, CROP_W],
            "classes": classes if classes in [10 * s for s in STEPS_PER_DIGIT] else CLASSES,
            "outputs": classes + 1 if isinstance(classes, int) else OUTPUTS,
        }
        for key, value in expected.items():
            if meta[key] != value:
                raise ModelError(
                    f"classifier model {path.name}: {key} is {meta[key]!r}, this code "
                    f"expects {value!r} (retrain with scripts/train_classifier.py)"
                )
        raw = tuple(float(x) for x in meta["calibration"]["raw"])
        conf = tuple(float(x) for x in meta["calibration"]["confidence"])
        below = float(meta["calibration"].get("below", 1.0))
        last = float(meta["calibration"].get("last", 1.0))
        temperature = float(meta["temperature"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"classifier model metadata {path} is incomplete: {err!r}") from err
    if len(raw) < 2 or len(raw) != len(conf) or any(b < a for a, b in itertools.pairwise(raw)):
        raise ModelError(f"classifier model metadata {path}: calibration knots are invalid")
    if not temperature > 0:
        raise ModelError(f"classifier model metadata {path}: temperature must be > 0")
    if not below >= 0.0:
        raise ModelError(f"classifier model metadata {path}: calibration.below must be >= 0")
    if not 0.0 <= last <= 1.0:
        raise ModelError(f"classifier model metadata {path}: calibration.last must be 0..1")
    return ModelInfo(temperature, Calibration(raw, conf, below, last), int(classes))


class ClassifierEngine:
    """The trained drum classifier behind the OCR engine interface.

    One OpenCV network per thread (cv2.dnn nets are not safe to share between threads
    running at once), loaded once; a frame is one forward pass over all its cells.
    """

    name = "classifier"

    def __init__(self, model_path: str | Path | None = None, gate: float = DEFAULT_GATE) -> None:
        self.model_path = Path(model_path) if model_path is not None else DEFAULT_MODEL
        self.gate = gate  # below it a reading is withheld (plausibility.min_confidence)
        self.info = _load_info(self.model_path.with_suffix(".json"))
        self._local = threading.local()
        self._net()  # fail now, with the reason, not on the first frame

    def _net(self) -> Any:
        net = getattr(self._local, "net", None)
        if net is None:
            if not self.model_path.is_file():
                raise ModelError(
                    f"classifier model {self.model_path} is missing "
                    "(reinstall edgemeter, or train one with scripts/train_classifier.py)"
                )
            try:
                net = cv2.dnn.readNetFromONNX(str(self.model_path))
            except cv2.error as err:
                raise ModelError(
                    f"classifier model {self.model_path} is corrupt or not ONNX: {err}"
                ) from err
            if net.empty():
                raise ModelError(f"classifier model {self.model_path} holds no network")
            self._local.net = net
        return net

    def probabilities(self, inputs: FloatArray) -> npt.NDArray[np.float64]:
        """Distribution over the turn's steps and not-a-digit, shape (n, classes + 1)."""
        net = self._net()
        net.setInput(np.ascontiguousarray(inputs, dtype=np.float32))
        outputs = self.info.classes + 1
        logits = np.asarray(net.forward(), dtype=np.float64).reshape(len(inputs), outputs)
        logits /= self.info.temperature
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float64)

    def classify_cell(
        self, cell_image: npt.NDArray[Any], light: bool | None = None
    ) -> DrumPosition:
        """Where the drum in one cell image stands (the crop of one drum's window).

        `light`: whether the digit is lighter than the drum; None: judged from the
        image (`light_on_dark`).
        """
        probs = self.probabilities(normalise(cell_image, light)[None, None])
        return decode(probs[0], self.info.calibration)

    def read(self, window: npt.NDArray[Any], digits: int) -> Reading | NoReading:
        return self.read_seen(window, digits)[0]

    def read_seen(
        self, window: npt.NDArray[Any], digits: int
    ) -> tuple[Reading | NoReading, Cells | None]:
        """The reading, and the drums as the network saw them (for `snapshot`): each
        cell's corners are the cut in window pixels, its glyph the network's input."""
        return self.read_drums(window, digits)[:2]

    def read_drums(self, window: npt.NDArray[Any], digits: int) -> Seen:
        """`read_seen`, and the network's distribution for each drum of the reading
        (None without one): what a second engine needs to settle a drum this one
        cannot (`tiebreak`)."""
        try:
            grey = to_grey(window)
        except ValueError as err:
            return NoReading(str(err)), None, None
        if digits == 1:
            # A one-drum window is the drum's crop itself.
            if _spread(grey) < MIN_CONTRAST:
                return NoReading("window is blank (no contrast)"), None, None
            light = light_on_dark(grey)
            single = normalise(grey, light)
            probs = self.probabilities(single[None, None])
            h, w = grey.shape
            corners = ((0.0, 0.0), (float(w), 0.0), (float(w), float(h)), (0.0, float(h)))
            seen = _seen([corners], [single], [light], h, 0.0)
            return assemble(probs, self.info.calibration), seen, probs
        rows = row_hypotheses(grey, digits)
        if isinstance(rows, NoReading):
            return self._smoothed_look(grey, digits, (rows, None, None))
        tallest = max(row.digit_height for row in rows)
        if (
            len(rows[0].found) == digits
            and len(rows) > 1
            and rows[0].digit_height >= SMALL_PRINT * tallest
        ):
            # Every drum found whole on one grid: that is the counter, unless its
            # drums do not read as digits or it is small print under a taller row
            # (a serial number, whole while glare or a turning drum breaks up the
            # counter's). The network's time goes to the rest only then.
            first = self._choose(grey, rows[:1], digits)
            if isinstance(first[0], Reading) and first[0].confidence >= SURE:
                return first
        looked = self._second_look(grey, rows, digits, self._choose(grey, rows, digits))
        return self._smoothed_look(grey, digits, looked)

    def _second_look(self, grey: Image, rows: list[Row], digits: int, first: Seen) -> Seen:
        """`first` if it clears the gate; else the most confident reading of the same
        placements cut TALLER that `rescues` it (with no bar of its own on the drums
        `first` was unsure of); a taller cut shows more of a digit rolling in, so an
        approaching reading never does."""
        if self._clears(first):
            return first
        taller = (
            self._choose(grey, [taller_row(r, scale) for r in rows], digits) for scale in TALLER
        )
        return most_sure(first, taller, self.gate, unsure_at=0.0)

    def _smoothed_look(self, grey: Image, digits: int, first: Seen) -> Seen:
        """`first` if it clears the gate; else the most confident reading of a row found
        on a SMOOTHED copy of the window (cut from the window itself, with its own
        second look) that `rescues` it."""
        if self._clears(first):
            return first
        looks = (
            self._second_look(grey, rows, digits, self._choose(grey, rows, digits))
            for rows in smoothed_rows(grey, digits)
        )
        return most_sure(first, looks, self.gate, unsure_at=RESCUED)

    def _digit_row(self, reading: Reading) -> bool:
        """Whether a row reads as digits: with some confidence, or more than half of its
        drums at the gate (glare over one drum and a last drum mid-roll leave a
        counter's row unsure, but its other drums still read; a placement one drum
        off, half on the bezel, reads half of them at most)."""
        sure = sum(c >= self.gate for c in reading.confidences)
        return reading.confidence >= RIVAL or 2 * sure > len(reading.confidences)

    def _clears(self, seen: Seen) -> bool:
        return isinstance(seen[0], Reading) and seen[0].confidence >= self.gate

    def _choose(self, grey: Image, rows: list[Row], digits: int) -> Seen:
        """Read every placement of the row and keep the one whose drums read best.

        A placement that puts a drum on the bezel or the meter's face gives that cell
        no confident digit (or no contrast at all), so the true placement stands out.
        Rows of digits much smaller than the tallest that reads are small print, not
        the counter. Two placements that both read with some confidence are two
        counters the image could show: no reading, rather than a guess.
        """
        cuts: dict[tuple[int, int], int] = {}
        crops: list[Image] = []
        places: list[CellGeometry] = []
        layout: list[list[int]] = []
        for row in rows:
            index = []
            for where in row_geometry(row):
                key = (round(where.centre[0]), round(where.centre[1]))
                if key not in cuts:
                    cuts[key] = len(crops)
                    crops.append(cut(grey, where))
                    places.append(where)
                index.append(cuts[key])
            layout.append(index)
        blank = [_spread(c) < MIN_CONTRAST for c in crops]
        lights = [light_on_dark(c) for c in crops]
        inputs = [normalise(c, light) for c, light in zip(crops, lights, strict=True)]
        probs = self.probabilities(np.stack(inputs)[:, None])
        readings: list[tuple[Reading, list[int]]] = []
        heights: list[float] = []
        for row, index in zip(rows, layout, strict=True):
            if not any(blank[i] for i in index):
                readings.append((assemble(probs[index], self.info.calibration), index))
                heights.append(row.digit_height)
        if not readings:
            return NoReading(f"a cell of the {digits} is blank (no contrast)"), None, None
        # The window is drawn around the counter: its digits are the tallest that read.
        tallest = max(
            (h for (r, _), h in zip(readings, heights, strict=True) if self._digit_row(r)),
            default=0.0,
        )
        readings = [
            pair for pair, h in zip(readings, heights, strict=True) if h >= SMALL_PRINT * tallest
        ]
        readings.sort(key=lambda pair: -pair[0].confidence)
        best, index = readings[0]
        seen = _seen(
            [corners_of(places[i]) for i in index],
            [inputs[i] for i in index],
            [lights[i] for i in index],
            rows[0].digit_height,
            rows[0].angle,
        )
        rivals = [r for r, _ in readings[1:] if r.digits != best.digits]
        if rivals and rivals[0].confidence >= RIVAL:
            found = len(rows[0].found)
            return (
                NoReading(
                    f"found {found} digit cells, expected {digits} "
                    "(cannot tell at which end the missing one is)"
                ),
                seen,
                None,
            )
        return best, seen, probs[index]


def keeps_sure(first: Reading | NoReading, second: Reading, gate: float) -> bool:
    """Whether `second` reads every drum that `first` read at the gate as `first` did."""
    if isinstance(first, NoReading):
        return True
    return all(
        a == b
        for a, b, confidence in zip(first.digits, second.digits, first.confidences, strict=True)
        if confidence >= gate
    )


def rescues(
    first: Reading | NoReading, later: Reading, gate: float, unsure_at: float = RESCUED
) -> bool:
    """Whether a later look's reading may stand for a withheld `first`: it clears
    SECOND_LOOK, is not approaching, keeps every drum `first` was sure of, and reads
    each drum `first` was not sure of (every drum, if `first` is no reading) at
    `unsure_at`."""
    if later.confidence < max(SECOND_LOOK, gate) or later.approaching:
        return False
    if isinstance(first, NoReading):
        return later.confidence >= unsure_at
    unsure = [
        confidence
        for confidence, before in zip(later.confidences, first.confidences, strict=True)
        if before < gate
    ]
    return keeps_sure(first, later, gate) and min(unsure, default=1.0) >= unsure_at


def most_sure(first: Seen, looks: Iterable[Seen], gate: float, unsure_at: float) -> Seen:
    """The most confident of `looks` whose reading `rescues` `first`'s, else `first`."""
    best, best_confidence = first, 0.0
    for seen in looks:
        got = seen[0]
        if (
            isinstance(got, Reading)
            and got.confidence > best_confidence
            and rescues(first[0], got, gate, unsure_at)
        ):
            best, best_confidence = seen, got.confidence
    return best


def taller_row(row: Row, scale: float) -> Row:
    return dataclasses.replace(row, digit_height=row.digit_height * scale)


def smoothed_rows(grey: Image, digits: int) -> Iterator[list[Row]]:
    """The row hypotheses found on each SMOOTHED copy of the window that has any."""
    for sigma in SMOOTHED:
        rows = row_hypotheses(cv2.GaussianBlur(grey, (0, 0), sigma), digits)
        if not isinstance(rows, NoReading):
            yield rows


def corners_of(where: CellGeometry) -> tuple[tuple[float, float], ...]:
    """The corners (TL, TR, BR, BL) of the cut `cut` takes at `where`, in window pixels."""
    out_h = max(4, round(CROP_H * where.digit_height))
    out_w = max(3, round(CROP_W * where.digit_height))
    matrix = cv2.getRotationMatrix2D(where.centre, -where.angle, 1.0)
    matrix[0, 2] += out_w / 2 - where.centre[0]
    matrix[1, 2] += out_h / 2 - where.centre[1]
    back = cv2.invertAffineTransform(matrix)
    levelled = np.array([[0, 0, 1], [out_w, 0, 1], [out_w, out_h, 1], [0, out_h, 1]], float)
    return tuple((float(x), float(y)) for x, y in levelled @ back.T)


def _seen(
    corners: list[tuple[tuple[float, float], ...]],
    inputs: list[FloatArray],
    lights: list[bool],
    height: float,
    angle: float,
) -> Cells:
    """The drums as the network got them, in the form `snapshot` draws: the cut's
    corners, and the network's input (already computed for the reading) shown dark on
    white like the Tesseract glyphs."""
    cells = []
    for quad, net_input, light in zip(corners, inputs, lights, strict=True):
        xs = [x for x, _ in quad]
        ys = [y for _, y in quad]
        box = (round(min(xs)), round(min(ys)), round(max(xs) - min(xs)), round(max(ys) - min(ys)))
        shown = np.asarray(255 - np.clip((net_input + 0.5) * 255, 0, 255), np.uint8)
        glyph = Glyph(shown, "settled", 1.0, 0.0)
        cells.append(Cell(box, quad, light, shown, (glyph,)))
    majority = 2 * sum(lights) >= len(lights)
    return Cells(tuple(cells), angle, majority, height, len(cells))


def row_geometry(row: Row) -> list[CellGeometry]:
    """The cut of every drum of a row hypothesis, in window pixels."""
    return [CellGeometry(centre, row.angle, row.digit_height) for centre in row.centres]


def _spread(grey: Image) -> float:
    lo, hi = grey_percentiles(grey, (2, 98))
    return hi - lo
