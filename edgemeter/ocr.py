"""OCR stage: digit-window image in, `Reading` (or `NoReading` with a reason) out.

The window is the user's rough crop around a roller counter. The stage finds the row
of digits in it (whatever bezel, labels and margins surround it), levels the row,
splits it into exactly `digits` drum cells, cleans each cell into dark glyphs on white
at the size Tesseract reads best, and has Tesseract (in-process through tesserocr, or
the CLI through pytesseract) read every glyph in five variants at once. A digit's
confidence comes from how many variants agree, not from Tesseract's own score, which
stays high on most of its misreads.

It prefers no reading to a guess: a blank window, the wrong number of cells, an empty
cell or an unreadable glyph is a `NoReading` whose reason says what was seen. A drum
caught between two digits is reported as the digit it is leaving (the value the
counter has reached) and flagged as rolling; a part digit is read with less trust the
less of it shows, so an unclear drum gets a low confidence rather than a wrong digit.

It does not judge whether the value is plausible (`plausibility` does), does not cut
the window out of the frame (`window` does) and keeps no state between frames.
Stages, each a small function: `to_grey` -> `_find_row` (the digit row, its polarity
and pitch) -> `_level` -> `_cut` / `_clean` per cell (polarity, light, binarisation,
glyph parts) -> `_glyphs` (settled, leaving or entering) -> `recognise_cells`.
"""

from __future__ import annotations

import dataclasses
import html
import itertools
import logging
import math
import os
import re
import shutil
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from edgemeter.config import OcrConfig, PlausibilityConfig

# Tesseract's OpenMP threads only fight each other over one small image at a time.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")

log = logging.getLogger(__name__)

# The confidence a reading needs when the caller does not say (the config's default).
DEFAULT_GATE = PlausibilityConfig().min_confidence

Image = npt.NDArray[np.uint8]
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Reading:
    """The digits read from one window, most significant first.

    `digits` is the value the counter has reached: a drum caught between two digits
    is reported as the lower one (the one leaving the cell) and flagged in `rolling`.
    `approaching`: the last drum stands just short of its digit (the way real drums
    often come to rest, and the way a drum still rolling in looks a moment before it
    gets there); an engine that cannot tell leaves it False.
    """

    digits: str
    confidences: tuple[float, ...]
    rolling: tuple[bool, ...]
    approaching: bool = False

    @property
    def confidence(self) -> float:
        """The weakest digit decides how far the whole reading can be trusted."""
        return min(self.confidences) if self.confidences else 0.0


@dataclass(frozen=True)
class NoReading:
    reason: str


class OcrUnavailable(Exception):
    """No Tesseract backend works here; the message says what to install or fix."""


class OcrFailure(Exception):
    """One recognition call failed (timeout, crash); the frame gets a NoReading."""


# Blobs within this fraction of the commonest height are the row's settled digits.
BAND_TOLERANCE = 0.12
# Tesseract's LSTM reads digits best 32-48 px tall, with a white margin around them.
GLYPH_PX = 40
BORDER_PX = 10
# Below this spread of grey levels (2nd to 98th percentile) there is nothing to read.
MIN_CONTRAST = 12.0
# A settled digit sits within this much of the row's band (in digit heights); further
# off and the drum is turning: a tenth of the drum step, where the digit starts to be
# cut by the cell edge. Mechanical slack between drums stays inside it.
ROLL_SHIFT = 0.14
# In a one-digit window (a crop of one drum) the digit is about this much of its height.
LONE_DIGIT = 0.65
# Confidence factor by the share of variant reads that agree (0/5 .. 5/5). Measured on
# simulated counters and meterdigits train, digits read alike in all five variants are
# right 98-99.8 % of the time, 4/5 85-93 %, 3/5 about 70 %. A misread that repeats
# on every frame passes any "same value three times" check, so only unanimous reads
# clear the plausibility stage's default min_confidence (0.6).
AGREEMENT = (0.0, 0.15, 0.25, 0.4, 0.55, 1.0)
# A glyph no line of the sheet could read, read on its own: right about half the time.
SINGLE_READ = 0.4
# Rows of digit-like blobs `row_hypotheses` offers (the best few, other grids): with
# drums of two colours, the row of one colour can outscore the whole counter's.
ROW_CANDIDATES = 3
# Tesseract page segmentation modes used here.
PSM_BLOCK = 6  # a uniform block of text: the sheet of glyph lines
PSM_LINE = 7
PSM_CHAR = 10
_WHITELIST = "0123456789"


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, eq=False)
class Glyph:
    """One digit image, cleaned and sized for Tesseract (dark on white).

    `role`: `settled` in the row's band, `leaving` (moved up: the digit the drum is
    leaving) or `entering` (coming in from below). `visible` is the fraction of the
    digit's height in view, `shift` its offset from the band in digit heights
    (negative: up).
    """

    image: Image
    role: Literal["settled", "leaving", "entering"]
    visible: float
    shift: float


@dataclass(frozen=True, eq=False)
class Cell:
    """One drum: where it is in the window, and what was cut out of it."""

    box: Box  # x, y, width, height in window pixels (bounding box of `corners`)
    corners: tuple[tuple[float, float], ...]  # TL, TR, BR, BL in window pixels
    light_on_dark: bool
    ink: Image  # the cell's chosen glyph parts (255 = ink), levelled and scaled
    glyphs: tuple[Glyph, ...]  # the best-placed first; empty if the cell shows nothing

    @property
    def rolling(self) -> bool:
        return bool(self.glyphs) and self.glyphs[0].role != "settled"


@dataclass(frozen=True, eq=False)
class Cells:
    """The preprocessing result: cell boxes in window pixels and the cleaned images.

    `snapshot` draws these so a user tuning the window sees what the OCR saw.
    """

    cells: tuple[Cell, ...]
    angle: float  # degrees the window was turned to level the digit row
    light_on_dark: bool  # polarity of most drums
    digit_height: float  # of a settled digit, window pixels
    found: int  # cells whose whole digit located the row (the rest were inferred)

    @property
    def boxes(self) -> tuple[Box, ...]:
        return tuple(cell.box for cell in self.cells)


@dataclass(frozen=True)
class Symbol:
    """One character Tesseract returned: its text, confidence 0..1 and box centre."""

    text: str
    confidence: float
    x: float
    y: float


class Recogniser(Protocol):
    """A Tesseract backend: an image of dark glyphs on white in, symbols out."""

    name: str

    def recognise(self, image: Image, psm: int, whitelist: bool = True) -> tuple[Symbol, ...]: ...


class OcrEngine(Protocol):
    name: str

    def read(self, window: npt.NDArray[Any], digits: int) -> Reading | NoReading: ...

    def read_seen(
        self, window: npt.NDArray[Any], digits: int
    ) -> tuple[Reading | NoReading, Cells | None]:
        """The reading, and the digit cells as this engine cut them (None: it found
        none), for the snapshot and the web page at no extra cost."""
        ...


def _u8(image: Any) -> Image:
    """OpenCV's results as the uint8 arrays they are."""
    return np.asarray(image, dtype=np.uint8)


# --------------------------------------------------------------------------- grey


def to_grey(window: npt.NDArray[Any]) -> Image:
    """The window as 8-bit grey (BGR, BGRA or grey in); ValueError if not an image."""
    arr = np.asarray(window)
    if arr.size == 0:
        raise ValueError(f"window is empty: shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.nan_to_num(arr.astype(np.float64)), 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if arr.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        arr = _u8(cv2.cvtColor(arr, code))
    if arr.ndim != 2:
        raise ValueError(f"window is not an image: shape {np.asarray(window).shape}")
    return np.ascontiguousarray(arr)


def contrast(grey: Image) -> float:
    """Spread of grey levels, ignoring the 2 % extremes (dead pixels, specular dots)."""
    lo, hi = grey_percentiles(grey, (2, 98))
    return hi - lo


def grey_percentiles(grey: Image, qs: tuple[float, ...]) -> tuple[float, ...]:
    """np.percentile(grey, qs) (linear) of an 8-bit image, to the last bit, from its
    histogram: sorting the pixels costs more, and the engines ask this of every cell.
    The levels for every q are looked up in one call: the lookups, not the
    arithmetic, are what a cell's three or four percentiles cost."""
    below = np.cumsum(np.bincount(grey.ravel(), minlength=256))
    n = int(below[-1])
    at = [(n - 1) * (q / 100) for q in qs]
    floors = [math.floor(v) for v in at]
    wanted = [*floors, *(min(i + 1, n - 1) for i in floors)]
    levels = np.searchsorted(below, wanted, side="right").tolist()
    out = []
    for k, (v, i) in enumerate(zip(at, floors, strict=True)):
        lo, hi = levels[k], levels[k + len(qs)]
        t = v - i
        if v >= n - 1:
            out.append(float(hi))
        else:
            out.append(lo + (hi - lo) * t if t < 0.5 else hi - (hi - lo) * (1 - t))
    return tuple(out)


def _odd(n: float) -> int:
    k = max(3, round(n))
    return k if k % 2 else k + 1


def _ink(grey: Image, light_on_dark: bool) -> Image:
    """Ink bright, background dark, whatever the drum's polarity."""
    return grey if light_on_dark else _u8(cv2.bitwise_not(grey))


# --------------------------------------------------------------------------- the row


@dataclass(frozen=True)
class _Blob:
    x: int
    y: int
    w: int
    h: int
    area: int

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    @property
    def bottom(self) -> int:
        return self.y + self.h

    @property
    def bar(self) -> bool:
        """A thin filled bar: a 1 in some fonts, but also a separator between drums."""
        return self.w < 0.22 * self.h and self.area > 0.75 * self.w * self.h

    def union(self, other: _Blob) -> _Blob:
        x0, y0 = min(self.x, other.x), min(self.y, other.y)
        x1, y1 = max(self.x + self.w, other.x + other.w), max(self.bottom, other.bottom)
        return _Blob(x0, y0, x1 - x0, y1 - y0, self.area + other.area)


@dataclass(frozen=True)
class _Row:
    """Where the digits sit: a line through their centres and a regular pitch."""

    light_on_dark: bool
    slope: float  # dy/dx of the line through the digit centres
    intercept: float  # y of that line at x = 0
    top: float  # a settled digit's top relative to the line (negative)
    bottom: float  # a settled digit's bottom relative to the line
    pitch: float  # drum-to-drum distance along x
    centres: tuple[float, ...]  # x of each cell centre, most significant first
    found: frozenset[int]  # cells whose whole digit was found
    opposite: frozenset[int]  # cells found in the other polarity

    @property
    def digit_height(self) -> float:
        return self.bottom - self.top


def _masks(grey: Image, light_on_dark: bool, spread: float) -> list[Image]:
    """Several binarisations of one polarity: the digit size is not known yet, and a
    local threshold only separates a digit from its drum when its block spans both."""
    ink = _ink(grey, light_on_dark)
    offset = max(3.0, 0.08 * spread)
    out = []
    for frac in (0.35, 0.7, 1.4):
        block = _odd(max(11.0, frac * grey.shape[0]))
        mean_c = cv2.ADAPTIVE_THRESH_MEAN_C
        out.append(_u8(cv2.adaptiveThreshold(ink, 255, mean_c, cv2.THRESH_BINARY, block, -offset)))
    _, otsu = cv2.threshold(ink, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    out.append(_u8(otsu))
    return out


def _labels(mask: Image) -> int:
    """The narrowest label type that can number every component of the mask: writing
    the label image is most of the labelling's time, and 16 bits halve it. A 2x2
    block's pixels all touch, so each holds at most one 8-connected component."""
    height, width = mask.shape
    blocks = ((height + 1) // 2) * ((width + 1) // 2)
    return cv2.CV_16U if blocks < np.iinfo(np.uint16).max else cv2.CV_32S


def _blobs(mask: Image, min_h: float) -> tuple[list[_Blob], list[_Blob]]:
    """Connected components shaped like a whole digit, clear of the window's edge;
    and every component of about digit size (for telling drum faces from digits)."""
    height, width = mask.shape
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=_labels(mask))
    digits, sized = [], []
    stats = stats[1:n]
    # Most components are specks: drop them before Python sees them one by one.
    heights = stats[:, cv2.CC_STAT_HEIGHT]
    keep = (heights >= min_h) & (heights <= 0.98 * height) & (stats[:, cv2.CC_STAT_WIDTH] >= 2)
    for x, y, w, h, area in stats[keep].tolist():
        sized.append(_Blob(x, y, w, h, area))
        if w > 1.1 * h or not 0.12 <= area / (w * h) <= 0.97:
            continue
        if x == 0 or y == 0 or x + w >= width or y + h >= height:
            continue  # the bezel, or a digit the window cuts
        digits.append(sized[-1])
    return digits, sized


def _median(values: Sequence[float]) -> float:
    """np.median of a short list, without numpy's overhead on a handful of numbers
    (row finding takes thousands of medians a frame)."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2


def _pairwise_sum(values: Sequence[float]) -> float:
    """The sum as numpy's pairwise summation adds it up, so that a tie-break on it
    falls as it did when the sum was numpy's."""
    n = len(values)
    if n < 8:
        total = 0.0
        for v in values:
            total += v
        return total
    if n > 128:
        half = n // 2
        half -= half % 8
        return _pairwise_sum(values[:half]) + _pairwise_sum(values[half:])
    acc = list(values[:8])
    i = 8
    while i < n - n % 8:
        acc = [a + v for a, v in zip(acc, values[i : i + 8], strict=True)]
        i += 8
    total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    for v in values[i:]:
        total += v
    return total


def _line_through(blobs: Sequence[_Blob]) -> tuple[float, float]:
    """The line through the most blob centres (tried through every pair), refitted on
    them. Turning drums sit off the line, and they come together at the right end
    (a carry turns several), where they would tilt any average."""
    if len(blobs) < 2:
        return 0.0, blobs[0].cy
    tol = max(1.0, 0.05 * _median([b.h for b in blobs]))
    points = [(b.cx, b.cy) for b in blobs]
    # Plain floats, not numpy: a row's few blobs are tried thousands of times a frame,
    # and numpy's cost per call would be most of the time.
    best: tuple[int, float, float, float] | None = None  # blobs on it, error, the line
    for i, (x0, y0) in enumerate(points):
        for x1, y1 in points[i + 1 :]:
            dx = x1 - x0
            if not abs(dx) > 1:
                continue
            slope = min(max((y1 - y0) / dx, -0.18), 0.18)
            icpt = y0 - slope * x0
            errors = [abs(y - icpt - slope * x) for x, y in points]
            near = [e for e in errors if e < tol]
            count = len(near)
            if best is not None and count < best[0]:
                continue
            # Summed as numpy did, the far errors as zeros: a tie falls the same way.
            spread = _pairwise_sum([e if e < tol else 0.0 for e in errors])
            # The most blobs on the line, then the tightest; the first such pair on a tie.
            if best is None or count > best[0] or spread < best[1]:
                best = (count, spread, slope, icpt)
    if best is None:
        return 0.0, _median([y for _, y in points])
    _, _, slope, icpt = best
    on = [b for b, (x, y) in zip(blobs, points, strict=True) if abs(y - icpt - slope * x) < tol]
    if len(on) < 2:
        return 0.0, _median([y for _, y in points])
    slope = min(max(_fit([b.cx for b in on], [b.cy for b in on])[0], -0.18), 0.18)
    return slope, _median([b.cy - slope * b.cx for b in on])


def _fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares line y = slope * x + intercept through two or more points of
    distinct x (np.polyfit's answer, without its overhead in the grid search)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = float(sxy / sxx)
    return slope, float(my - slope * mx)


def _groups(blobs: Sequence[_Blob]) -> list[list[_Blob]]:
    """Blobs of similar height along one straight line: candidate digit rows.

    Seeded by the tallest blobs (whole digits); a turning drum's part digit is
    shorter and off the line, so it joins only while most of it is in view.
    """
    out: list[list[_Blob]] = []
    # Member lists keep the blobs' order, so the ids in order name a set of them.
    seen: set[tuple[int, ...]] = set()
    # The seeds of one row mostly gather the same blobs: their line is fitted once.
    lines: dict[tuple[int, ...], tuple[float, float]] = {}
    where = [(b, b.h, b.cx, b.cy) for b in blobs]
    for _, seed_h, _, seed_cy in sorted(where, key=lambda t: -t[1]):
        similar = [t for t in where if 0.7 <= t[1] / seed_h <= 1.15]
        band = 0.45 * seed_h
        members = [b for b, _, _, cy in similar if abs(cy - seed_cy) < band]
        if len(members) < 2:
            continue
        key = tuple(map(id, members))
        line = lines.get(key)
        if line is None:
            line = lines[key] = _line_through(members)
        slope, icpt = line
        band = 0.3 * seed_h
        members = [b for b, _, cx, cy in similar if abs(cy - icpt - slope * cx) < band]
        key = tuple(map(id, members))
        if len(members) >= 2 and key not in seen:
            seen.add(key)
            out.append(members)
    return out


@dataclass(frozen=True)
class _Grid:
    anchor: float  # x of slot 0
    pitch: float
    slots: dict[int, _Blob]  # from 0
    off_grid: int  # members that fit no slot

    @property
    def span(self) -> int:
        return max(self.slots) + 1


def _place(members: Sequence[_Blob], anchor: float, pitch: float) -> _Grid | None:
    slots: dict[int, _Blob] = {}
    off = 0
    for b in members:
        r = (b.cx - anchor) / pitch
        k = round(r)
        if abs(r - k) > 0.22:
            off += 1
        else:
            slots[k] = slots[k].union(b) if k in slots else b
    if len(slots) < 2:
        return None
    ks = sorted(slots)
    slope, icpt = _fit(ks, [slots[k].cx for k in ks])
    if slope <= 0:
        return None
    return _Grid(float(icpt + slope * ks[0]), float(slope), {k - ks[0]: slots[k] for k in ks}, off)


def _grid(members: Sequence[_Blob]) -> _Grid | None:
    """The regular pitch that puts the most members on slots: drums are evenly
    spaced, and a separator between two drums sits half-way, off the grid."""
    height = _median([b.h for b in members])
    wide = sorted(b.cx for b in members if not b.bar) or sorted(b.cx for b in members)
    pitches = {
        round((b - a) / m, 1)
        for a, b in itertools.pairwise(wide)
        for m in (1, 2, 3)
        if 0.45 * height <= (b - a) / m <= 1.8 * height
    }
    centres = sorted(b.cx for b in members)
    # A slot's members lie within 0.22 pitch of it, so slots in ascending order hold
    # ascending centres and `_place` fits a positive pitch to any two of them: it
    # accepts every placement `_placement` weighs, and only the winner's grid is built.
    where = _placement(centres, wide, pitches)
    return None if where is None else _place(members, *where)


def _placement(
    centres: Sequence[float], anchors: Sequence[float], pitches: Iterable[float]
) -> tuple[float, float] | None:
    """The (anchor, pitch) that puts the most centres on slots and the fewest off
    them, then the widest pitch; the first found on a tie."""
    best, where = -math.inf, None
    for pitch in pitches:
        bonus = 1e-3 * pitch
        if len(centres) + bonus <= best:
            continue  # every member on a slot of its own would not beat the best
        for anchor in anchors:
            # The score needs only how many slots are taken and how many members miss
            # one: the grid itself is built only for the winner.
            taken = _slots_taken(centres, anchor, pitch, bonus, best)
            if taken is None:
                continue
            score = taken[0] - 0.3 * taken[1] + bonus
            if taken[0] >= 2 and score > best:
                best, where = score, (anchor, pitch)
    return where


def _slots_taken(
    centres: Sequence[float], anchor: float, pitch: float, bonus: float, best: float
) -> tuple[int, int] | None:
    """How many slots of the grid the centres (ascending) take, and how many centres
    fall off it; None as soon as the grid cannot score above `best` (see `_grid`)."""
    taken = off = lost = 0
    last = None
    for cx in centres:
        r = (cx - anchor) / pitch
        k = round(r)
        if abs(r - k) > 0.22:
            off += 1
        elif k != last:
            # Ascending centres take ascending slots: a repeat can only be the last one.
            taken, last = taken + 1, k
            continue
        lost += 1
        if len(centres) - lost - 0.3 * off + bonus <= best:
            return None
    return taken, off


def _encloses(frame: _Blob, glyphs: Sequence[_Blob]) -> bool:
    """Whether `frame` holds a glyph of the other polarity: then it is a light drum's
    face around a dark digit, and not a digit, though just as regular."""
    for g in glyphs:
        inside = frame.x <= g.x and g.x + g.w <= frame.x + frame.w
        inside = inside and frame.y <= g.y and g.bottom <= frame.bottom
        # a glyph, not the hole of a 0 (holes are filled ellipses)
        if inside and g.h >= 0.5 * frame.h and g.area < 0.7 * g.w * g.h and g.w > 0.2 * g.h:
            return True
    return False


@dataclass(frozen=True)
class _Candidate:
    score: float
    light_on_dark: bool
    grid: _Grid


def _best_rows(grey: Image, digits: int, spread: float) -> list[_Candidate]:
    """Rows of digit-like blobs over both polarities and several thresholds, the most
    convincing first: about `digits` of them on a regular grid, tall, no drum faces."""
    min_h = max(8.0, 0.08 * grey.shape[0])
    rows: list[tuple[bool, _Grid, float]] = []
    every: dict[bool, list[_Blob]] = {True: [], False: []}
    for light in (True, False):
        for mask in _masks(grey, light, spread):
            blobs, sized = _blobs(mask, min_h)
            every[light].extend(sized)
            for members in _groups(blobs):
                if all(b.bar for b in members):
                    continue  # separators, or a row of 1s nobody could check
                grid = _grid(members)
                if grid is not None:
                    rows.append((light, grid, _median([b.h for b in members])))
    # Only glyph-like blobs can make a drum face of the other polarity (`_encloses`).
    glyphs = {
        light: [g for g in blobs if g.area < 0.7 * g.w * g.h and g.w > 0.2 * g.h]
        for light, blobs in every.items()
    }
    out: list[_Candidate] = []
    for light, grid, med_h in rows:
        n = len(grid.slots)
        # Drum faces around dark digits: they hold a glyph of the other polarity, or
        # (when the digits touch the separators and are no blobs of their own) they
        # fill their whole pitch with ink.
        frames = sum(
            _encloses(b, glyphs[not light])
            or (b.w >= 0.88 * grid.pitch and b.area >= 0.58 * b.w * b.h)
            for b in grid.slots.values()
        )
        score = (
            min(n, digits)
            - 1.5 * max(0, grid.span - digits)
            - 0.25 * grid.off_grid
            + 0.5 * med_h / grey.shape[0]
            - (3.0 if frames * 2 >= n else 0.0)
        )
        out.append(_Candidate(score, light, grid))
    # Stable: among equal scores the first found (light digits, finest block) wins.
    return sorted(out, key=lambda c: -c.score)


def _evidence(
    grey: Image, centre: tuple[float, float], pitch: float, band: tuple[float, float]
) -> tuple[float, bool]:
    """How much of a drum's digits one extra cell shows (in digit heights), and in
    which polarity.

    A drum at the end of the row whose digit was not found whole is either turning
    (two part digits, one above the other) or of the other polarity (a red drum with
    white digits on a black-on-white counter). Bezel, screws and the meter face show
    no centred glyph parts of digit size across the band.
    """
    cx, cy = centre
    top, bottom = band
    h = bottom - top
    height, width = grey.shape
    x0, x1 = round(cx - pitch / 2), round(cx + pitch / 2)
    if x0 < -0.15 * pitch or x1 > width + 0.15 * pitch:
        return 0.0, True  # the window ends here: no drum
    x0, x1 = max(0, x0), min(width, x1)
    y0, y1 = max(0, round(cy + top - 0.6 * h)), min(height, round(cy + bottom + 0.6 * h))
    region = grey[y0:y1, x0:x1]
    if region.size == 0 or contrast(region) < MIN_CONTRAST:
        return 0.0, True
    local = (cy + top - y0, cy + bottom - y0)
    best = (0.0, True)
    for light in (True, False):
        _, parts = _parts(_cell_ink(region, light, local)[0], local)
        total = 0.0
        for part in parts:
            part_h = part.bottom - part.top
            centred = abs(x0 + (part.x0 + part.x1) / 2 - cx) <= 0.3 * pitch
            if centred and part.x1 - part.x0 <= 0.9 * pitch and 0.2 * h <= part_h <= 1.25 * h:
                total += min(part_h, h) / h
        if total > best[0]:
            best = (total, light)
    return best


@dataclass(frozen=True)
class _Found:
    """The row as the blobs show it, before any missing drum is placed."""

    light_on_dark: bool
    grid: _Grid
    slope: float
    intercept: float
    top: float
    bottom: float


def _candidates(grey: Image, digits: int) -> list[_Candidate] | NoReading:
    """`_best_rows` of the window, or why there are none."""
    spread = contrast(grey)
    if spread < MIN_CONTRAST:
        return NoReading("window is blank (no contrast)")
    cands = _best_rows(grey, digits, spread)
    if not cands:
        return NoReading("no row of digits found")
    return cands


def _found_rows(grey: Image, digits: int, count: int) -> list[_Found] | NoReading:
    """The `count` most convincing rows of whole digits in the window that could be
    the counter's; NoReading (why the best one cannot) if none."""
    cands = _candidates(grey, digits)
    if isinstance(cands, NoReading):
        return cands
    out: list[_Found] = []
    first: NoReading | None = None
    # The thresholds find the same grid many times over: a grid already taken, or one
    # already refused, would only be skipped again (and `_row_of` is not cheap).
    tried: set[tuple[object, ...]] = set()
    for cand in cands:
        grid = cand.grid
        key = (grid.anchor, grid.pitch, grid.off_grid, tuple(grid.slots.items()))
        if key in tried or any(_same_grid(grid, f.grid) for f in out):
            continue
        tried.add(key)
        found = _row_of(cand, digits)
        if isinstance(found, NoReading):
            first = first or found
            continue
        if any(_same_grid(found.grid, f.grid) for f in out):
            continue
        out.append(found)
        if len(out) == count:
            break
    if not out:
        assert first is not None
        return first
    return out


def _same_grid(a: _Grid, b: _Grid) -> bool:
    """Two grids that put the drums in the same places (other thresholds, same row)."""
    if abs(a.pitch - b.pitch) > 0.1 * a.pitch:
        return False
    offset = (b.anchor - a.anchor) / a.pitch
    return abs(offset - round(offset)) < 0.15


def _row_of(cand: _Candidate, digits: int) -> _Found | NoReading:
    """A candidate's row of whole digits; NoReading if it cannot be the counter's
    (more drums than it has, or too few to place the rest)."""
    grid = cand.grid
    span, found = grid.span, len(grid.slots)
    if span > digits:
        return NoReading(f"found {span} digit cells, expected {digits}")
    if found < max(2, digits // 3):
        return NoReading(f"found {found} digit cells, expected {digits}")
    blobs = [grid.slots[k] for k in sorted(grid.slots)]

    # The band of a settled digit comes from the most common height: a turning drum's
    # digit is cut by the aperture (shorter), while a styled drum's whole face or an
    # end digit merged with the window's frame is found taller than a digit.
    def alike(h: float) -> list[_Blob]:
        return [b for b in blobs if abs(b.h - h) <= BAND_TOLERANCE * h]

    ref_h = float(max((b.h for b in blobs), key=lambda h: (len(alike(h)), h)))
    full = alike(ref_h)
    slope, icpt = _line_through(full if len(full) >= 2 else blobs)
    full = [b for b in full if abs(b.cy - icpt - slope * b.cx) < 0.08 * ref_h] or full
    top = _median([b.y - (icpt + slope * b.cx) for b in full])
    bottom = _median([b.bottom - (icpt + slope * b.cx) for b in full])
    return _Found(cand.light_on_dark, grid, slope, icpt, top, bottom)


def _placed(found: _Found, digits: int, left: int, opposite: frozenset[int]) -> _Row:
    """The row with `left` missing drums placed before the found ones, the rest after."""
    grid = found.grid
    return _Row(
        found.light_on_dark,
        found.slope,
        found.intercept,
        found.top,
        found.bottom,
        grid.pitch,
        tuple(grid.anchor + k * grid.pitch for k in range(-left, digits - left)),
        frozenset(k + left for k in grid.slots),
        opposite,
    )


def _find_row(grey: Image, digits: int) -> _Row | NoReading:
    """The row of `digits` drums in the window, whatever its margins hold."""
    cands = _candidates(grey, digits)
    if isinstance(cands, NoReading):
        return cands
    found = _row_of(cands[0], digits)
    if isinstance(found, NoReading):
        return found
    grid, slope, icpt = found.grid, found.slope, found.intercept
    span = grid.span
    # Missing drums at the ends need evidence of a drum there, and only one way of
    # adding them may have it: otherwise the count is wrong, or the window cuts it.
    need = digits - span
    options = []
    for left in range(need + 1):
        extra = [-1 - i for i in range(left)] + [span + i for i in range(need - left)]
        proofs = []
        for k in extra:
            cx = grid.anchor + k * grid.pitch
            band = (found.top, found.bottom)
            shown, light = _evidence(grey, (cx, icpt + slope * cx), grid.pitch, band)
            proofs.append((shown, light, k + left))
        if all(p[0] >= 0.5 for p in proofs):
            options.append((left, proofs))
    if len(options) != 1:
        why = " (cannot tell at which end the missing one is)" if options else ""
        return NoReading(f"found {span} digit cells, expected {digits}{why}")
    left, proofs = options[0]
    opposite = frozenset(i for _, light, i in proofs if light != found.light_on_dark)
    return _placed(found, digits, left, opposite)


@dataclass(frozen=True)
class Row:
    """Where a row of drums may be in a window: for an engine that judges each cell
    itself (the classifier), which needs no cleaned glyphs, only the geometry.

    `centres`: each drum's band centre (window pixels, most significant first);
    `angle`: the row's direction, degrees counter-clockwise; `digit_height`: of a
    settled digit; `pitch`: drum to drum along the row; `found`: drums whose digit was
    found whole (the rest are placed by the pitch).
    """

    centres: tuple[tuple[float, float], ...]
    angle: float
    digit_height: float
    pitch: float
    found: frozenset[int]


def _public(row: _Row) -> Row:
    mid = (row.top + row.bottom) / 2
    stretch = math.hypot(1.0, row.slope)
    return Row(
        tuple((x, row.intercept + row.slope * x + mid) for x in row.centres),
        -math.degrees(math.atan(row.slope)),
        row.digit_height,
        row.pitch * stretch,
        row.found,
    )


def row_hypotheses(window: npt.NDArray[Any], digits: int) -> list[Row] | NoReading:
    """Every way the row of `digits` drums may lie in the window.

    The best few rows of found digits (ROW_CANDIDATES) each fix a line, band and
    pitch; drums missing from a found row (a turning drum, a red drum of the other
    polarity, a seven-segment digit in pieces) may sit at either end. Unlike the
    Tesseract path, which needs a glyph of its own in every extra cell, this leaves the
    choice to an engine that can tell a drum from a bezel; only placements that run off
    the window are dropped.
    """
    grey = _window_grey(window, digits)
    if isinstance(grey, NoReading):
        return grey
    founds = _found_rows(grey, digits, ROW_CANDIDATES)
    if isinstance(founds, NoReading):
        return founds
    width = grey.shape[1]
    rows = []
    for found in founds:
        grid = found.grid
        for left in range(digits - grid.span + 1):
            first = grid.anchor - left * grid.pitch
            last = first + (digits - 1) * grid.pitch
            # A drum centred beyond the window's edge: the window cuts the counter.
            if first < -0.15 * grid.pitch or last > width - 1 + 0.15 * grid.pitch:
                continue
            rows.append(_public(_placed(found, digits, left, frozenset())))
    if not rows:
        span = founds[0].grid.span
        return NoReading(f"found {span} digit cells, expected {digits} (the window cuts the row)")
    return rows


def _level(grey: Image, row: _Row) -> tuple[Image, _Row, npt.NDArray[np.float64]]:
    """Turn the window so the row is horizontal; return the affine used (2x3)."""
    xc = (row.centres[0] + row.centres[-1]) / 2
    yc = row.intercept + row.slope * xc
    angle = math.degrees(math.atan(row.slope))
    if abs(angle) < 0.3:  # not worth the resampling blur
        matrix = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        levelled, stretch = grey, 1.0
    else:
        matrix = np.asarray(cv2.getRotationMatrix2D((xc, yc), angle, 1.0), dtype=np.float64)
        size = (grey.shape[1], grey.shape[0])
        levelled = _u8(cv2.warpAffine(grey, matrix, size, borderMode=cv2.BORDER_REPLICATE))
        stretch = math.hypot(1.0, row.slope)
    flat = dataclasses.replace(
        row,
        slope=0.0,
        intercept=yc,
        pitch=row.pitch * stretch,
        centres=tuple(xc + (c - xc) * stretch for c in row.centres),
    )
    return levelled, flat, matrix


def _back(
    matrix: npt.NDArray[np.float64], points: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Levelled-window points back to window pixels."""
    inverse = np.asarray(cv2.invertAffineTransform(matrix), dtype=np.float64)
    mapped = np.array(points, dtype=np.float64) @ inverse[:, :2].T + inverse[:, 2]
    return [(float(x), float(y)) for x, y in mapped]


# --------------------------------------------------------------------------- the cells


@dataclass(frozen=True)
class _Part:
    """Stacked ink in a cell: a whole digit or the visible part of one."""

    x0: int
    x1: int
    top: int
    bottom: int
    labels: tuple[int, ...]
    areas: tuple[int, ...]  # ink pixels of each component

    def merge(self, x0: int, x1: int, top: int, bottom: int, label: int, area: int) -> _Part:
        return _Part(
            min(self.x0, x0),
            max(self.x1, x1),
            min(self.top, top),
            max(self.bottom, bottom),
            (*self.labels, label),
            (*self.areas, area),
        )

    @property
    def dominance(self) -> float:
        """Share of the ink in the largest component: a digit is mostly one stroke,
        the face showing between its strokes (the wrong polarity) is many pieces."""
        return max(self.areas) / max(1, sum(self.areas))


def _cell_ink(region: Image, light_on_dark: bool, band: tuple[float, float]) -> tuple[Image, Image]:
    """Glyph strokes of one cell as a 0/255 mask, and as levelled grey (ink bright).

    A white top-hat with a kernel a bit under half the digit height keeps strokes and
    drops what is broader (glare, shading across the drum, the drum face itself).
    """
    top, bottom = band
    h = bottom - top
    size = _odd(0.45 * h)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    flat = _u8(cv2.morphologyEx(_ink(region, light_on_dark), cv2.MORPH_TOPHAT, kernel))
    core = flat[max(0, round(top)) : max(1, round(bottom))]
    if core.size == 0 or int(core.max()) < 4:
        return np.zeros_like(region), np.zeros_like(region)
    otsu, _ = cv2.threshold(core, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    peak = float(np.percentile(core, 99.5))
    mask = np.where(flat > max(otsu, 0.25 * peak), 255, 0).astype(np.uint8)
    soft = np.clip(flat * (255.0 / max(peak, 1.0)), 0, 255).astype(np.uint8)
    # Ink across the whole cell outside the digit band is the bezel or a drum rim, and
    # ink down the whole band at the sides is a separator: cut them off, so a part
    # digit touching them is not thrown away with them.
    width = mask.shape[1]
    rows = (mask > 0).mean(axis=1) >= 0.85
    rows[max(0, round(top + 0.15 * h)) : max(0, round(bottom - 0.15 * h))] = False
    mask[rows] = 0
    span = mask[max(0, round(top)) : max(1, round(bottom))]
    cols = (span > 0).mean(axis=0) >= 0.9 if span.size else np.zeros(width, dtype=bool)
    cols[round(0.25 * width) : round(0.75 * width)] = False
    mask[:, cols] = 0
    return mask, soft


def _parts(mask: Image, band: tuple[float, float]) -> tuple[Image, list[_Part]]:
    """Glyph parts overlapping the band, most overlap first, and their ink alone.

    Components stacked close and overlapping sideways form one part (a digit broken
    by glare, the strokes of a seven-segment digit); what stands at the sides of the
    cell is drum edge, separator or a neighbour's digit.
    """
    top, bottom = band
    h = bottom - top
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    width = mask.shape[1]
    comps = []
    for label in range(1, n):
        x, y, w, ch, area = stats[label].tolist()
        off = abs(x + w / 2 - width / 2) / width
        at_side = x == 0 or x + w >= width
        if area < max(3.0, 0.006 * h * h):
            continue  # noise, JPEG ringing
        if (at_side and off > 0.25) or (w < 0.2 * h and off > 0.2) or (w < 0.25 * h < ch / 1.15):
            continue  # drum edge, separator, a neighbour's digit
        if area < 0.2 * w * ch and w > 0.5 * width and ch > 0.8 * h:
            continue  # an outline around the digit: the drum's shaded edges
        comps.append((y, x, x + w, y + ch, label, area))
    gap = 0.12 * h
    parts: list[_Part] = []
    for y0, x0, x1, y1, label, area in sorted(comps):
        for k, p in enumerate(parts):
            if y0 <= p.bottom + gap and y1 >= p.top - gap and x0 <= p.x1 + gap and x1 >= p.x0 - gap:
                parts[k] = p.merge(x0, x1, y0, y1, label, area)
                break
        else:
            parts.append(_Part(x0, x1, y0, y1, (label,), (area,)))

    def overlap(p: _Part) -> float:
        return min(p.bottom, bottom) - max(p.top, top)

    parts = [
        p
        for p in parts
        if overlap(p) >= 0.2 * h and abs((p.x0 + p.x1) / 2 - width / 2) <= 0.35 * width
    ]
    parts.sort(key=lambda p: -overlap(p))
    chosen = np.isin(labels, [label for p in parts for label in p.labels])
    return np.where(chosen, 255, 0).astype(np.uint8), parts


def _digit_likeness(ink: Image, parts: list[_Part], band: tuple[float, float]) -> float:
    """How much the best part looks like a digit filling the band (0..1).

    In the wrong polarity the drum face around a digit's strokes survives the
    cleaning too, across the same band: in pieces (holes and bays) where the strokes
    are bold, as one solid block where they are thin. A digit is one stroke, and
    strokes leave most of their box empty (a bar-like 1 excepted).
    """
    if not parts:
        return 0.0
    top, bottom = band
    h = bottom - top
    part = parts[0]
    overlap = (min(part.bottom, bottom) - max(part.top, top)) / h
    width, height = part.x1 - part.x0, part.bottom - part.top
    if height > 1.3 * h or width < 0.08 * h:
        return overlap * 0.3  # a separator, a speck
    fill = float(np.count_nonzero(ink[part.top : part.bottom, part.x0 : part.x1])) / (
        width * height
    )
    solid = width >= 0.85 * ink.shape[1] and fill > 0.65
    return overlap * (0.4 + 0.6 * part.dominance) * (0.3 if solid else 1.0)


def _glyph_image(source: Image, rows: tuple[float, float], cols: tuple[int, int]) -> Image:
    """Cut one digit box out of the cell, dark on white, GLYPH_PX tall, bordered.

    Rows outside the cell (a part digit's hidden part) stay white, so Tesseract sees
    the visible part where it belongs in the digit.
    """
    r0, r1 = round(rows[0]), round(rows[1])
    pad = max(1, round(0.06 * (r1 - r0)))
    c0, c1 = cols[0] - pad, cols[1] + pad
    height, width = source.shape
    box = np.zeros((max(1, r1 - r0), max(1, c1 - c0)), dtype=np.uint8)
    sr0, sr1, sc0, sc1 = max(0, r0), min(height, r1), max(0, c0), min(width, c1)
    if sr1 > sr0 and sc1 > sc0:
        box[sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0] = source[sr0:sr1, sc0:sc1]
    scale = GLYPH_PX / box.shape[0]
    size = (max(1, round(box.shape[1] * scale)), GLYPH_PX)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    glyph = cv2.bitwise_not(cv2.resize(box, size, interpolation=interp))
    b = BORDER_PX
    return _u8(cv2.copyMakeBorder(glyph, b, b, b, b, cv2.BORDER_CONSTANT, value=255))


def _glyphs(
    ink: Image, soft: Image, parts: list[_Part], band: tuple[float, float], slack: float
) -> tuple[Glyph, ...]:
    """Name each part settled, leaving or entering by where it sits against the band.

    The drum turns upwards: the digit being left moves up out of the cell and the
    next one comes in from below, so a part above the band is the lower digit.
    The glyphs keep the levelled grey of the chosen parts (edges anti-aliased):
    Tesseract's LSTM reads grey, and hard edges on small digits cost it.
    """
    if not parts:
        return ()
    top, bottom = band
    h = bottom - top
    near = cv2.dilate(ink, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    source = np.where(near > 0, np.maximum(soft, ink // 2), 0).astype(np.uint8)
    main = parts[0]
    shift = ((main.top + main.bottom) / 2 - (top + bottom) / 2) / h
    if main.bottom - main.top >= 0.88 * h and abs(shift) < slack:
        image = _glyph_image(source, (main.top, main.bottom), (main.x0, main.x1))
        return (Glyph(image, "settled", 1.0, shift),)
    out = []
    for part in parts:
        visible = min(1.0, (part.bottom - part.top) / h)
        cols = (part.x0, part.x1)
        if (part.top + part.bottom) / 2 < (top + bottom) / 2:
            image = _glyph_image(source, (part.bottom - h, part.bottom), cols)
            out.append(Glyph(image, "leaving", visible, (part.bottom - bottom) / h))
        else:
            image = _glyph_image(source, (part.top, part.top + h), cols)
            out.append(Glyph(image, "entering", visible, (part.top - top) / h))
    return tuple(out)


@dataclass(frozen=True)
class _Cut:
    """One cell's pixels: where in the levelled window, and scaled for cleaning."""

    x0: int
    y0: int
    x1: int
    y1: int
    scale: float
    region: Image

    def band(self, row: _Row) -> tuple[float, float]:
        return (
            (row.intercept + row.top - self.y0) * self.scale,
            (row.intercept + row.bottom - self.y0) * self.scale,
        )


def _cut(levelled: Image, row: _Row, i: int) -> _Cut | None:
    height, width = levelled.shape
    h = row.digit_height
    cx = row.centres[i]
    x0, x1 = max(0, round(cx - row.pitch / 2)), min(width, round(cx + row.pitch / 2))
    y0 = max(0, round(row.intercept + row.top - 0.65 * h))
    y1 = min(height, round(row.intercept + row.bottom + 0.65 * h))
    if x1 - x0 < 3 or y1 - y0 < 3:
        return None
    region = levelled[y0:y1, x0:x1]
    # Small digits are cleaned at Tesseract's size: binarising 20 px digits and then
    # enlarging them gives stair-stepped strokes.
    scale = max(1.0, GLYPH_PX / h)
    if scale > 1.0:
        region = _u8(cv2.resize(region, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC))
    return _Cut(x0, y0, x1, y1, scale, region)


def _clean(cut: _Cut, band: tuple[float, float], prefer: bool) -> tuple[bool, list[_Part]]:
    """The cell's polarity and glyph parts: the polarity showing the more digit-like
    part wins, a tie goes to `prefer` (the row's polarity).

    Per cell, because a counter may mix them (a red drum with white digits on a
    black-on-white counter).
    """
    best: tuple[float, bool, list[_Part]] | None = None
    for light in (prefer, not prefer):
        ink, parts = _parts(_cell_ink(cut.region, light, band)[0], band)
        score = _digit_likeness(ink, parts, band) + (0.1 if light == prefer else 0.0)
        if best is None or score > best[0]:
            best = (score, light, parts)
    assert best is not None
    return best[1], best[2]


def _refine_band(row: _Row, found: list[tuple[_Cut, list[_Part]]]) -> _Row:
    """Measure the settled band again on the levelled cells.

    The first band came from bounding boxes in the tilted window, which a few degrees
    of rotation make taller; a band too tall would make every digit look shifted.
    """
    tops, bottoms = [], []
    h = row.digit_height
    for cut, parts in found:
        if parts:
            top = parts[0].top / cut.scale + cut.y0 - row.intercept
            bottom = parts[0].bottom / cut.scale + cut.y0 - row.intercept
            if 0.75 * h <= bottom - top <= 1.1 * h:
                tops.append(top)
                bottoms.append(bottom)
    if len(tops) < max(1, len(found) // 2):
        return row
    heights = np.array(bottoms) - np.array(tops)
    tall = heights >= 0.92 * float(np.percentile(heights, 80))
    return dataclasses.replace(
        row,
        top=float(np.median(np.array(tops)[tall])),
        bottom=float(np.median(np.array(bottoms)[tall])),
    )


def _lone_cell(grey: Image) -> Cells | NoReading:
    """A one-digit window is taken as the drum's cell itself (a user's crop of one
    drum): the digit at rest sits in its middle, a turning drum shows the digit
    leaving at the top edge and the next one at the bottom edge.
    """
    if contrast(grey) < MIN_CONTRAST:
        return NoReading("window is blank (no contrast)")
    height, width = grey.shape
    scale = max(1.0, GLYPH_PX / (LONE_DIGIT * height))
    region = grey
    if scale > 1.0:
        region = _u8(cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC))
    rh = region.shape[0]
    guess = ((0.5 - LONE_DIGIT / 2) * rh, (0.5 + LONE_DIGIT / 2) * rh)
    # Digits are the minority of a drum's face: prefer the rarer side of mid-grey.
    lo, hi = np.percentile(region, (5, 95))
    prefer = bool(np.mean(region < (lo + hi) / 2) >= 0.5)
    light, parts = _clean(_Cut(0, 0, width, height, scale, region), guess, prefer)
    edge = max(1.0, 0.02 * rh)
    whole = [
        p for p in parts if p.top > edge and p.bottom < rh - edge and p.bottom - p.top >= 0.4 * rh
    ]
    h = max((p.bottom - p.top for p in whole), default=LONE_DIGIT * rh)
    band = (rh / 2 - h / 2, rh / 2 + h / 2)
    mask, soft = _cell_ink(region, light, band)
    ink, parts = _parts(mask, band)
    # A user's crop centres the digit only roughly: allow more slack than in a row.
    glyphs = _glyphs(ink, soft, parts, band, slack=0.2)
    corners = ((0.0, 0.0), (float(width), 0.0), (float(width), float(height)), (0.0, float(height)))
    cell = Cell((0, 0, width, height), corners, light, ink, glyphs)
    return Cells((cell,), 0.0, light, h / scale, 1 if whole else 0)


def _split(grey: Image, digits: int) -> Cells | NoReading:
    """Find, level and cut the window into `digits` cleaned cells."""
    if digits == 1:
        return _lone_cell(grey)
    row = _find_row(grey, digits)
    if isinstance(row, NoReading):
        return row
    levelled, flat, matrix = _level(grey, row)
    cuts = []
    for i in range(digits):
        cut = _cut(levelled, flat, i)
        if cut is None:
            return NoReading(f"cell {i + 1} of {digits} lies outside the window")
        cuts.append(cut)
    polarity, found = [], []
    for i, cut in enumerate(cuts):
        light, parts = _clean(cut, cut.band(flat), flat.light_on_dark != (i in flat.opposite))
        polarity.append(light)
        if i in flat.found:
            found.append((cut, parts))
    flat = _refine_band(flat, found)
    cells = []
    for cut, light in zip(cuts, polarity, strict=True):
        band = cut.band(flat)
        mask, soft = _cell_ink(cut.region, light, band)
        ink, parts = _parts(mask, band)
        corners = _back(
            matrix, [(cut.x0, cut.y0), (cut.x1, cut.y0), (cut.x1, cut.y1), (cut.x0, cut.y1)]
        )
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        bx, by = max(0, math.floor(min(xs))), max(0, math.floor(min(ys)))
        box = (
            bx,
            by,
            min(grey.shape[1], math.ceil(max(xs))) - bx,
            min(grey.shape[0], math.ceil(max(ys))) - by,
        )
        glyphs = _glyphs(ink, soft, parts, band, slack=ROLL_SHIFT)
        cells.append(Cell(box, tuple(corners), light, ink, glyphs))
    angle = math.degrees(math.atan(row.slope))
    return Cells(tuple(cells), angle, row.light_on_dark, flat.digit_height, len(row.found))


def _window_grey(window: npt.NDArray[Any], digits: int) -> Image | NoReading:
    """The window in grey, or why it cannot hold a row of `digits` drums."""
    if digits < 1:
        return NoReading(f"digits must be at least 1, got {digits}")
    try:
        grey = to_grey(window)
    except ValueError as err:
        return NoReading(str(err))
    if grey.shape[0] < 8 or grey.shape[1] < 8:
        return NoReading(f"window is too small ({grey.shape[1]}x{grey.shape[0]} px)")
    return grey


def preprocess(window: npt.NDArray[Any], digits: int) -> Cells | NoReading:
    """All the image work before Tesseract: the cells `snapshot` shows to users."""
    grey = _window_grey(window, digits)
    if isinstance(grey, NoReading):
        return grey
    return _split(grey, digits)


# --------------------------------------------------------------------------- reading


def _compose_line(images: Sequence[Image]) -> tuple[Image, int]:
    """Glyphs centred in equal slots on one line, as a monospaced counter prints them."""
    slot = max(img.shape[1] for img in images)
    height = max(img.shape[0] for img in images)
    line = np.full((height, slot * len(images)), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        x = i * slot + (slot - img.shape[1]) // 2
        y = (height - img.shape[0]) // 2
        line[y : y + img.shape[0], x : x + img.shape[1]] = img
    return line, slot


def _variants(image: Image) -> tuple[Image, ...]:
    """The glyph as another camera might have shown it: smaller, bolder, thinner,
    softer. Tesseract's misreads follow the exact pixels, so reads that agree across
    these deserve trust and reads that scatter do not."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    return (
        image,
        _u8(cv2.resize(image, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)),
        _u8(cv2.erode(image, kernel)),  # dark ink on white: eroding thickens the strokes
        _u8(cv2.dilate(image, kernel)),
        _u8(cv2.GaussianBlur(image, (0, 0), 1.0)),
    )


_LINE_GAP = 20  # px of white between the sheet's lines


@dataclass(frozen=True)
class _SheetLine:
    top: int
    height: int
    slot: int
    order: tuple[int, ...]  # glyph index at each slot


def _sheet(images: Sequence[Image]) -> tuple[Image, list[_SheetLine]]:
    """All glyphs in every variant, one variant per line, every other line reversed
    (each read sees other neighbours): one Tesseract call reads them all."""
    rows: list[Image] = []
    layout: list[_SheetLine] = []
    per_glyph = [_variants(img) for img in images]
    top = _LINE_GAP
    for v in range(len(per_glyph[0])):
        order = tuple(range(len(images)))[:: -1 if v % 2 else 1]
        line, slot = _compose_line([per_glyph[i][v] for i in order])
        rows.append(line)
        layout.append(_SheetLine(top, line.shape[0], slot, order))
        top += line.shape[0] + _LINE_GAP
    sheet = np.full((top, max(r.shape[1] for r in rows)), 255, dtype=np.uint8)
    for place, pixels in zip(layout, rows, strict=True):
        sheet[place.top : place.top + place.height, : pixels.shape[1]] = pixels
    return sheet, layout


# Without the whitelist Tesseract sometimes names a digit's shape with a letter.
_LOOKALIKES = {
    "B": 8, "O": 0, "o": 0, "D": 0, "Q": 0, "I": 1, "l": 1, "|": 1,
    "S": 5, "Z": 2, "z": 2, "g": 9, "q": 9, "b": 6, "G": 6,
}  # fmt: skip
_SPECKS = frozenset(".,'`:;-_~\"")


@dataclass(frozen=True)
class _Guess:
    digit: int
    confidence: float


def _as_digit(symbols: Sequence[Symbol]) -> _Guess | None:
    """One digit from what Tesseract returned for one glyph, or None."""
    kept = [s for s in symbols if s.text and s.text not in _SPECKS]
    if len(kept) != 1:
        return None
    text, conf = kept[0].text, float(np.clip(kept[0].confidence, 0.0, 1.0))
    if len(text) == 1 and text in _WHITELIST:
        return _Guess(int(text), conf)
    if text in _LOOKALIKES:
        return _Guess(_LOOKALIKES[text], conf * 0.5)  # a letter for a digit's shape
    return None


def _tally(guesses: Sequence[_Guess | None]) -> _Guess | None:
    """The digit most variants read, its confidence scaled by how many agreed."""
    counts: dict[int, list[float]] = {}
    for g in guesses:
        if g is not None:
            counts.setdefault(g.digit, []).append(g.confidence)
    if not counts:
        return None
    digit, confs = max(counts.items(), key=lambda kv: (len(kv[1]), sum(kv[1])))
    share = round(len(confs) / len(guesses) * (len(AGREEMENT) - 1))
    conf = float(np.median(confs)) * AGREEMENT[share]
    if any(len(c) >= 2 for d, c in counts.items() if d != digit):
        conf = min(conf, 0.3)  # two variants or more saw another digit
    return _Guess(digit, conf)


@dataclass(frozen=True)
class _Vote:
    guess: _Guess | None
    shown: str  # what Tesseract returned, for a NoReading's reason


def _read_char(engine: Recogniser, image: Image) -> _Vote:
    """One glyph on its own. With the whitelist Tesseract's LSTM returns nothing for
    some plain digits (a bold 8 it first takes for a B), so it asks again without."""
    symbols = engine.recognise(image, PSM_CHAR, whitelist=True)
    guess = _as_digit(symbols)
    if guess is None:
        symbols = engine.recognise(image, PSM_CHAR, whitelist=False)
        guess = _as_digit(symbols)
    shown = "".join(s.text for s in symbols)
    if guess is None:
        return _Vote(None, shown)
    return _Vote(_Guess(guess.digit, guess.confidence * SINGLE_READ), shown)


def _read_glyphs(engine: Recogniser, images: Sequence[Image]) -> list[_Vote]:
    """Every glyph in every variant read with one call; a glyph no line could read is
    read again on its own, with less trust (no agreement to go by)."""
    sheet, layout = _sheet(images)
    per_line: list[list[list[Symbol]]] = [[[] for _ in images] for _ in layout]
    for sym in engine.recognise(sheet, PSM_BLOCK, whitelist=True):
        for v, line in enumerate(layout):
            if line.top - _LINE_GAP / 2 <= sym.y < line.top + line.height + _LINE_GAP / 2:
                k = int(sym.x // line.slot)
                # The LSTM now and then adds a phantom digit in the gap between two
                # glyphs: only a symbol near a slot's centre belongs to its glyph.
                if 0 <= k < len(images) and abs(sym.x - (k + 0.5) * line.slot) <= 0.42 * line.slot:
                    per_line[v][line.order[k]].append(sym)
                break
    votes = []
    for i, image in enumerate(images):
        guess = _tally([_as_digit(per_line[v][i]) for v in range(len(layout))])
        if guess is None:
            votes.append(_read_char(engine, image))
        else:
            votes.append(_Vote(guess, "".join(s.text for s in per_line[0][i])))
    return votes


def _part_weight(glyph: Glyph) -> float:
    """How far a read of a part digit can be trusted, from how much of it shows.

    What a part hides is what tells digits apart: the bottoms of 0, 6 and 8 (or of
    3, 5 and 9) are alike, and so are the tops of 0, 8 and 9 (or 2 and 3). Measured
    on simulated drums, reads of the leaving digit go wrong once a fifth of it is
    cut, reads of the entering digit sooner.
    """
    if glyph.role == "settled":
        return 1.0
    if glyph.role == "leaving":
        return float(np.clip((glyph.visible - 0.7) / 0.25, 0.0, 1.0))
    return float(np.clip((glyph.visible - 0.8) / 0.15, 0.0, 1.0)) * 0.8


@dataclass(frozen=True)
class _Digit:
    value: int
    confidence: float
    rolling: bool
    seen: int  # the digit the best-placed glyph shows


def _rolling_digit(cell: Cell, guesses: Sequence[_Guess | None]) -> _Digit | None:
    """The digit a turning drum has reached, from whichever part digits were read.

    The leaving digit is the value; the entering one, less one. Two parts read as
    neighbours on the drum confirm each other; two that are not are a misread.
    """
    votes: list[tuple[int, float, int]] = []
    for glyph, guess in zip(cell.glyphs, guesses, strict=True):
        if guess is not None:
            value = (guess.digit - 1) % 10 if glyph.role == "entering" else guess.digit
            votes.append((value, guess.confidence * _part_weight(glyph), guess.digit))
    if not votes:
        return None
    votes.sort(key=lambda v: -v[1])
    value, conf, seen = votes[0]
    if len(votes) > 1:
        agree = votes[1][0] == value
        conf = 1 - (1 - conf) * (1 - votes[1][1]) if agree else min(conf, 0.2)
    return _Digit(value, conf, True, seen)


def _carry(digits: list[_Digit], cells: Sequence[Cell]) -> list[_Digit]:
    """A drum turns only while every drum to its right turns from 9 to 0.

    A higher drum that looks turned while its right neighbour stands still is
    mechanical slack when its digit is whole and only a little off the line (read it
    as the digit it shows), and a misread otherwise.
    """
    out = list(digits)
    for i in range(len(out) - 2, -1, -1):
        d, right = out[i], out[i + 1]
        if not d.rolling or (right.rolling and right.value == 9):
            continue
        glyph = cells[i].glyphs[0]
        if not right.rolling and glyph.visible > 0.85 and abs(glyph.shift) < 0.3:
            out[i] = _Digit(d.seen, d.confidence * 0.8, False, d.seen)
        else:
            out[i] = _Digit(d.value, min(d.confidence, 0.2), True, d.seen)
    return out


def recognise_cells(cells: Cells, engine: Recogniser) -> Reading | NoReading:
    """Read every cell's glyphs and assemble the reading, or say why not."""
    n = len(cells.cells)
    for i, cell in enumerate(cells.cells):
        if not cell.glyphs:
            return NoReading(f"cell {i + 1} of {n} is empty (no digit found)")
    owners = [(i, k) for i, cell in enumerate(cells.cells) for k in range(len(cell.glyphs))]
    try:
        votes = _read_glyphs(engine, [cells.cells[i].glyphs[k].image for i, k in owners])
    except OcrFailure as err:
        return NoReading(f"tesseract failed: {err}")
    per_cell: dict[int, list[_Vote]] = {}
    for (i, _), vote in zip(owners, votes, strict=True):
        per_cell.setdefault(i, []).append(vote)
    digits: list[_Digit] = []
    for i, cell in enumerate(cells.cells):
        mine = per_cell[i]
        if not cell.rolling:
            guess = mine[0].guess
            if guess is None:
                return NoReading(f"cell {i + 1} of {n}: tesseract returned {mine[0].shown!r}")
            digits.append(_Digit(guess.digit, guess.confidence, False, guess.digit))
            continue
        digit = _rolling_digit(cell, [v.guess for v in mine])
        if digit is None:
            shown = " / ".join(repr(v.shown) for v in mine)
            return NoReading(f"cell {i + 1} of {n} is turning: tesseract returned {shown}")
        digits.append(digit)
    digits = _carry(digits, cells.cells)
    return Reading(
        "".join(str(d.value) for d in digits),
        tuple(round(float(np.clip(d.confidence, 0.0, 1.0)), 3) for d in digits),
        tuple(d.rolling for d in digits),
    )


def read_window(
    window: npt.NDArray[Any], digits: int, engine: Recogniser
) -> tuple[Reading | NoReading, Cells | None]:
    """The whole stage: preprocessing, then the engine's calls, then assembly; with
    the cells it cut."""
    cells = preprocess(window, digits)
    if isinstance(cells, NoReading):
        return cells, None
    return recognise_cells(cells, engine), cells


# --------------------------------------------------------------------------- engines

_TESSDATA_DIRS = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
    "/opt/homebrew/share/tessdata",
)


def find_tessdata(configured: str | None) -> str:
    """The folder holding eng.traineddata: the configured one, else the usual places."""
    if configured:
        if (Path(configured) / "eng.traineddata").is_file():
            return configured
        raise OcrUnavailable(
            f"ocr.tessdata: {configured} has no eng.traineddata "
            "(apt-get install tesseract-ocr-eng, or point ocr.tessdata at the folder holding it)"
        )
    prefix = os.environ.get("TESSDATA_PREFIX")
    candidates = [prefix, f"{prefix}/tessdata"] if prefix else []
    for folder in (*candidates, *_TESSDATA_DIRS):
        if (Path(folder) / "eng.traineddata").is_file():
            return folder
    raise OcrUnavailable(
        "tesseract's English model (eng.traineddata) not found: "
        "apt-get install tesseract-ocr tesseract-ocr-eng, or set ocr.tessdata"
    )


class TesserocrEngine:
    """Tesseract in-process: the model stays loaded and a frame costs milliseconds.

    A TessBaseAPI is not thread-safe: each thread gets its own, created once and
    switched between page segmentation modes. No timeout: an in-process call cannot
    be interrupted (small images take milliseconds).
    """

    name = "tesserocr"

    def __init__(self, tessdata: str) -> None:
        try:
            import tesserocr  # noqa: PLC0415 - optional dependency, loaded when chosen
        except ImportError as err:
            raise OcrUnavailable("tesserocr is not installed: pip install tesserocr") from err
        self._tesserocr: Any = tesserocr
        self._tessdata = tessdata.rstrip("/") + "/"
        self._local = threading.local()
        self._api()  # fail now, with the reason, not on the first frame

    def _api(self) -> Any:
        api = getattr(self._local, "api", None)
        if api is None:
            tr = self._tesserocr
            try:
                api = tr.PyTessBaseAPI(path=self._tessdata, lang="eng", oem=tr.OEM.LSTM_ONLY)
            except RuntimeError as err:
                raise OcrUnavailable(
                    f"tesserocr cannot load eng.traineddata from {self._tessdata}: {err}"
                ) from err
            self._local.api = api
        return api

    def recognise(self, image: Image, psm: int, whitelist: bool = True) -> tuple[Symbol, ...]:
        tr = self._tesserocr
        api = self._api()
        api.SetPageSegMode(psm)
        api.SetVariable("tessedit_char_whitelist", _WHITELIST if whitelist else "")
        img = np.ascontiguousarray(image)
        api.SetImageBytes(img.tobytes(), img.shape[1], img.shape[0], 1, img.shape[1])
        api.SetSourceResolution(300)
        if api.Recognize() is False:
            raise OcrFailure("tesserocr could not recognise the image")
        iterator = api.GetIterator()
        if iterator is None:
            return ()
        out = []
        level = tr.RIL.SYMBOL
        for r in tr.iterate_level(iterator, level):
            try:
                text = r.GetUTF8Text(level)
            except RuntimeError:  # an empty result raises instead of returning ""
                continue
            box = r.BoundingBox(level)
            if text and box is not None:
                x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                out.append(Symbol(text.strip(), r.Confidence(level) / 100.0, x, y))
        return tuple(out)

    def read(self, window: npt.NDArray[Any], digits: int) -> Reading | NoReading:
        return read_window(window, digits, self)[0]

    def read_seen(
        self, window: npt.NDArray[Any], digits: int
    ) -> tuple[Reading | NoReading, Cells | None]:
        return read_window(window, digits, self)


_HOCR_CHAR = re.compile(
    r"<span class=['\"]ocrx_cinfo['\"] title=['\"]x_bboxes (\d+) (\d+) (\d+) (\d+); "
    r"x_conf ([\d.]+)['\"]>([^<]*)</span>"
)


class PytesseractEngine:
    """The tesseract CLI: one process per call (about 110 ms here, more on a Pi),
    usually one call per frame.

    Per-character confidences come from hOCR with `hocr_char_boxes`; image_to_data
    gives them per word only.
    """

    name = "pytesseract"

    def __init__(self, tessdata: str | None, timeout_s: float) -> None:
        try:
            import pytesseract  # noqa: PLC0415 - loaded when chosen
        except ImportError as err:
            raise OcrUnavailable("pytesseract is not installed: pip install pytesseract") from err
        if shutil.which(pytesseract.pytesseract.tesseract_cmd) is None:
            raise OcrUnavailable("tesseract not found: apt-get install tesseract-ocr")
        self._pytesseract: Any = pytesseract
        self._timeout = timeout_s
        where = f' --tessdata-dir "{tessdata}"' if tessdata else ""
        # --dpi: a PNG without a resolution is taken as 70 dpi, which skews size checks.
        self._config = f"--oem 1 --dpi 300{where} -c hocr_char_boxes=1"

    def recognise(self, image: Image, psm: int, whitelist: bool = True) -> tuple[Symbol, ...]:
        chars = f" -c tessedit_char_whitelist={_WHITELIST}" if whitelist else ""
        try:
            hocr = self._pytesseract.image_to_pdf_or_hocr(
                image,
                extension="hocr",
                config=f"--psm {psm} {self._config}{chars}",
                timeout=self._timeout,
            )
        except RuntimeError as err:  # pytesseract's timeout
            raise OcrFailure(f"tesseract timed out after {self._timeout:g} s") from err
        except self._pytesseract.TesseractError as err:
            raise OcrFailure(f"tesseract failed: {err.message}".strip()) from err
        text = hocr.decode("utf-8", errors="replace")
        return tuple(
            Symbol(
                html.unescape(ch).strip(),
                float(conf) / 100.0,
                (int(x0) + int(x1)) / 2,
                (int(y0) + int(y1)) / 2,
            )
            for x0, y0, x1, y1, conf, ch in _HOCR_CHAR.findall(text)
        )

    def read(self, window: npt.NDArray[Any], digits: int) -> Reading | NoReading:
        return read_window(window, digits, self)[0]

    def read_seen(
        self, window: npt.NDArray[Any], digits: int
    ) -> tuple[Reading | NoReading, Cells | None]:
        return read_window(window, digits, self)


def _self_test(engine: TesserocrEngine | PytesseractEngine) -> None:
    """Read a rendered 42: proves the model loads and the backend runs."""
    img = np.full((60, 90), 255, dtype=np.uint8)
    cv2.putText(img, "42", (12, 48), cv2.FONT_HERSHEY_SIMPLEX, 1.5, 0, 4)
    try:
        text = "".join(s.text for s in engine.recognise(img, PSM_LINE))
    except OcrFailure as err:
        raise OcrUnavailable(f"{engine.name}: {err}") from err
    if text != "42":
        raise OcrUnavailable(f"{engine.name}: self-test read {text!r} instead of '42'")


def make_engine(config: OcrConfig, gate: float = DEFAULT_GATE) -> OcrEngine:
    """The configured backend, checked to work; `auto` prefers tesserocr.

    `gate`: the confidence a reading needs (plausibility.min_confidence), below which
    `classifier+tesseract` asks Tesseract."""
    if config.engine in ("classifier", "classifier+tesseract"):
        # The trained drum classifier reuses this module's cells: imported here, not above.
        from edgemeter.classify import ClassifierEngine, ModelError  # noqa: PLC0415
        from edgemeter.tiebreak import TiebreakEngine  # noqa: PLC0415

        try:
            classifier = ClassifierEngine(gate=gate)
        except ModelError as err:
            raise OcrUnavailable(str(err)) from err
        if config.engine == "classifier":
            return classifier
        try:
            tesseract = make_engine(dataclasses.replace(config, engine="auto"))
        except OcrUnavailable as err:
            # The classifier alone still reads, and errs no more: it only withholds more.
            log.warning(
                "ocr engine=classifier+tesseract: Tesseract is unavailable (%s); reading "
                "with the classifier alone, which withholds more frames. "
                "Fix: apt-get install tesseract-ocr",
                err,
            )
            return classifier
        return TiebreakEngine(classifier, tesseract, gate)
    problems = []
    if config.engine in ("auto", "tesserocr"):
        try:
            fast = TesserocrEngine(find_tessdata(config.tessdata))
            _self_test(fast)
            return fast
        except OcrUnavailable as err:
            if config.engine == "tesserocr":
                raise
            problems.append(str(err))
            log.info("ocr engine=tesserocr unavailable reason=%r", str(err))
    try:
        if config.tessdata:
            find_tessdata(config.tessdata)
        cli = PytesseractEngine(config.tessdata, config.timeout_s)
        _self_test(cli)
        return cli
    except OcrUnavailable as err:
        problems.append(str(err))
    raise OcrUnavailable("; ".join(dict.fromkeys(problems)))
