"""Find the counter in a whole frame and propose the `window.*` values for it.

`edgemeter locate` is the first step of tuning: the user knows how many drums the
counter has, not where it sits in the picture. The search looks for rows of
`digits` evenly pitched, digit-like blobs of one height (drums carry their digits at
a fixed pitch, so a row of them is more regular than labels or the numbers around a
speedometer), in both polarities and at three scales. It ranks the rows, then has
the OCR read windows around the best few. Only a window the OCR reads as `digits`
digits is proposed: a guess the user would paste unchecked is worse than none.

It does not change the config and keeps no state; `snapshot` draws the result.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edgemeter.config import Config, WindowConfig
from edgemeter.ocr import (
    NoReading,
    OcrEngine,
    OcrUnavailable,
    Reading,
    make_engine,
    preprocess,
    to_grey,
)
from edgemeter.snapshot import (
    EXIT_ENGINE,
    EXIT_FAILURE,
    EXIT_OK,
    FRAME_PANEL_WIDTH,
    draw_message,
    grab_frame,
    render_snapshot,
    window_to_frame,
    write_png,
)
from edgemeter.source import Frame, SourceEnded, SourceError
from edgemeter.window import DigitWindow, WindowError, check_fits, crop

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]

# Frames wider than this are searched scaled down: a 2304 px camera frame costs four
# times the work, and its digits stay well above the smallest size searched.
SEARCH_WIDTH = 1280
# Blob heights searched at each level of the pyramid (px at that level). Each level
# halves the image, so three levels cover digits from 10 px to about 280 px.
MIN_BLOB_H, MAX_BLOB_H = 10, 70
LEVELS = 3
# Local threshold blocks (px at a level): about a digit, and half and twice that.
BLOCKS = (15, 31, 63)
# The window: the drums' cells (1.2-1.45 digit heights tall on the counters we know)
# plus a margin of about a third of a digit height all round, as the README asks of
# a user. The OCR's row finder reacts to what the margin holds (a bezel edge, a
# label), so a few sizes are read and the one that reads most surely, agreeing with
# the others, is proposed: a window in the middle of what works, not at its edge.
MARGIN = 1 / 3
VARIANTS = ((MARGIN, 1.45), (MARGIN, 1.3), (MARGIN, 1.7), (0.25, 1.45), (0.25, 1.3), (0.25, 1.7))
# Below this tilt a rotated window only adds resampling blur: the OCR levels the row
# itself, and the margin absorbs the slant.
MIN_ROTATION = 0.5
# Digits taller than this (px) are read scaled to it while searching.
READ_HEIGHT = 64
# Windows the OCR is asked to read in all (each costs a Tesseract pass per digit).
MAX_READS = 36
# Variants that must agree, every digit sure, to stop reading early; and variants
# that read nothing at all before the next candidate is tried.
AGREED = 3
GIVE_UP = 3
# A row of digits less than this times as tall as the tallest row is not the counter.
SMALLER = 0.6
# A digit read with this confidence (the plausibility stage's default) is sure. A
# proposal reads every settled digit surely, or one value through several sizes.
SURE = 0.6


@dataclass(frozen=True)
class Proposal:
    """Window values for the config, and what the OCR read through them."""

    x: int
    y: int
    width: int
    height: int
    rotation: float
    reading: str
    confidence: float

    def window(self) -> DigitWindow:
        return DigitWindow(self.x, self.y, self.width, self.height, self.rotation)

    def yaml(self) -> str:
        """The `window:` section to paste into config.yaml."""
        return window_yaml(self.window())


@dataclass(frozen=True)
class Row:
    """A candidate counter: `span` evenly pitched slots along a line, frame pixels.

    `found` slots hold a whole digit-like blob; the others (a turning drum, a drum of
    the other colour) are inferred from the pitch. `longer` is the length of the
    regular row when it goes on past `span` slots: a counter with more drums than
    configured, or a serial number.
    """

    light_on_dark: bool
    slope: float  # dy/dx of the line through the digit centres
    intercept: float  # y of that line at x = 0
    anchor: float  # x of the first slot's centre
    pitch: float  # slot spacing along x
    span: int
    found: int
    digit_height: float
    score: float
    longer: int = 0  # regular slots in the whole row, when it goes on past `span`

    def centre(self, slot: float) -> tuple[float, float]:
        x = self.anchor + slot * self.pitch
        return x, self.intercept + self.slope * x


# --------------------------------------------------------------------------- blobs


@dataclass(frozen=True)
class _Blob:
    x: float
    y: float
    w: float
    h: float
    fill: float  # share of the bounding box that is ink
    bar: bool  # a thin filled stroke: a 1, or a separator between drums

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


def _levels(grey: Image) -> Iterator[tuple[Image, float]]:
    """The search image and its halvings, each with its scale to frame pixels."""
    scale = 1.0
    if grey.shape[1] > SEARCH_WIDTH:
        scale = grey.shape[1] / SEARCH_WIDTH
        size = (SEARCH_WIDTH, max(1, round(grey.shape[0] / scale)))
        grey = np.asarray(cv2.resize(grey, size, interpolation=cv2.INTER_AREA), np.uint8)
    for _ in range(LEVELS):
        if min(grey.shape) < 3 * MIN_BLOB_H:
            return
        yield grey, scale
        grey = np.asarray(cv2.pyrDown(grey), np.uint8)
        scale *= 2


def _masks(ink: Image) -> Iterator[Image]:
    """Binarisations of one polarity (ink bright). A local threshold only separates a
    digit from its drum when its block spans both, and the digit size is not known
    yet. Each is also closed by a pixel: seven-segment digits are separate strokes."""
    lo, hi = np.percentile(ink, (2, 98))
    offset = max(4.0, 0.06 * float(hi - lo))
    kernel = np.ones((3, 3), np.uint8)
    mean_c = cv2.ADAPTIVE_THRESH_MEAN_C
    for block in BLOCKS:
        if block >= min(ink.shape):
            continue
        mask = np.asarray(
            cv2.adaptiveThreshold(ink, 255, mean_c, cv2.THRESH_BINARY, block, -offset), np.uint8
        )
        yield mask
        yield np.asarray(cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel), np.uint8)


def _digit_blobs(mask: Image, scale: float) -> list[_Blob]:
    """Connected components shaped like a digit, in frame pixels."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    height, width = mask.shape
    out = []
    for x, y, w, h, area in stats[1:n].tolist():
        if not MIN_BLOB_H <= h <= MAX_BLOB_H or not 0.08 * h <= w <= 1.1 * h:
            continue
        fill = area / (w * h)
        bar = w < 0.25 * h and fill > 0.7
        # Digits fill at most two thirds of their box (a bold 8); fuller blobs are
        # threshold artefacts beside a dark bezel, or the bars of a 1.
        if fill < 0.12 or fill > (0.97 if bar else 0.8):
            continue
        if x == 0 or y == 0 or x + w >= width or y + h >= height:
            continue  # cut by the frame's edge: no whole digit
        out.append(_Blob(x * scale, y * scale, w * scale, h * scale, fill, bar))
    return out


def _faces(slots: Sequence[_Blob], pitch: float, others: npt.NDArray[np.float64]) -> int:
    """How many slot blobs are light drum faces around dark digits rather than digits:
    as regular as the digits but taller, so a window sized on them is too large.

    A face holds a glyph of the other polarity and is full (a digit fills at most two
    thirds of its box) or spans its pitch (a digit keeps clear of its drum's edges);
    the hole of a 0 is held the same way, but a 0 is neither. A face whose digit
    touches its edge holds nothing, but is full and spans its pitch."""
    x, y, w, h = others.T if len(others) else (np.zeros(0),) * 4
    count = 0
    for b in slots:
        inside = (x >= b.x - 1) & (x + w <= b.x + b.w + 1)
        inside &= (y >= b.y - 1) & (y + h <= b.y + b.h + 1)
        holds = bool(np.any(inside & (h >= 0.5 * b.h) & (h <= 0.95 * b.h)))
        wide = b.w >= 0.88 * pitch
        count += (holds and (b.fill >= 0.62 or wide)) or (wide and b.fill >= 0.58)
    return count


# --------------------------------------------------------------------------- rows


def _line(blobs: Sequence[_Blob]) -> tuple[float, float]:
    """Slope and intercept of the line through most blob centres (tried through every
    pair, then refitted): a turning drum sits off the line and must not tilt it."""
    tol = 0.06 * float(np.median([b.h for b in blobs]))
    best: tuple[int, float, list[_Blob]] = (0, 0.0, [])
    for a, b in itertools.combinations(blobs, 2):
        if abs(b.cx - a.cx) < 1:
            continue
        slope = (b.cy - a.cy) / (b.cx - a.cx)
        if abs(slope) > 0.2:  # beyond 11 degrees: not one row
            continue
        errors = [abs(c.cy - a.cy - slope * (c.cx - a.cx)) for c in blobs]
        on = [c for c, e in zip(blobs, errors, strict=True) if e <= tol]
        closeness = -sum(e for e in errors if e <= tol)
        if (len(on), closeness) > (best[0], best[1]):
            best = (len(on), closeness, on)
    on = best[2]
    if len(on) < 2:
        return 0.0, float(np.median([b.cy for b in blobs]))
    slope, icpt = np.polyfit([b.cx for b in on], [b.cy for b in on], 1)
    return float(slope), float(icpt)


@dataclass(frozen=True)
class _Grid:
    anchor: float  # x of slot 0
    pitch: float
    slots: dict[int, _Blob]  # the chosen `digits` slots (or fewer), from 0
    off: int  # members on the line but between slots
    longer: int  # regular slots in the whole row, when it goes on past the chosen ones

    @property
    def span(self) -> int:
        return max(self.slots) + 1


def _place(members: Sequence[_Blob], anchor: float, pitch: float) -> tuple[dict[int, _Blob], int]:
    slots: dict[int, _Blob] = {}
    off = 0
    for b in members:
        r = (b.cx - anchor) / pitch
        k = round(r)
        if abs(r - k) > 0.2 or k in slots:
            off += 1
        else:
            slots[k] = b
    return slots, off


def _longer(inside: dict[int, _Blob], slots: dict[int, _Blob], start: int, digits: int) -> int:
    """The length of the row when it goes on right past the chosen slots with blobs
    just like them: more drums than meter.digits says, or a long serial number."""
    height = float(np.median([b.h for b in inside.values()]))
    alike = {k for k, b in slots.items() if not b.bar and 0.87 <= b.h / height <= 1.15}
    alike |= set(inside)
    if start - 1 not in alike and start + digits not in alike:
        return 0
    first, last = start, start + digits - 1
    while first - 1 in alike:
        first -= 1
    while last + 1 in alike:
        last += 1
    return last - first + 1


def _grid(members: Sequence[_Blob], digits: int) -> _Grid | None:
    """The pitch and phase that put the most members on evenly spaced slots, at most
    `digits` consecutive ones: drums are evenly spaced; separators sit half-way.

    Drum digits are at least 0.7 digit heights apart (a seven-segment register
    0.78, drums more): a closer pitch would put the separators between them on it."""
    height = float(np.median([b.h for b in members]))
    xs = sorted(b.cx for b in members if not b.bar) or sorted(b.cx for b in members)
    pitches = {
        (b - a) / m
        for a, b in itertools.pairwise(xs)
        for m in (1, 2)
        if 0.7 * height <= (b - a) / m <= 1.9 * height
    }
    best: tuple[float, dict[int, _Blob], int, dict[int, _Blob], int] | None = None
    for pitch, anchor in itertools.product(pitches, xs):
        slots, off = _place(members, anchor, pitch)
        for start in slots:
            inside = {k: b for k, b in slots.items() if start <= k < start + digits}
            if len(inside) < 2:
                continue
            score = len(inside) - 0.3 * off - 0.2 * (len(slots) - len(inside))
            if best is None or score > best[0]:
                best = (score, inside, off, slots, start)
    if best is None:
        return None
    _, inside, off, slots, start = best
    longer = _longer(inside, slots, start, digits)
    # Refit pitch and phase on the chosen slots: the seed pair had pixel noise.
    ks = sorted(inside)
    pitch, icpt = np.polyfit(ks, [inside[k].cx for k in ks], 1)
    if pitch <= 0:
        return None
    first = float(icpt + pitch * ks[0])
    return _Grid(first, float(pitch), {k - ks[0]: inside[k] for k in ks}, off, longer)


def _rows(
    blobs: Sequence[_Blob], digits: int, light_on_dark: bool, others: npt.NDArray[np.float64]
) -> list[Row]:
    """Candidate rows among one mask's blobs: similar heights along a straight line."""
    rows: list[Row] = []
    seen: set[frozenset[int]] = set()
    heights = np.array([b.h for b in blobs])
    cys = np.array([b.cy for b in blobs])
    cxs = np.array([b.cx for b in blobs])
    for seed in np.argsort(-heights, kind="stable").tolist():
        s = blobs[seed]
        ratio = heights / s.h
        near = (ratio >= 0.75) & (ratio <= 1.33) & (np.abs(cys - s.cy) < 0.5 * s.h)
        near &= np.abs(cxs - s.cx) < 2.0 * (digits + 1) * s.h
        index = np.flatnonzero(near).tolist()
        if len(index) < 2:
            continue
        slope, icpt = _line([blobs[i] for i in index])
        on = [i for i in index if abs(cys[i] - icpt - slope * cxs[i]) < 0.15 * s.h]
        key = frozenset(on)
        if len(on) < 2 or key in seen:
            continue
        seen.add(key)
        # Drums print every digit at one height: a blob much taller or shorter than
        # the row's middle is a drum face, a turning digit or something else.
        middle = float(np.median(heights[on]))
        members = [blobs[i] for i in on if 0.85 <= heights[i] / middle <= 1.18]
        # Thin strokes only: the separators between drums (or a row of ones nobody
        # could check); they sit half a pitch off the digits.
        if len(members) < 2 or all(b.w < 0.3 * b.h for b in members):
            continue
        grid = _grid(members, digits)
        if grid is None:
            continue
        chosen = list(grid.slots.values())
        found = len(chosen)
        if 2 * _faces(chosen, grid.pitch, others) >= found:
            continue
        height = float(np.median([b.h for b in chosen]))
        if found >= 3:
            slope, icpt = _line(chosen)
        # Drums are machined: their digits sit on the pitch to a few hundredths of it,
        # and at one height. Blobs that merely fall near a pitch are something else.
        spread = float(np.std([b.h for b in chosen])) / height
        misfit = float(
            np.mean([abs(b.cx - grid.anchor - k * grid.pitch) for k, b in grid.slots.items()])
        )
        score = found - 0.3 * grid.off - 2.0 * spread - 4.0 * misfit / grid.pitch
        rows.append(
            Row(
                light_on_dark,
                slope,
                icpt,
                grid.anchor,
                grid.pitch,
                grid.span,
                found,
                height,
                score,
                grid.longer,
            )
        )
    return rows


def _same(a: Row, b: Row) -> bool:
    """Whether two candidates are one row of drums (seen in different masks)."""
    if abs(a.pitch - b.pitch) > 0.12 * a.pitch:
        return False
    if abs(a.digit_height - b.digit_height) > 0.2 * a.digit_height:
        return False
    # The same slots: one phase and span (the same phase with another span is another
    # window, and a stray blob one pitch beyond the drums must not hide the right one).
    bx, by = b.centre(0)
    on_line = abs(by - (a.intercept + a.slope * bx)) < 0.3 * a.digit_height
    return on_line and abs(bx - a.anchor) < 0.25 * a.pitch and a.span == b.span


def _rank(row: Row, digits: int, tallest: float) -> float:
    # The counter is the largest print on a meter and fills its `digits` slots; labels
    # and serial numbers are smaller, or break the pitch.
    longer = 1.0 if row.longer else 0.0
    return row.score - 0.5 * (digits - row.found) + 1.5 * row.digit_height / tallest - longer


def find_rows(frame_image: npt.NDArray[np.uint8], digits: int) -> list[Row]:
    """Candidate rows of `digits` drums in the frame, the most convincing first.

    A row must show at least half its drums whole; the rest may be turning or of the
    other colour (a red decimal drum). Rows that go on past `digits` slots are kept,
    with `longer` set, so the caller can say that meter.digits may be wrong.
    """
    grey = to_grey(frame_image)
    rows: list[Row] = []
    for level, scale in _levels(grey):
        per_polarity: dict[bool, list[list[_Blob]]] = {}
        for light in (True, False):
            ink = level if light else np.asarray(cv2.bitwise_not(level), np.uint8)
            per_polarity[light] = [_digit_blobs(mask, scale) for mask in _masks(ink)]
        for light, per_mask in per_polarity.items():
            others = np.array(
                [(b.x, b.y, b.w, b.h) for blobs in per_polarity[not light] for b in blobs],
                np.float64,
            ).reshape(-1, 4)
            for blobs in per_mask:
                if len(blobs) >= 2:
                    rows.extend(_rows(blobs, digits, light, others))
    need = max(2, math.ceil(digits / 2))
    rows = [r for r in rows if r.found >= need]
    tallest = max((r.digit_height for r in rows), default=1.0)
    distinct: list[Row] = []
    for row in sorted(rows, key=lambda r: -_rank(r, digits, tallest)):
        if not any(_same(row, kept) for kept in distinct):
            distinct.append(row)
    return distinct


# --------------------------------------------------------------------------- windows


def ends(row: Row, digits: int) -> list[int]:
    """Ways of adding the drums the row lacks: how many go before its first slot.
    After it first: the drums a row misses are most often at its right end (the
    turning last drum, red decimal drums of the other polarity)."""
    return list(range(digits - row.span + 1)) if row.span <= digits else []


def window_for(
    row: Row,
    digits: int,
    frame_size: tuple[int, int],
    before: int = 0,
    margin: float = MARGIN,
    drum_height: float = VARIANTS[0][1],
) -> DigitWindow | None:
    """The window around `digits` drums of the row, `before` of them added before its
    first slot, clipped to the frame; None if the drums do not fit in it."""
    angle = -math.degrees(math.atan(row.slope))  # the line rises to the right: > 0
    rotation = round(angle, 1) if abs(angle) >= MIN_ROTATION else 0.0
    stretch = math.hypot(1.0, row.slope)  # pitch along the line, per pitch along x
    h = row.digit_height
    size = (digits * row.pitch * stretch + 2 * margin * h, (drum_height + 2 * margin) * h)
    centre = row.centre((digits - 1) / 2 - before)
    return _clipped(centre, size, rotation, margin * h, frame_size)


def _clipped(
    centre: tuple[float, float],
    size: tuple[float, float],
    rotation: float,
    margin: float,
    frame_size: tuple[int, int],
) -> DigitWindow | None:
    """The window, its margin given up side by side where it leaves the frame; None
    if the drums themselves do (the OCR of a cut counter is no proposal)."""
    frame_w, frame_h = frame_size
    a = math.radians(rotation)
    along = np.array([math.cos(a), -math.sin(a)])  # counter-clockwise lean, y down
    across = np.array([math.sin(a), math.cos(a)])
    half_w, half_h = size[0] / 2, size[1] / 2
    # Distance from the centre to each side: left, right, top, bottom.
    sides = [half_w, half_w, half_h, half_h]
    least = [half_w - margin, half_w - margin, half_h - margin, half_h - margin]
    mid = np.array(centre, np.float64)
    for _ in range(32):
        worst = 0.0
        for sx, sy in ((0, 2), (1, 2), (1, 3), (0, 3)):
            point = mid + along * (sides[1] if sx else -sides[0])
            point += across * (sides[3] if sy == 3 else -sides[2])
            over_x = max(-point[0], point[0] - frame_w)
            over_y = max(-point[1], point[1] - frame_h)
            if over_x > 0:
                sides[sx] -= over_x
            if over_y > 0:
                sides[sy] -= over_y
            worst = max(worst, over_x, over_y)
        if worst <= 0.01:
            break
    if any(s < lo - 1.0 for s, lo in zip(sides, least, strict=True)):
        return None
    mid = mid + along * (sides[1] - sides[0]) / 2 + across * (sides[3] - sides[2]) / 2
    width, height = math.floor(sides[0] + sides[1]), math.floor(sides[2] + sides[3])
    # Whole pixels for the config: rounding may push a corner out by a pixel.
    for trim in range(4):
        w, h = width - trim, height - trim
        window = DigitWindow(
            max(0, round(mid[0] - w / 2)), max(0, round(mid[1] - h / 2)), w, h, rotation
        )
        try:
            check_fits(window, frame_w, frame_h)
        except WindowError:
            continue
        return window
    return None


# --------------------------------------------------------------------------- search


@dataclass(frozen=True)
class _Read:
    window: DigitWindow
    reading: Reading
    scale: float = 1.0  # the crop was read scaled by this

    @property
    def sure(self) -> int:
        return sum(c >= SURE for c in self.reading.confidences)

    @property
    def certain(self) -> bool:
        """Every digit read surely but those caught turning, and those as a counter
        turns: the last drum, and a drum before it only while it turns from 9."""
        reading = self.reading
        turning = [i for i, rolling in enumerate(reading.rolling) if rolling]
        n = len(reading.digits)
        if turning and turning != list(range(n - len(turning), n)):
            return False
        if any(reading.digits[i] != "9" for i in turning[1:]):
            return False
        pairs = zip(reading.confidences, reading.rolling, strict=True)
        return all(c >= SURE or rolling for c, rolling in pairs)


@dataclass(frozen=True)
class Search:
    """What the search saw: the proposal, or what to tell a user when there is none."""

    proposal: Proposal | None
    rows: int  # candidate rows of digit-like shapes
    reasons: tuple[str, ...]  # the OCR's answer for windows that did not read
    # A row of this many digit-like shapes was seen: is meter.digits right? 0 if none.
    longer: int = 0
    # Without a proposal: the window around the best-ranked row, unread.
    likely: DigitWindow | None = None


def _choose(reads: Sequence[_Read], digits: int, whole: bool) -> list[_Read]:
    """The reads of the value the window sizes agree on, the surest first.

    Every settled digit read surely; or, for a row whose every drum was seen (no end
    drum guessed), the same value through several sizes, however unsure: a dim or
    blurred counter, and the window is right all the same."""
    full = [r for r in reads if len(r.reading.digits) == digits]
    certain = [r for r in full if r.certain]
    if not certain:
        votes = Counter(r.reading.digits for r in full)
        agreed = [v for v, n in votes.items() if n >= AGREED]
        if not whole or not agreed:
            return []
        certain = [r for r in full if r.reading.digits == agreed[0]]
    votes = Counter(r.reading.digits for r in certain)
    value = max(votes, key=lambda v: votes[v])
    agreeing = [r for r in certain if r.reading.digits == value]
    return sorted(agreeing, key=lambda r: (-r.sure, -r.reading.confidence))


def _settled(reads: Sequence[_Read]) -> bool:
    """Enough window sizes read the same value, every settled digit surely: stop."""
    certain = Counter(r.reading.digits for r in reads if r.certain)
    return bool(certain) and max(certain.values()) >= AGREED


def _window_image(frame_image: Image, window: DigitWindow, scale: float) -> Image:
    image = crop(frame_image, window)
    if scale < 1.0:
        image = np.asarray(
            cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), np.uint8
        )
    return image


def _read_window(
    frame_image: Image, window: DigitWindow, scale: float, engine: OcrEngine, digits: int
) -> Reading | NoReading:
    return engine.read(_window_image(frame_image, window, scale), digits)


def _read_sizes(
    frame_image: npt.NDArray[np.uint8],
    row: Row,
    before: int,
    engine: OcrEngine,
    digits: int,
    budget: int,
) -> tuple[list[_Read], list[str]]:
    """Read the window sizes around one placement of the row (at most `budget`).

    Large digits are read scaled down: the OCR brings every glyph to one size
    anyway, and a full-size window of a close-up camera costs ten times as much."""
    height, width = frame_image.shape[:2]
    scale = min(1.0, READ_HEIGHT / row.digit_height)
    reads: list[_Read] = []
    reasons: list[str] = []
    for tried, (margin, drum) in enumerate(VARIANTS[:budget], start=1):
        window = window_for(row, digits, (width, height), before, margin, drum)
        if window is None:
            continue
        result = _read_window(frame_image, window, scale, engine, digits)
        if isinstance(result, NoReading):
            reasons.append(result.reason)
        else:
            reads.append(_Read(window, result, scale))
        if _settled(reads) or (tried >= GIVE_UP and not reads):
            break
    return reads, reasons


def _measured(frame_image: Image, read: _Read, row: Row, digits: int) -> Row | None:
    """The row as the OCR cut it into cells, in frame pixels; None if the OCR read
    another row than the one the window was built around (a tall window may also
    hold a serial number, and the OCR takes whichever row convinces it most).

    The cells give the pitch and tilt more exactly than the blobs found the row: a
    turning or odd-coloured drum may have been left out of those, or a drum face
    taken for a digit."""
    cells = preprocess(_window_image(frame_image, read.window, read.scale), digits)
    if isinstance(cells, NoReading) or len(cells.cells) != digits:
        return None
    height = cells.digit_height / read.scale
    corners = np.array([c.corners for c in cells.cells], np.float64) / read.scale
    centres = np.asarray(
        cv2.perspectiveTransform(
            corners.mean(axis=1).reshape(-1, 1, 2), window_to_frame(read.window)
        ),
        np.float64,
    ).reshape(-1, 2)
    middle = float(np.mean(corners[:, :, 1]))
    if not 0.7 <= height / row.digit_height <= 1.4:
        return None
    if abs(middle - read.window.height / 2) >= 0.4 * row.digit_height:
        return None
    slope, icpt = (
        np.polyfit(centres[:, 0], centres[:, 1], 1) if digits > 1 else (0.0, centres[0, 1])
    )
    pitch, first = (
        np.polyfit(np.arange(digits), centres[:, 0], 1)
        if digits > 1
        else (row.pitch, centres[0, 0])
    )
    return dataclasses.replace(
        row,
        slope=float(slope),
        intercept=float(icpt),
        anchor=float(first),
        pitch=float(pitch),
        span=digits,
        found=digits,
        digit_height=height,
    )


def _confirm(
    frame_image: Image, agreeing: Sequence[_Read], row: Row, engine: OcrEngine, digits: int
) -> _Read | None:
    """The window to propose for the value the reads agree on: rebuilt on the cells the
    OCR cut, and read at full size as the daemon will read it. Else the first agreeing
    window that reads the same at full size, if the OCR read the intended row."""
    height, width = frame_image.shape[:2]
    for candidate in agreeing:
        measured = _measured(frame_image, candidate, row, digits)
        if measured is None:
            continue
        value = candidate.reading.digits
        window = window_for(measured, digits, (width, height))
        if window is not None:
            result = _read_window(frame_image, window, 1.0, engine, digits)
            if isinstance(result, Reading) and result.digits == value:
                rebuilt = _Read(window, result)
                if rebuilt.certain or not candidate.certain:
                    return rebuilt
        if candidate.scale == 1.0:
            return candidate
        result = _read_window(frame_image, candidate.window, 1.0, engine, digits)
        if isinstance(result, Reading) and result.digits == value:
            return _Read(candidate.window, result)
    return None


def search(frame_image: npt.NDArray[np.uint8], digits: int, engine: OcrEngine) -> Search:
    """What the search found: the proposal, or what to tell the user."""
    found = _search(frame_image, digits, engine)
    p = found.proposal
    log.debug(
        "locate digits=%d rows=%d reads_failed=%d proposal=%s",
        digits,
        found.rows,
        len(found.reasons),
        f"x={p.x} y={p.y} width={p.width} height={p.height} rotation={p.rotation:g}"
        f" reading={p.reading}"
        if p
        else None,
    )
    return found


def _search(frame_image: npt.NDArray[np.uint8], digits: int, engine: OcrEngine) -> Search:
    """Rank the candidate rows, then read windows around them until one reads surely.

    A row that goes on past `digits` slots is not proposed (a serial number, or more
    drums than meter.digits says): its length is reported instead."""
    height, width = frame_image.shape[:2]
    rows = find_rows(frame_image, digits)
    reasons: list[str] = []
    longer = 0
    likely: DigitWindow | None = None
    first: tuple[Row, list[_Read]] | None = None
    reads_left = MAX_READS
    # The counter is the largest print on a meter: while a row of large digits is in
    # view, a much smaller one is the serial number or a label, whether or not the
    # large one can be read (glare on the counter leaves the serial readable).
    # (Two blobs of one size in line are no row of digits yet: three are.)
    credible = [r.digit_height for r in rows if r.found >= min(3, digits)]
    least = SMALLER * max(credible, default=0.0)
    for row in rows:
        if row.digit_height < least:
            continue
        if row.longer:
            longer = max(longer, row.longer)
            continue
        for before in ends(row, digits):
            if reads_left <= 0:
                break
            if likely is None and _clear(row, digits):
                likely = window_for(row, digits, (width, height), before)
            reads, why = _read_sizes(frame_image, row, before, engine, digits, reads_left)
            reads_left -= len(reads) + len(why)
            reasons.extend(why)
            agreeing = _choose(reads, digits, row.span == digits)
            if agreeing and agreeing[0].sure == digits:
                confirmed = _confirm(frame_image, agreeing, row, engine, digits)
                if confirmed is not None:
                    return Search(_proposal(confirmed), len(rows), tuple(reasons), longer)
            # A turning or unsure digit: the counter caught mid-roll, or a window half
            # a drum off (the dark gaps between light digits are a row too). Another
            # candidate may still read every digit surely.
            elif agreeing and first is None:
                first = (row, agreeing)
            reasons.extend(
                f"read {r.reading.digits} (confidence {r.reading.confidence:.2f})" for r in reads
            )
    confirmed = None if first is None else _confirm(frame_image, first[1], first[0], engine, digits)
    if confirmed is not None:
        return Search(_proposal(confirmed), len(rows), tuple(reasons), longer)
    return Search(None, len(rows), tuple(reasons), longer, likely)


def _clear(row: Row, digits: int) -> bool:
    """A row clear enough to show a user unconfirmed: all its drums whole but one (a
    turning one), on the grid, of one height. Noise makes rows of a few blobs too."""
    return row.found >= max(3, digits - 1) and row.score >= row.found - 0.25


def _proposal(read: _Read) -> Proposal:
    w = read.window
    return Proposal(
        w.x, w.y, w.width, w.height, w.rotation, read.reading.digits, read.reading.confidence
    )


def propose_window(
    frame_image: npt.NDArray[np.uint8], digits: int, engine: OcrEngine
) -> Proposal | None:
    """Window values around the counter of `digits` drums, checked by reading them."""
    return search(frame_image, digits, engine).proposal


# --------------------------------------------------------------------------- command


def _explain(found: Search, digits: int) -> list[str]:
    """What to tell a user when no window could be proposed."""
    lines = []
    if found.rows == 0:
        lines.append(
            f"no row of {digits} digit-like shapes anywhere in the frame: is the counter in"
            " view, in focus and lit? (and is meter.digits right?)"
        )
    else:
        said = list(dict.fromkeys(found.reasons))[:3]
        lines.append(
            f"{found.rows} rows of digit-like shapes, but none read as {digits} digits"
            + (f"; the OCR said: {'; '.join(said)}" if said else "")
        )
    if found.longer:
        lines.append(
            f"a row of {found.longer} evenly spaced digits was seen: if that is the counter,"
            f" set meter.digits: {found.longer}"
        )
    return lines


def window_yaml(window: DigitWindow) -> str:
    """The `window:` section of config.yaml for a window."""
    return (
        "window:\n"
        f"  x: {window.x}\n"
        f"  y: {window.y}\n"
        f"  width: {window.width}\n"
        f"  height: {window.height}\n"
        f"  rotation: {window.rotation:g}\n"
    )


def _snapshot_with(
    frame_image: Image, config: Config, window: DigitWindow, engine: OcrEngine
) -> Image:
    """The snapshot PNG image as it will look with `window` in the config."""
    values = WindowConfig(window.x, window.y, window.width, window.height, window.rotation)
    image, _ = render_snapshot(frame_image, dataclasses.replace(config, window=values), engine)
    return image


def _write(out: Path, image: Image) -> bool:
    try:
        write_png(out, image)
    except OSError as err:
        print(f"edgemeter: cannot write {out}: {err}", file=sys.stderr)
        return False
    return True


def _report_failure(
    found: Search, config: Config, frame: Frame, engine: OcrEngine, out: Path
) -> int:
    digits = config.meter.digits
    print(
        f"edgemeter: no counter of {digits} digits found in the frame from {frame.origin}",
        file=sys.stderr,
    )
    for line in _explain(found, digits):
        print(f"  {line}", file=sys.stderr)
    if found.likely is None:
        text = f"no counter of {digits} digits found"
        image = draw_message(frame.image, text, max_width=FRAME_PANEL_WIDTH)
        if _write(out, image):
            print(f"  wrote {out}: the frame as the camera sees it", file=sys.stderr)
        return EXIT_FAILURE
    # The best-ranked row may well be the counter, caught with a drum between two
    # digits: the user can judge it from the snapshot, so show it, marked unconfirmed.
    if _write(out, _snapshot_with(frame.image, config, found.likely, engine)):
        print(
            f"  wrote {out}: the most likely window and what the OCR makes of it", file=sys.stderr
        )
    print("# NOT confirmed by the OCR: the most likely place of the counter. Check the PNG;")
    print("# a drum caught between two digits often causes this: try again when it settles.")
    print(window_yaml(found.likely), end="")
    return EXIT_FAILURE


def _report_proposal(
    found: Search, proposal: Proposal, config: Config, frame: Frame, engine: OcrEngine, out: Path
) -> int:
    if not _write(out, _snapshot_with(frame.image, config, proposal.window(), engine)):
        return EXIT_FAILURE
    print(
        f"# found the counter: read {proposal.reading} (confidence {proposal.confidence:.2f})"
        " through this window"
    )
    if proposal.confidence < SURE:
        print("# some digits read unsurely: check the PNG before using these values")
    if found.longer:
        print(
            f"# note: a row of {found.longer} evenly spaced digits is also in view;"
            " is meter.digits right?"
        )
    if config.window.corners is not None:
        print("# remove window.corners from the config: it overrides these values")
    print("# paste into config.yaml, replacing its window section:")
    print(proposal.yaml(), end="")
    print(f"# wrote {out}: the frame with this window, and the digits as the OCR sees them")
    return EXIT_OK


def run_locate(config: Config, out_path: Path | str = "locate.png") -> int:
    """`edgemeter locate`: grab a frame, propose window.*, print it, draw it.

    Exit status 0 with a confirmed proposal, 1 without one (or without a frame),
    3 without Tesseract (the proposal is confirmed by reading it)."""
    try:
        engine = make_engine(config.ocr, config.plausibility.min_confidence)
    except OcrUnavailable as err:
        print(f"edgemeter: {err} (locate confirms a window by reading it)", file=sys.stderr)
        return EXIT_ENGINE
    try:
        frame = grab_frame(config)
    except (SourceError, SourceEnded) as err:
        source = config.camera.source
        print(f"edgemeter: cannot take a frame from camera.source={source}: {err}", file=sys.stderr)
        return EXIT_FAILURE
    found = search(frame.image, config.meter.digits, engine)
    out = Path(out_path)
    if found.proposal is None:
        return _report_failure(found, config, frame, engine, out)
    return _report_proposal(found, found.proposal, config, frame, engine, out)
