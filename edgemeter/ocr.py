"""OCR stage: digit-window image in, `Reading` (or `NoReading` with a reason) out.

The window is the user's rough crop around a roller counter. This stage finds the
row of digits inside it, levels it, splits it into exactly `digits` drum cells,
cleans each cell into dark-glyph-on-white at the size Tesseract reads best, and
asks Tesseract (in-process through tesserocr, or the CLI through pytesseract) for
one digit per cell with a confidence.

It prefers no reading to a guess: a blank window, the wrong number of cells, an
empty cell or an unreadable glyph is a `NoReading` whose reason says what was seen.
A drum caught between two digits is reported as the digit it is leaving (the value
the counter has reached) and flagged as rolling; when the glyphs do not make that
clear its confidence is low rather than the digit confidently wrong.

It does not judge whether the value is plausible (that is `plausibility`), does not
cut the window out of the frame (`window`) and keeps no state between frames.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import math
import os
import re
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import cv2
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from edgemeter.config import OcrConfig

# Tesseract's OpenMP threads only fight each other for one small image at a time.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Reading:
    """The digits read from one window, most significant first.

    `digits` is the value the counter has reached: a drum caught between two digits
    is reported as the lower one (the one leaving the cell) and flagged in `rolling`.
    """

    digits: str
    confidences: tuple[float, ...]
    rolling: tuple[bool, ...]

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
SOFT_GLYPHS = True
# Confidence factor by the share of variant reads that agree (0/5 .. 5/5).
AGREEMENT = (0.0, 0.15, 0.3, 0.55, 0.85, 1.0)


# ---------------------------------------------------------------------------
# Value types


@dataclass(frozen=True, eq=False)
class Glyph:
    """One digit image, cleaned and sized for Tesseract.

    `role` says where it sits: `settled` in the row's band, `leaving` (moved up, the
    digit the drum is leaving) or `entering` (coming in from below). `visible` is the
    fraction of the digit's height inside the aperture, `shift` its offset from the
    settled band in digit heights (negative: up).
    """

    image: Image
    role: Literal["settled", "leaving", "entering"]
    visible: float
    shift: float


@dataclass(frozen=True, eq=False)
class Cell:
    """One drum: where it is in the window, and what was cut out of it."""

    box: tuple[int, int, int, int]  # x, y, width, height in window pixels (bounding box)
    corners: tuple[tuple[float, float], ...]  # TL, TR, BR, BL in window pixels
    light_on_dark: bool
    ink: Image  # the cell's cleaned glyph mask (255 = ink), levelled
    glyphs: tuple[Glyph, ...]  # what was found, the best-placed first; empty if nothing

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
    found: int  # cells whose digit was found directly (the rest were inferred)

    @property
    def boxes(self) -> tuple[tuple[int, int, int, int], ...]:
        return tuple(cell.box for cell in self.cells)


@dataclass(frozen=True)
class Symbol:
    """One character Tesseract returned: its text, confidence 0..1 and box centre."""

    text: str
    confidence: float
    x: float
    y: float


# Tesseract page segmentation modes used here.
PSM_BLOCK = 6  # a uniform block of text: the sheet of glyph lines
PSM_LINE = 7
PSM_CHAR = 10


class Recogniser(Protocol):
    """A Tesseract backend: one image of dark glyphs on white in, symbols out."""

    name: str

    def recognise(self, image: Image, psm: int, whitelist: bool = True) -> tuple[Symbol, ...]: ...


class OcrEngine(Protocol):
    name: str

    def read(self, window: npt.NDArray[Any], digits: int) -> Reading | NoReading: ...


# ---------------------------------------------------------------------------
# Stage 1: grey and contrast


def to_grey(window: npt.NDArray[Any]) -> Image:
    """The window as 8-bit grey (BGR, BGRA or grey in)."""
    arr = np.asarray(window)
    if arr.dtype != np.uint8:
        arr = np.clip(np.nan_to_num(arr.astype(np.float64)), 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2GRAY)
    if arr.ndim != 2:
        raise ValueError(f"window is not an image: shape {np.asarray(window).shape}")
    return np.ascontiguousarray(arr)


def contrast(grey: Image) -> float:
    """Spread of grey levels, ignoring the 2 % extremes (dead pixels, specular dots)."""
    lo, hi = np.percentile(grey, (2, 98))
    return float(hi - lo)


# ---------------------------------------------------------------------------
# Stage 2: locate the digit row


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
        """A thin filled bar: a '1' in some fonts, but also a separator between drums."""
        return self.w < 0.22 * self.h and self.area > 0.75 * self.w * self.h

    def union(self, other: _Blob) -> _Blob:
        x0, y0 = min(self.x, other.x), min(self.y, other.y)
        x1 = max(self.x + self.w, other.x + other.w)
        y1 = max(self.bottom, other.bottom)
        return _Blob(x0, y0, x1 - x0, y1 - y0, self.area + other.area)


@dataclass(frozen=True)
class Row:
    """Where the digits sit: a line through their centres and a regular pitch."""

    light_on_dark: bool
    slope: float  # dy/dx of the line through the digit centres
    intercept: float  # y of that line at x = 0
    top: float  # settled digit's top relative to the line (negative)
    bottom: float  # settled digit's bottom relative to the line
    pitch: float  # drum-to-drum distance along x
    centres: tuple[float, ...]  # x of each cell centre, most significant first
    found: frozenset[int]  # cells whose whole digit was found
    opposite: frozenset[int] = field(default_factory=frozenset)  # cells of the other polarity

    @property
    def digit_height(self) -> float:
        return self.bottom - self.top


def _odd(n: float) -> int:
    k = max(3, round(n))
    return k if k % 2 else k + 1


def _ink(grey: Image, light_on_dark: bool) -> Image:
    """Ink bright, background dark, whatever the drum's polarity."""
    return grey if light_on_dark else cv2.bitwise_not(grey)


def _masks(grey: Image, light_on_dark: bool, spread: float) -> list[Image]:
    """Several binarisations of one polarity: the digit size is not known yet, and a
    local threshold only separates a digit from its drum when its block spans both."""
    ink = _ink(grey, light_on_dark)
    height = grey.shape[0]
    offset = max(3.0, 0.08 * spread)
    out = []
    for frac in (0.35, 0.7, 1.4):
        block = _odd(max(11.0, frac * height))
        out.append(
            cv2.adaptiveThreshold(
                ink, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, block, -offset
            )
        )
    _, otsu = cv2.threshold(ink, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    out.append(otsu)
    return out


def _blobs(mask: Image, min_h: float, max_h: float, edge_ok: bool) -> list[_Blob]:
    """Connected components shaped like a whole digit."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    height, width = mask.shape
    out = []
    for x, y, w, h, area in stats[1:n].tolist():
        if not min_h <= h <= max_h or w < 2 or w > 1.1 * h:
            continue
        fill = area / (w * h)
        if not 0.12 <= fill <= 0.97:
            continue
        touches = x == 0 or y == 0 or x + w >= width or y + h >= height
        if touches and not edge_ok:
            continue
        out.append(_Blob(x, y, w, h, area))
    return out


@dataclass(frozen=True)
class _Grid:
    anchor: float
    pitch: float
    slots: dict[int, _Blob]
    off_grid: int

    @property
    def span(self) -> int:
        return max(self.slots) - min(self.slots) + 1


def _grid(members: Sequence[_Blob], height: float) -> _Grid | None:
    """Fit a regular pitch to the members: drums are evenly spaced."""
    if len(members) == 1:
        return _Grid(members[0].cx, 0.0, {0: members[0]}, 0)
    xs = sorted(b.cx for b in members)
    wide = sorted(b.cx for b in members if not b.bar) or xs
    pitches = set()
    for a, b in zip(wide, wide[1:], strict=False):
        for m in (1, 2, 3):
            p = (b - a) / m
            if 0.45 * height <= p <= 1.8 * height:
                pitches.add(round(p, 1))
    best: tuple[float, _Grid] | None = None
    for pitch in pitches:
        for anchor in wide:
            grid = _place(members, anchor, pitch)
            if grid is None:
                continue
            score = len(grid.slots) - 0.3 * grid.off_grid + 1e-3 * pitch
            if best is None or score > best[0]:
                best = (score, grid)
    return None if best is None else best[1]


def _place(members: Sequence[_Blob], anchor: float, pitch: float) -> _Grid | None:
    slots: dict[int, _Blob] = {}
    off = 0
    for b in members:
        r = (b.cx - anchor) / pitch
        k = round(r)
        if abs(r - k) > 0.22:
            off += 1
            continue
        slots[k] = slots[k].union(b) if k in slots else b
    if len(slots) < 2:
        return None
    ks = np.array(sorted(slots), dtype=np.float64)
    cx = np.array([slots[int(k)].cx for k in ks])
    slope, icpt = np.polyfit(ks, cx, 1)
    if slope <= 0:
        return None
    k0 = min(slots)
    shifted = {k - k0: b for k, b in slots.items()}
    return _Grid(float(icpt + slope * k0), float(slope), shifted, off)


def _groups(blobs: Sequence[_Blob]) -> list[list[_Blob]]:
    """Blobs of similar height along one straight line: candidate digit rows.

    Seeded by the tallest blobs (a whole digit); a turning drum's part digit is
    shorter and off the line, so it joins only while most of it is in view.
    """
    out: list[list[_Blob]] = []
    seen: set[frozenset[int]] = set()
    for seed in sorted(blobs, key=lambda b: -b.h):
        members = [
            b for b in blobs if 0.7 <= b.h / seed.h <= 1.15 and abs(b.cy - seed.cy) < 0.45 * seed.h
        ]
        if len(members) >= 2:
            slope, icpt = _line_through(members)
            members = [
                b
                for b in blobs
                if 0.7 <= b.h / seed.h <= 1.15 and abs(b.cy - (icpt + slope * b.cx)) < 0.3 * seed.h
            ]
        key = frozenset(id(b) for b in members)
        if key in seen or not members:
            continue
        seen.add(key)
        out.append(members)
    return out


@dataclass(frozen=True)
class _Candidate:
    score: float
    light_on_dark: bool
    members: tuple[_Blob, ...]
    grid: _Grid


def _encloses(frame: _Blob, glyphs: Sequence[_Blob]) -> bool:
    """Whether `frame` holds a glyph of the other polarity: then it is a drum face
    (light drum, dark digit) and not a digit, though it is just as regular."""
    for g in glyphs:
        inside = frame.x <= g.x and g.x + g.w <= frame.x + frame.w
        inside = inside and frame.y <= g.y and g.bottom <= frame.bottom
        # a glyph, not the hole of a 0 (holes are filled ellipses)
        if inside and g.h >= 0.5 * frame.h and g.area < 0.7 * g.w * g.h and g.w > 0.2 * g.h:
            return True
    return False


def _best_row(grey: Image, digits: int, spread: float) -> _Candidate | None:
    height = grey.shape[0]
    min_h = max(8.0, 0.08 * height)
    found: dict[bool, list[tuple[tuple[_Blob, ...], _Grid]]] = {True: [], False: []}
    every: dict[bool, list[_Blob]] = {True: [], False: []}
    for light in (True, False):
        for mask in _masks(grey, light, spread):
            blobs = _blobs(mask, min_h, 0.98 * height, edge_ok=digits == 1)
            every[light].extend(blobs)
            for members in _groups(blobs):
                if all(b.bar for b in members) and len(members) > 1:
                    continue  # separators, or a row of '1's nobody can check
                grid = _grid(members, float(np.median([b.h for b in members])))
                if grid is not None:
                    found[light].append((tuple(members), grid))
    best: _Candidate | None = None
    for light, rows in found.items():
        for members, grid in rows:
            med_h = float(np.median([b.h for b in members]))
            n = len(grid.slots)
            frames = sum(_encloses(b, every[not light]) for b in grid.slots.values())
            score = (
                min(n, digits)
                - 1.5 * max(0, grid.span - digits)
                - 0.25 * grid.off_grid
                + 0.5 * med_h / height
                - (3.0 if frames * 2 >= n else 0.0)
            )
            if digits == 1:
                # one digit: the biggest, most central glyph-like blob
                b = next(iter(grid.slots.values()))
                centred = 1 - abs(b.cx / grey.shape[1] - 0.5)
                score = med_h / height + centred - 2 * (n > 1) - 3 * frames
            if best is None or score > best.score:
                best = _Candidate(score, light, members, grid)
    return best


def _line_through(blobs: Sequence[_Blob]) -> tuple[float, float]:
    """Theil-Sen line through the blob centres: a turning drum's digit sits off the
    line and must not tilt it."""
    if len(blobs) < 2:
        return 0.0, blobs[0].cy
    slopes = [
        (b.cy - a.cy) / (b.cx - a.cx)
        for i, a in enumerate(blobs)
        for b in blobs[i + 1 :]
        if abs(b.cx - a.cx) > 1
    ]
    slope = float(np.clip(np.median(slopes), -0.18, 0.18)) if slopes else 0.0
    return slope, float(np.median([b.cy - slope * b.cx for b in blobs]))


def _evidence(
    grey: Image, centre: tuple[float, float], pitch: float, band: tuple[float, float]
) -> tuple[float, bool]:
    """How much of a drum's digits one extra cell shows, and in which polarity.

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
        _, parts = _parts(_cell_ink(region, light, local), local)
        total = 0.0
        for part in parts:
            part_h = part.bottom - part.top
            mid = x0 + (part.x0 + part.x1) / 2
            if abs(mid - cx) > 0.3 * pitch or part.x1 - part.x0 > 0.9 * pitch:
                continue
            if part_h < 0.2 * h or part_h > 1.25 * h:
                continue
            total += min(part_h, h) / h
        if total > best[0]:
            best = (total, light)
    return best


def find_row(grey: Image, digits: int) -> Row | NoReading:
    """Find the row of `digits` drums in the window, whatever its margins hold."""
    spread = contrast(grey)
    if spread < MIN_CONTRAST:
        return NoReading("window is blank (no contrast)")
    cand = _best_row(grey, digits, spread)
    if cand is None:
        return NoReading("no row of digits found")
    grid = cand.grid
    blobs = [grid.slots[k] for k in sorted(grid.slots)]
    # The band of a settled digit comes from the tallest members: a turning drum's
    # digit is cut by the aperture and sits off the line.
    ref_h = float(np.percentile([b.h for b in blobs], 80))
    full = [b for b in blobs if b.h >= 0.9 * ref_h]
    slope, icpt = _line_through(full if len(full) >= 2 else blobs)
    full = [b for b in full if abs(b.cy - icpt - slope * b.cx) < 0.08 * ref_h] or full
    top = float(np.median([b.y - (icpt + slope * b.cx) for b in full]))
    bottom = float(np.median([b.bottom - (icpt + slope * b.cx) for b in full]))
    height, width = grey.shape
    if digits == 1:
        # The window is the cell: a single drum gives no pitch to measure.
        return Row(
            cand.light_on_dark,
            slope,
            icpt,
            top,
            bottom,
            4.0 * width,
            (blobs[0].cx,),
            frozenset({0}),
        )
    span, found = grid.span, len(grid.slots)
    if span > digits:
        return NoReading(f"found {span} digit cells, expected {digits}")
    if found < max(2, digits // 3):
        return NoReading(f"found {found} digit cells, expected {digits}")
    pitch = grid.pitch
    ks = list(range(span))
    need = digits - span
    opposite: set[int] = set()
    if need:
        options = []
        for left in range(need + 1):
            extra = [-1 - i for i in range(left)] + [span + i for i in range(need - left)]
            proofs = []
            for k in extra:
                cx = grid.anchor + k * pitch
                proofs.append((*_evidence(grey, (cx, icpt + slope * cx), pitch, (top, bottom)), k))
            if all(p[0] >= 0.5 for p in proofs):
                options.append((left, proofs))
        if len(options) != 1:
            why = "" if not options else " (cannot tell at which end the missing one is)"
            return NoReading(f"found {span} digit cells, expected {digits}{why}")
        left, proofs = options[0]
        ks = list(range(-left, span + need - left))
        opposite = {k + left for _, light, k in proofs if light != cand.light_on_dark}
    centres = tuple(grid.anchor + k * pitch for k in ks)
    shift = ks.index(0)
    found_cells = frozenset(k + shift for k in grid.slots)
    return Row(
        cand.light_on_dark,
        slope,
        icpt,
        top,
        bottom,
        pitch,
        centres,
        found_cells,
        frozenset(opposite),
    )


# ---------------------------------------------------------------------------
# Stage 3: level the row and split it into cells


def _level(grey: Image, row: Row) -> tuple[Image, Row, npt.NDArray[np.float64]]:
    """Turn the window so the row is horizontal; return the affine used (2x3)."""
    xc = (row.centres[0] + row.centres[-1]) / 2 if len(row.centres) > 1 else row.centres[0]
    yc = row.intercept + row.slope * xc
    angle = math.degrees(math.atan(row.slope))
    matrix = cv2.getRotationMatrix2D((xc, yc), angle, 1.0)
    if abs(angle) < 0.3:  # not worth the resampling blur
        matrix = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float64)
        levelled = grey
        stretch = 1.0
    else:
        height, width = grey.shape
        levelled = cv2.warpAffine(
            grey, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        stretch = math.hypot(1.0, row.slope)
    centres = tuple(xc + (c - xc) * stretch for c in row.centres)
    flat = Row(
        row.light_on_dark,
        0.0,
        yc,
        row.top,
        row.bottom,
        row.pitch * stretch,
        centres,
        row.found,
        row.opposite,
    )
    return levelled, flat, np.asarray(matrix, dtype=np.float64)


def _back(
    matrix: npt.NDArray[np.float64], points: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    inverse = cv2.invertAffineTransform(matrix)
    pts = np.array(points, dtype=np.float64)
    mapped = pts @ inverse[:, :2].T + inverse[:, 2]
    return [(float(x), float(y)) for x, y in mapped]


@dataclass(frozen=True)
class _Part:
    """Vertically connected ink inside a cell: a whole digit or the visible part of one."""

    x0: int
    x1: int
    top: int
    bottom: int
    labels: tuple[int, ...]

    def merge(self, x0: int, x1: int, top: int, bottom: int, label: int) -> _Part:
        return _Part(
            min(self.x0, x0),
            max(self.x1, x1),
            min(self.top, top),
            max(self.bottom, bottom),
            (*self.labels, label),
        )


def _cell_ink(region: Image, light_on_dark: bool, band: tuple[float, float]) -> Image:
    """Glyph strokes of one cell as a 0/255 mask, with uneven light taken out."""
    return _cell_flat(region, light_on_dark, band)[0]


def _cell_flat(
    region: Image, light_on_dark: bool, band: tuple[float, float]
) -> tuple[Image, Image]:
    """Glyph strokes of one cell as a 0/255 mask, and as levelled grey (ink bright).

    A white top-hat with a kernel a bit under half the digit height keeps strokes and
    drops what is broader (glare, shading across the drum, the drum face itself).
    """
    top, bottom = band
    h = bottom - top
    ink = _ink(region, light_on_dark)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_odd(0.45 * h), _odd(0.45 * h)))
    flat = cv2.morphologyEx(ink, cv2.MORPH_TOPHAT, kernel)
    core = flat[max(0, round(top)) : max(1, round(bottom))]
    if core.size == 0 or int(core.max()) < 4:
        return np.zeros_like(region), np.zeros_like(region)
    thr, _ = cv2.threshold(core, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    peak = float(np.percentile(core, 99.5))
    thr = max(thr, 0.25 * peak)
    mask = np.where(flat > thr, 255, 0).astype(np.uint8)
    soft = np.clip(flat.astype(np.float32) * (255.0 / max(peak, 1.0)), 0, 255).astype(np.uint8)
    # Ink across the whole cell outside the digit band is the bezel or a drum rim, and
    # ink down the whole height at the sides is a separator: cut them off so a part
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

    Components stacked close above each other and overlapping sideways form one
    part (a digit broken by glare, or two strokes of a seven-segment digit); what
    stands at the sides of the cell is drum edge, separator or a neighbour's digit.
    """
    top, bottom = band
    h = bottom - top
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    width = mask.shape[1]
    comps = []
    for label in range(1, n):
        x, y, w, ch, area = stats[label].tolist()
        if area < max(3.0, 0.006 * h * h):
            continue  # noise, JPEG ringing
        off = abs(x + w / 2 - width / 2) / width
        at_side = x == 0 or x + w >= width
        if (at_side and off > 0.25) or (w < 0.2 * h and off > 0.3):
            continue  # drum edge, separator, neighbour's glyph
        if w < 0.25 * h and ch > 1.15 * h:
            continue  # a separator inside the cell
        comps.append((y, x, x + w, y + ch, label))
    comps.sort()
    gap = 0.12 * h
    parts: list[_Part] = []
    for y0, x0, x1, y1, label in comps:
        for k, p in enumerate(parts):
            if y0 <= p.bottom + gap and y1 >= p.top - gap and x0 <= p.x1 + gap and x1 >= p.x0 - gap:
                parts[k] = p.merge(x0, x1, y0, y1, label)
                break
        else:
            parts.append(_Part(x0, x1, y0, y1, (label,)))

    def overlap(p: _Part) -> float:
        return min(p.bottom, bottom) - max(p.top, top)

    parts = [
        p
        for p in parts
        if overlap(p) >= 0.2 * h and abs((p.x0 + p.x1) / 2 - width / 2) <= 0.35 * width
    ]
    parts.sort(key=lambda p: -overlap(p))
    chosen = np.isin(labels, [lb for p in parts for lb in p.labels])
    return np.where(chosen, 255, 0).astype(np.uint8), parts


def _minority_polarity(region: Image, band: tuple[float, float]) -> bool | None:
    """Digits are the minority of a drum's face: ink is the rarer side of mid-grey.

    Returns True for light digits, None when the split is too even to tell.
    """
    width = region.shape[1]
    core = region[
        max(0, round(band[0])) : max(1, round(band[1])), round(0.1 * width) : round(0.9 * width)
    ]
    if core.size == 0:
        return None
    lo, hi = np.percentile(core, (5, 95))
    if hi - lo < MIN_CONTRAST:
        return None
    dark = float(np.mean(core < (lo + hi) / 2))
    if 0.4 <= dark <= 0.6:
        return None
    return dark > 0.6


def _glyph_image(ink: Image, rows: tuple[float, float], cols: tuple[int, int]) -> Image:
    """Cut one digit box out of the cell's ink, dark on white, GLYPH_PX tall, bordered.

    Rows outside the cell (a part digit's hidden part) stay white, so Tesseract sees the
    visible part where it belongs in the digit.
    """
    r0, r1 = round(rows[0]), round(rows[1])
    pad = max(1, round(0.06 * (r1 - r0)))
    c0, c1 = cols[0] - pad, cols[1] + pad
    height, width = ink.shape
    box = np.zeros((max(1, r1 - r0), max(1, c1 - c0)), dtype=np.uint8)
    sr0, sr1, sc0, sc1 = max(0, r0), min(height, r1), max(0, c0), min(width, c1)
    if sr1 > sr0 and sc1 > sc0:
        box[sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0] = ink[sr0:sr1, sc0:sc1]
    scale = GLYPH_PX / box.shape[0]
    size = (max(1, round(box.shape[1] * scale)), GLYPH_PX)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    glyph = cv2.bitwise_not(cv2.resize(box, size, interpolation=interp))
    return cv2.copyMakeBorder(
        glyph, BORDER_PX, BORDER_PX, BORDER_PX, BORDER_PX, cv2.BORDER_CONSTANT, value=255
    )


def _soft_source(ink: Image, soft: Image) -> Image:
    """The levelled grey of the chosen glyph parts only, edges kept anti-aliased:
    Tesseract's LSTM reads grey, and hard binary edges on small digits cost it."""
    near = cv2.dilate(ink, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    return np.where(near > 0, np.maximum(soft, ink // 2), 0).astype(np.uint8)


def _glyphs(
    ink: Image, parts: list[_Part], band: tuple[float, float], slack: float = ROLL_SHIFT
) -> tuple[Glyph, ...]:
    """Name each part settled, leaving or entering, by where it sits against the band.

    The drum turns upwards: the digit being left moves up out of the cell and the
    next one comes in from below, so a part above the band is the lower digit.
    """
    top, bottom = band
    h = bottom - top
    if not parts:
        return ()
    main = parts[0]
    main_h = main.bottom - main.top
    shift = ((main.top + main.bottom) / 2 - (top + bottom) / 2) / h
    if main_h >= 0.88 * h and abs(shift) < slack:
        image = _glyph_image(ink, (main.top, main.bottom), (main.x0, main.x1))
        return (Glyph(image, "settled", 1.0, shift),)
    out = []
    for part in parts:
        visible = min(1.0, (part.bottom - part.top) / h)
        cols = (part.x0, part.x1)
        if (part.top + part.bottom) / 2 < (top + bottom) / 2:
            image = _glyph_image(ink, (part.bottom - h, part.bottom), cols)
            out.append(Glyph(image, "leaving", visible, (part.bottom - bottom) / h))
        else:
            image = _glyph_image(ink, (part.top, part.top + h), cols)
            out.append(Glyph(image, "entering", visible, (part.top - top) / h))
    return tuple(out)


def _digit_likeness(ink: Image, parts: list[_Part], band: tuple[float, float]) -> float:
    """How well the best part fills the band like a digit does (0..1).

    In the wrong polarity the drum face around a digit survives as a frame: a part
    whose outline, holes filled, is a solid rectangle. No digit but a bar-like 1 is.
    """
    if not parts:
        return 0.0
    top, bottom = band
    h = bottom - top
    part = parts[0]
    overlap = (min(part.bottom, bottom) - max(part.top, top)) / h
    part_w, part_h = part.x1 - part.x0, part.bottom - part.top
    if part_h > 1.3 * h or part_w < 0.08 * h:
        return float(overlap) * 0.3  # a separator, a speck
    if part_w >= 0.4 * part_h:
        crop = ink[part.top : part.bottom, part.x0 : part.x1]
        outlines, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        solid = np.zeros_like(crop)
        cv2.drawContours(solid, outlines, -1, 255, thickness=cv2.FILLED)
        if float(np.count_nonzero(solid)) > 0.9 * crop.size:
            return float(overlap) * 0.3
    return float(overlap)


@dataclass(frozen=True)
class _CellCut:
    """One cell's pixels: where in the levelled window, and scaled for cleaning."""

    x0: int
    y0: int
    x1: int
    y1: int
    scale: float
    region: Image


def _cut(levelled: Image, row: Row, i: int) -> _CellCut | None:
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
        region = cv2.resize(region, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return _CellCut(x0, y0, x1, y1, scale, region)


def _band_in(cut: _CellCut, row: Row) -> tuple[float, float]:
    return (
        (row.intercept + row.top - cut.y0) * cut.scale,
        (row.intercept + row.bottom - cut.y0) * cut.scale,
    )


def _clean(
    cut: _CellCut, band: tuple[float, float], prefer: bool
) -> tuple[bool, Image, list[_Part]]:
    """Polarity, ink and parts of one cell.

    Per cell, because a counter may mix them (a red drum with white digits on a
    black-on-white counter). The digit is the minority of the face; when that is
    too even to tell, the polarity showing the more digit-like part wins, and ties
    go to the row's polarity.
    """
    minority = _minority_polarity(cut.region, band)
    order = (prefer, not prefer) if minority is None else (minority,)
    best: tuple[float, bool, Image, list[_Part]] | None = None
    for light in order:
        ink, parts = _parts(_cell_ink(cut.region, light, band), band)
        score = _digit_likeness(ink, parts, band) + (0.1 if light == prefer else 0)
        if best is None or score > best[0]:
            best = (score, light, ink, parts)
    assert best is not None
    return best[1], best[2], best[3]


def _refine_band(row: Row, found: list[tuple[_CellCut, list[_Part]]]) -> Row:
    """Measure the settled band again on the levelled cells.

    The first band came from bounding boxes in the tilted window, which a few
    degrees of rotation make taller; a band too tall would make every digit look
    shifted.
    """
    tops, bottoms = [], []
    h = row.digit_height
    for cut, parts in found:
        if not parts:
            continue
        part = parts[0]
        top, bottom = part.top / cut.scale + cut.y0, part.bottom / cut.scale + cut.y0
        if 0.75 * h <= bottom - top <= 1.1 * h:
            tops.append(top - row.intercept)
            bottoms.append(bottom - row.intercept)
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
        region = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    cut = _CellCut(0, 0, width, height, scale, region)
    rh = region.shape[0]
    guess = (0.5 - LONE_DIGIT / 2) * rh, (0.5 + LONE_DIGIT / 2) * rh
    prefer = _minority_polarity(region, guess)
    light, _, parts = _clean(cut, guess, True if prefer is None else prefer)
    edge = max(1.0, 0.02 * rh)
    whole = [p for p in parts if p.top > edge and p.bottom < rh - edge and p.bottom - p.top >= 0.4 * rh]
    h = max((p.bottom - p.top for p in whole), default=LONE_DIGIT * rh)
    band = (rh / 2 - h / 2, rh / 2 + h / 2)
    mask, soft = _cell_flat(region, light, band)
    ink, parts = _parts(mask, band)
    source = _soft_source(ink, soft) if SOFT_GLYPHS else ink
    corners = ((0.0, 0.0), (float(width), 0.0), (float(width), float(height)), (0.0, float(height)))
    # A user's crop centres the digit only roughly: allow more slack than in a row.
    glyphs = _glyphs(source, parts, band, slack=0.2)
    cell = Cell((0, 0, width, height), corners, light, ink, glyphs)
    return Cells((cell,), 0.0, light, h / scale, 1 if whole else 0)


def split_cells(grey: Image, digits: int) -> Cells | NoReading:
    """Find, level and cut the window into `digits` cleaned cells."""
    if digits == 1:
        return _lone_cell(grey)
    row = find_row(grey, digits)
    if isinstance(row, NoReading):
        return row
    levelled, flat, matrix = _level(grey, row)
    cuts = []
    for i in range(len(flat.centres)):
        cut = _cut(levelled, flat, i)
        if cut is None:
            return NoReading(f"cell {i + 1} of {digits} lies outside the window")
        cuts.append(cut)
    polarity = []
    found = []
    for i, cut in enumerate(cuts):
        prefer = flat.light_on_dark != (i in flat.opposite)
        light, _, parts = _clean(cut, _band_in(cut, flat), prefer)
        polarity.append(light)
        if i in flat.found:
            found.append((cut, parts))
    flat = _refine_band(flat, found)
    cells = []
    for cut, light in zip(cuts, polarity, strict=True):
        band = _band_in(cut, flat)
        mask, soft = _cell_flat(cut.region, light, band)
        ink, parts = _parts(mask, band)
        source = _soft_source(ink, soft) if SOFT_GLYPHS else ink
        corners = _back(
            matrix, [(cut.x0, cut.y0), (cut.x1, cut.y0), (cut.x1, cut.y1), (cut.x0, cut.y1)]
        )
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        bx, by = max(0, math.floor(min(xs))), max(0, math.floor(min(ys)))
        bw = min(grey.shape[1], math.ceil(max(xs))) - bx
        bh = min(grey.shape[0], math.ceil(max(ys))) - by
        cells.append(Cell((bx, by, bw, bh), tuple(corners), light, ink, _glyphs(source, parts, band)))
    angle = math.degrees(math.atan(row.slope))
    return Cells(tuple(cells), angle, row.light_on_dark, flat.digit_height, len(row.found))


# ---------------------------------------------------------------------------
# Stage 4: recognise and assemble


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


def _shown(symbols: Sequence[Symbol]) -> str:
    return "".join(s.text for s in symbols)


def _variants(image: Image) -> tuple[Image, ...]:
    """The same glyph as Tesseract might have seen it through another camera: smaller,
    bolder, thinner, softer. Its misreads follow the exact pixels, so reads that
    agree across these are worth trusting and reads that scatter are not."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    return (
        image,
        cv2.resize(image, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA),
        cv2.erode(image, kernel),  # dark ink on white: erode thickens the strokes
        cv2.dilate(image, kernel),
        cv2.GaussianBlur(image, (0, 0), 1.0),
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
    (so each read sees other neighbours): one Tesseract call reads them all."""
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
    width = max(r.shape[1] for r in rows)
    sheet = np.full((top, width), 255, dtype=np.uint8)
    for line, row in zip(layout, rows, strict=True):
        sheet[line.top : line.top + line.height, : row.shape[1]] = row
    return sheet, layout


@dataclass(frozen=True)
class _Vote:
    guess: _Guess | None
    shown: str  # what the first line's read said, for NoReading reasons


def _tally(guesses: Sequence[_Guess | None]) -> _Guess | None:
    """The digit most variants read, its confidence scaled by how many agreed.

    Measured on simulated counters and real meter digits: Tesseract's own
    confidence stays above 0.9 on most of its misreads, agreement does not.
    """
    read = [g for g in guesses if g is not None]
    if not read:
        return None
    counts: dict[int, list[float]] = {}
    for g in read:
        counts.setdefault(g.digit, []).append(g.confidence)
    digit, confs = max(counts.items(), key=lambda kv: (len(kv[1]), sum(kv[1])))
    agree = len(confs) / len(guesses)
    rivals = max((len(c) for d, c in counts.items() if d != digit), default=0)
    conf = float(np.median(confs)) * AGREEMENT[round(agree * (len(AGREEMENT) - 1))]
    if rivals >= 2:
        conf = min(conf, 0.3)
    return _Guess(digit, conf)


def _read_char(engine: Recogniser, image: Image) -> tuple[_Guess | None, str]:
    """One glyph on its own. With the whitelist Tesseract's LSTM returns nothing for
    some plain digits (a bold 8 it first takes for a B), so it asks again without."""
    symbols = engine.recognise(image, PSM_CHAR, whitelist=True)
    guess = _as_digit(symbols)
    if guess is None:
        symbols = engine.recognise(image, PSM_CHAR, whitelist=False)
        guess = _as_digit(symbols)
    return guess, _shown(symbols)


def _read_glyphs(engine: Recogniser, images: Sequence[Image]) -> list[_Vote]:
    """Every glyph read in every variant with one call; a glyph no line read is
    read again on its own, with less trust (no agreement to go by)."""
    if not images:
        return []
    sheet, layout = _sheet(images)
    per_line: list[list[list[Symbol]]] = [[[] for _ in images] for _ in layout]
    for sym in engine.recognise(sheet, PSM_BLOCK, whitelist=True):
        for v, line in enumerate(layout):
            if line.top - _LINE_GAP / 2 <= sym.y < line.top + line.height + _LINE_GAP / 2:
                k = int(sym.x // line.slot)
                if 0 <= k < len(images):
                    per_line[v][line.order[k]].append(sym)
                break
    votes = []
    for i, image in enumerate(images):
        guess = _tally([_as_digit(per_line[v][i]) for v in range(len(layout))])
        shown = _shown(per_line[0][i])
        if guess is None:
            single, shown = _read_char(engine, image)
            if single is not None:
                guess = _Guess(single.digit, single.confidence * AGREEMENT[1])
        votes.append(_Vote(guess, shown))
    return votes


def _part_weight(glyph: Glyph) -> float:
    """How far a read of a part digit can be trusted, from how much of it shows.

    Measured on simulated drums: the bottom three quarters of the digit leaving are
    read about as well as a whole digit; the top of the digit coming in is not
    (the tops of 0, 8 and 9, or of 2 and 3, look alike), so it needs more in view.
    """
    if glyph.role == "settled":
        return 1.0
    if glyph.role == "leaving":
        return float(np.clip((glyph.visible - 0.55) / 0.3, 0.0, 1.0))
    return float(np.clip((glyph.visible - 0.75) / 0.2, 0.0, 1.0)) * 0.8


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
        if guess is None:
            continue
        value = (guess.digit - 1) % 10 if glyph.role == "entering" else guess.digit
        votes.append((value, guess.confidence * _part_weight(glyph), guess.digit))
    if not votes:
        return None
    votes.sort(key=lambda v: -v[1])
    value, conf, seen = votes[0]
    if len(votes) > 1:
        if votes[1][0] == value:
            conf = 1 - (1 - conf) * (1 - votes[1][1])
        else:
            conf = min(conf, 0.2)
    return _Digit(value, conf, True, seen)


def _carry(digits: list[_Digit], cells: Sequence[Cell]) -> list[_Digit]:
    """A drum turns only while every drum to its right turns from 9 to 0.

    A higher drum that looks turned while its right neighbour stands still is
    mechanical slack when its digit is whole and only a little off the line (read
    it as the digit it shows), and a misread otherwise.
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


def preprocess(window: npt.NDArray[Any], digits: int) -> Cells | NoReading:
    """All the image work before Tesseract: the cells `snapshot` shows to users."""
    if digits < 1:
        return NoReading(f"digits must be at least 1, got {digits}")
    try:
        grey = to_grey(window)
    except ValueError as err:
        return NoReading(str(err))
    if grey.shape[0] < 8 or grey.shape[1] < 8:
        return NoReading(f"window is too small ({grey.shape[1]}x{grey.shape[0]} px)")
    return split_cells(grey, digits)


def read_window(window: npt.NDArray[Any], digits: int, engine: Recogniser) -> Reading | NoReading:
    """The whole stage: preprocessing, then the engine's calls, then assembly."""
    cells = preprocess(window, digits)
    if isinstance(cells, NoReading):
        return cells
    return recognise_cells(cells, engine)


# ---------------------------------------------------------------------------
# Engines

_TESSDATA_DIRS = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
    "/opt/homebrew/share/tessdata",
)
_WHITELIST = "0123456789"


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
    """Tesseract in-process: the model stays loaded, a call costs milliseconds.

    A TessBaseAPI is not thread-safe, so each thread gets its own, created once.
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
        self._api(PSM_BLOCK, whitelist=True)  # fail now, with the reason, not on the first frame

    def _api(self, psm: int, whitelist: bool) -> Any:
        apis: dict[tuple[int, bool], Any] | None = getattr(self._local, "apis", None)
        if apis is None:
            apis = {}
            self._local.apis = apis
        api = apis.get((psm, whitelist))
        if api is None:
            tr = self._tesserocr
            try:
                api = tr.PyTessBaseAPI(
                    path=self._tessdata, lang="eng", psm=psm, oem=tr.OEM.LSTM_ONLY
                )
            except RuntimeError as err:
                raise OcrUnavailable(
                    f"tesserocr cannot load eng.traineddata from {self._tessdata}: {err}"
                ) from err
            if whitelist:
                api.SetVariable("tessedit_char_whitelist", _WHITELIST)
            apis[(psm, whitelist)] = api
        return api

    def recognise(self, image: Image, psm: int, whitelist: bool = True) -> tuple[Symbol, ...]:
        tr = self._tesserocr
        api = self._api(psm, whitelist)
        img = np.ascontiguousarray(image)
        api.SetImageBytes(img.tobytes(), img.shape[1], img.shape[0], 1, img.shape[1])
        api.SetSourceResolution(300)
        if api.Recognize() is False:
            raise OcrFailure("tesserocr could not recognise the image")
        out = []
        level = tr.RIL.SYMBOL
        iterator = api.GetIterator()
        if iterator is None:
            return ()
        for r in tr.iterate_level(iterator, level):
            try:
                text = r.GetUTF8Text(level)
            except RuntimeError:  # an empty result raises instead of returning ""
                continue
            box = r.BoundingBox(level)
            if not text or box is None:
                continue
            x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            out.append(Symbol(text.strip(), r.Confidence(level) / 100.0, x, y))
        return tuple(out)

    def read(self, window: npt.NDArray[Any], digits: int) -> Reading | NoReading:
        return read_window(window, digits, self)


_HOCR_CHAR = re.compile(
    r"<span class=['\"]ocrx_cinfo['\"] title=['\"]x_bboxes (\d+) (\d+) (\d+) (\d+); "
    r"x_conf ([\d.]+)['\"]>([^<]*)</span>"
)


class PytesseractEngine:
    """The tesseract CLI, one process per call (about 150 ms here, more on a Pi).

    Per-character confidences come from hOCR with `hocr_char_boxes`; image_to_data
    only gives them per word.
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
        # --dpi: a PNG without resolution is taken as 70 dpi, which skews size checks.
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
        return read_window(window, digits, self)


def _self_test(engine: TesserocrEngine | PytesseractEngine) -> None:
    """Read a rendered '42': proves the model loads and the backend runs."""
    img = np.full((60, 90), 255, dtype=np.uint8)
    cv2.putText(img, "42", (12, 48), cv2.FONT_HERSHEY_SIMPLEX, 1.5, 0, 4)
    try:
        text = "".join(s.text for s in engine.recognise(img, PSM_LINE))
    except OcrFailure as err:
        raise OcrUnavailable(f"{engine.name}: {err}") from err
    if text != "42":
        raise OcrUnavailable(f"{engine.name}: self-test read {text!r} instead of '42'")


def make_engine(config: OcrConfig) -> TesserocrEngine | PytesseractEngine:
    """The configured backend, checked to work; `auto` prefers tesserocr."""
    problems = []
    if config.engine in ("auto", "tesserocr"):
        try:
            engine: TesserocrEngine | PytesseractEngine = TesserocrEngine(
                find_tessdata(config.tessdata)
            )
            _self_test(engine)
            return engine
        except OcrUnavailable as err:
            if config.engine == "tesserocr":
                raise
            problems.append(str(err))
            log.info("ocr engine=tesserocr unavailable reason=%r", str(err))
    try:
        if config.tessdata:
            find_tessdata(config.tessdata)
        engine = PytesseractEngine(config.tessdata, config.timeout_s)
        _self_test(engine)
        return engine
    except OcrUnavailable as err:
        problems.append(str(err))
    raise OcrUnavailable("; ".join(dict.fromkeys(problems)))
