"""The built-in simulated odometer: camera frames of a mechanical counter with known digits.

Three users depend on it: the daemon's default frame source (edgemeter runs with no
camera), the tests (frames with ground truth), and the accuracy benchmark (many counter
looks under bad light). So the default look is clean, and `random_style` /
`random_conditions` spread out to what real installations show.

Model of the counter (what the OCR has to cope with):

* Each drum carries the digits 0-9 around its circumference at a fixed pitch (about 1.4
  digit heights). The visible cell shows one digit centred when the drum is at rest.
  Counting up from d to d+1 moves d UP and out of the cell while d+1 comes in from
  BELOW, so a rolling drum shows the bottom of d above the top of d+1.
* Carry is mechanical (Geneva gearing): a higher drum turns only while every lower drum
  is at 9 going to 0, and then exactly as far as the last drum has turned.
* `truth` is what the counter has reached: floor(value), modulo 10**digits, zero padded.
  A reader is expected to report the lower digit of a rolling drum.

Frames are composed once per style (meter face, bezel, labels; cached) plus the drums
per value, then degraded per frame in the order a camera sees it: scene -> lighting ->
geometry (camera roll, vibration) -> blur -> window tint and dirt -> sensor noise -> JPEG.
All randomness comes from the `np.random.Generator` the caller passes in.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

BGR = tuple[int, int, int]
Box = tuple[int, int, int, int]
FloatImage = NDArray[np.float32]
ByteImage = NDArray[np.uint8]

HERSHEY = "hershey"
# Procedural seven-segment glyphs: the last resort for an LCD when no DSEG font exists.
SEGMENTS = "segments"
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
# Tried in order when a style's font is missing or has no digits; Hershey always works.
FALLBACK_FONTS = (
    "DejaVuSans-Bold",
    "LiberationSans-Bold",
    "NotoSans-Bold",
    "Roboto-Bold",
    "DejaVuSans",
    "LiberationSans-Regular",
)
LCD_FONTS = ("DSEG7Classic-Bold", "DSEG7Modern-Bold", "DSEG7Classic-Regular")
LABEL_FONTS = ("DejaVuSans-Bold", "LiberationSans-Bold", "NotoSans-Bold", "Roboto-Bold")
# Fonts that look like something printed on a real counter drum or shown by a register.
METER_FONTS = (
    "DejaVuSans-Bold",
    "DejaVuSansCondensed-Bold",
    "DejaVuSansMono-Bold",
    "DejaVuSerif-Bold",
    "LiberationSans-Bold",
    "LiberationSans-Regular",
    "LiberationSansNarrow-Bold",
    "LiberationMono-Bold",
    "LiberationSerif-Bold",
    "NotoSans-Bold",
    "NotoSans-Regular",
    "NotoSerif-Bold",
    "Roboto-Bold",
    "Roboto-Medium",
    "RobotoCondensed-Bold",
    "DSEG7Classic-Bold",
    "DSEG7Modern-Bold",
    "DSEG7Classic-Regular",
)

# Fonts anything may be tuned or trained on; the rest are held out so that benchmarks
# measure how the reader does on counters it has never seen.
TUNE_FONTS = (
    "DejaVuSans-Bold",
    "DejaVuSansCondensed-Bold",
    "DejaVuSansMono-Bold",
    "DejaVuSerif-Bold",
    "LiberationSans-Bold",
    "LiberationSans-Regular",
    "LiberationMono-Bold",
    "DSEG7Classic-Bold",
)
HELD_OUT_FONTS = (*(f for f in METER_FONTS if f not in TUNE_FONTS), "hershey")

# A last drum off its rest position by at least this fraction of the pitch counts as
# rolling: from there on the digit is visibly cut by the cell edge.
ROLL_THRESHOLD = 0.1
# Odometer: settled frames keep the last drum within this fraction of rest, rolling
# frames lie between the two bounds below.
SETTLED_MAX = 0.08
ROLL_LOW, ROLL_HIGH = 0.15, 0.85

# Glyphs are drawn this many times larger and shrunk with area averaging, so small
# digits keep smooth anti-aliased edges and get exactly the requested height.
SUPERSAMPLE = 3
STRIP_DIGITS = (9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1)
FACES = ("dial", "plate", "panel")


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class CounterStyle:
    """One installation: counter look + camera pose. Fixed for a whole stream."""

    digits: int = 6  # number of drums (or LCD digits)
    font: str = "DejaVuSans-Bold"  # font file stem or "hershey"; see resolve_font()
    digit_height: int = 48  # px height of a digit glyph ("0") in the frame
    fg: BGR = (235, 235, 235)  # digit colour
    bg: BGR = (25, 25, 25)  # drum colour
    last_fg: BGR | None = None  # colours of the styled last drum(s); None: as fg / bg
    last_bg: BGR | None = None
    lcd: bool = False  # seven-segment register: no drums, no rolling, shows floor(value)
    center: tuple[float, float] = (400.0, 300.0)  # counter centre in the frame
    rotation: float = 0.0  # camera roll, degrees counter-clockwise (as window.rotation)
    frame_size: tuple[int, int] = (800, 600)  # (width, height)
    separators: bool = True  # contrasting gaps between drums and a bezel around the window
    decimal_drums: int = 0  # last drums that are decimals, coloured last_fg / last_bg
    # --- look of the drums
    cell_width: float = 0.95  # drum width / digit height
    cell_height: float = 1.3  # visible cell height / digit height (< 2 * pitch - 1)
    pitch: float = 1.4  # digit spacing around the drum / digit height
    shading: float = 0.45  # darkening of the drum towards the cell's top and bottom edges
    drum_jitter: float = 0.0  # max rest misalignment of the higher drums, fraction of pitch
    separator_color: BGR | None = None  # None: a darker shade of the drums
    bezel_color: BGR = (52, 52, 52)
    # --- the meter around the counter
    face: str = "dial"  # "dial" (car speedometer), "plate" (utility meter), "panel"
    face_color: BGR = (20, 20, 20)
    surround_color: BGR = (46, 44, 42)  # dashboard / wall beyond the meter
    print_color: BGR = (215, 215, 215)  # printed label, ticks, serial number
    label: str = "km"  # unit printed next to the counter ("" for none)
    serial: str = ""  # small print below the counter, e.g. "Nr 20417733"
    brand: str = ""  # small print above the counter, letters only
    screws: bool = False
    dial_numbers: bool = False  # speed numbers around a dial face
    texture: float = 0.25  # grain and blotches of the face, 0..1
    seed: int = 0  # fixes the face texture, needle and drum misalignment

    def __post_init__(self) -> None:
        if not 1 <= self.digits <= 12:
            raise ValueError(f"digits must be 1..12, got {self.digits}")
        if not 8 <= self.digit_height <= 240:
            raise ValueError(f"digit_height must be 8..240 px, got {self.digit_height}")
        if not 0 <= self.decimal_drums <= self.digits:
            raise ValueError(f"decimal_drums must be 0..digits, got {self.decimal_drums}")
        if self.face not in FACES:
            raise ValueError(f"face must be one of {', '.join(FACES)}, got {self.face!r}")
        if not 1.0 < self.cell_height < 2 * self.pitch - 1:
            # Otherwise a settled drum would show parts of its neighbours, or cut its digit.
            raise ValueError("cell_height must lie between 1 and 2 * pitch - 1")


@dataclass(frozen=True)
class Conditions:
    """Per-frame imaging conditions."""

    brightness: float = 1.0  # exposure gain, 0.3 (dim) .. 1.6 (bright)
    gradient: float = 0.0  # uneven illumination 0..0.6 (linear or radial falloff)
    glare: float = 0.0  # 0..1 specular spot on the window (position from rng)
    blur: float = 0.0  # gaussian sigma px (defocus), 0..2.5
    noise: float = 0.0  # sensor noise sigma in grey levels, 0..12
    jpeg_quality: int | None = None  # 45..95, or None for no compression
    shift: tuple[float, float] = (0.0, 0.0)  # vibration shift in px
    tint: tuple[float, float, float] | None = None  # colour cast, per BGR channel
    dirt: float = 0.0  # 0..1 smudges and spots on the window
    motion: float = 0.0  # px length of a linear motion blur (direction from rng)
    # Uneven focus (a lens not square to the counter): extra defocus sigma in px that
    # grows across the counter from none at one end to this at the other; negative
    # values blur the left end, positive the right. 0..2.
    focus_tilt: float = 0.0


@dataclass(frozen=True)
class SimFrame:
    image: NDArray[np.uint8]  # HxWx3 BGR, style.frame_size
    value: float  # counter value in last-drum units
    truth: str  # floor(value) mod 10**digits, zero padded to style.digits
    rolling: bool  # the last drum is visibly between two digits
    window: Box  # (x, y, w, h) generous axis-aligned crop around the counter incl. bezel
    cells: tuple[Box, ...]  # per-drum boxes in frame pixels, most significant first
    # The same window before levelling: its corners TL, TR, BR, BL in frame pixels after
    # rotation and shift (what window.corners in the config would hold).
    corners: tuple[tuple[float, float], ...] = ()
    # Each drum's position in digits (7.25: a quarter of the way from 7 to 8).
    drum_positions: tuple[float, ...] = ()


# --------------------------------------------------------------------------- physics


def counter_truth(value: float, digits: int) -> str:
    """The digits a counter showing `value` has reached, zero padded."""
    return str(math.floor(value) % 10**digits).zfill(digits)


def drum_positions(value: float, digits: int) -> tuple[float, ...]:
    """Each drum's position in digits, most significant first.

    Geneva carry: drum k turns only while the k lower drums all show 9, and then by the
    same fraction as the last drum.
    """
    whole = math.floor(value)
    frac = value - whole
    positions = []
    for k in range(digits - 1, -1, -1):
        digit = (whole // 10**k) % 10
        carrying = whole % 10**k == 10**k - 1
        positions.append(digit + (frac if carrying else 0.0))
    return tuple(float(p) for p in positions)


def is_rolling(value: float) -> bool:
    return value - math.floor(value) >= ROLL_THRESHOLD


# --------------------------------------------------------------------------- fonts


@functools.cache
def _font_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for root in FONT_DIRS:
        base = Path(root).expanduser()
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if path.suffix.lower() in (".ttf", ".otf") and path.is_file():
                index.setdefault(path.stem, str(path))
    return index


def available_fonts() -> list[str]:
    """Font names (file stems) resolve_font() finds on this machine."""
    return sorted(_font_index())


def meter_fonts() -> list[str]:
    """Fonts that suit a counter, as installed here, plus "hershey" (always there)."""
    return [name for name in METER_FONTS if resolve_font(name) is not None] + [HERSHEY]


def resolve_font(name: str) -> str | None:
    """Path of the TrueType/OpenType font called `name` (file stem or path), or None."""
    if name.lower() in (HERSHEY, SEGMENTS):
        return None
    if Path(name).suffix.lower() in (".ttf", ".otf") and Path(name).is_file():
        return name
    index = _font_index()
    if name in index:
        return index[name]
    folded = name.lower()
    for stem, path in index.items():
        if stem.lower() == folded:
            return path
    return None


def clear_caches() -> None:
    """Forget fonts, glyphs and scenes (after fonts were installed or removed)."""
    for cached in (
        _font_index,
        _pil_font,
        _glyph_set,
        _drum_strip,
        _lcd_tiles,
        _text_mask,
        _scene,
        _layout,
        _canvas_style,
        _drum_shading,
        _noise_tile,
    ):
        cached.cache_clear()


@functools.lru_cache(maxsize=128)
def _pil_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _ttf_ink(font: ImageFont.FreeTypeFont, text: str) -> tuple[ByteImage, int] | None:
    """Ink of `text` cropped tight, and the ink top relative to the baseline."""
    size = int(font.size)
    baseline = int(size * 1.5)
    canvas = Image.new("L", (int(size * (0.8 * len(text) + 1.5)), int(size * 2.2)))
    ImageDraw.Draw(canvas).text((size // 2, baseline), text, font=font, fill=255, anchor="ls")
    ink = np.asarray(canvas)
    rows = np.flatnonzero(ink.max(axis=1) > 20)
    cols = np.flatnonzero(ink.max(axis=0) > 20)
    if rows.size == 0:
        return None
    crop = np.ascontiguousarray(ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    return crop, int(rows[0]) - baseline


def _ttf_digits(path: str, target: int) -> list[tuple[ByteImage, int]] | None:
    """Digits 0-9 of a font at about `target` px ink height, or None if it has none."""
    try:
        probe = _ttf_ink(_pil_font(path, 100), "0")
        if probe is None:
            return None
        size = max(4, round(100 * target / probe[0].shape[0]))
        font = _pil_font(path, size)
        glyphs = [_ttf_ink(font, str(d)) for d in range(10)]
        # A font without digits draws its "missing glyph" box for each of them.
        missing = _ttf_ink(font, "\U000f0000")
    except (OSError, ValueError) as err:
        log.warning("font %s unusable: %s", path, err)
        return None
    found = [g for g in glyphs if g is not None]
    if len(found) < 10 or len({g[0].tobytes() for g in found}) < 10:
        return None
    if missing is not None and any(np.array_equal(g[0], missing[0]) for g in found):
        return None
    return found


def _hershey_digits(target: int) -> list[tuple[ByteImage, int]]:
    face = cv2.FONT_HERSHEY_SIMPLEX
    (_, zero_h), _ = cv2.getTextSize("0", face, 1.0, 1)
    scale = target / max(1, zero_h)
    thickness = max(1, round(0.12 * target))
    glyphs = []
    for d in range(10):
        size = round(target * 2.2)
        canvas = np.zeros((size, size), np.uint8)
        baseline = round(target * 1.6)
        cv2.putText(canvas, str(d), (size // 5, baseline), face, scale, 255, thickness, cv2.LINE_AA)
        rows = np.flatnonzero(canvas.max(axis=1) > 20)
        cols = np.flatnonzero(canvas.max(axis=0) > 20)
        crop = np.ascontiguousarray(canvas[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
        glyphs.append((crop, int(rows[0]) - baseline))
    return glyphs


_SEGMENTS_OF = (
    "abcdef",
    "bc",
    "abdeg",
    "abcdg",
    "bcfg",
    "acdfg",
    "acdefg",
    "abc",
    "abcdefg",
    "abcdfg",
)


def _segment_digits(target: int) -> list[tuple[ByteImage, int]]:
    """Seven-segment digits drawn as polygons, slanted like most LCD registers."""
    h = float(target)
    w, t = 0.55 * h, 0.14 * h
    gap = 0.04 * h
    half = t / 2

    def bar(x1: float, y1: float, x2: float, y2: float) -> list[tuple[float, float]]:
        if y1 == y2:  # horizontal, pointed ends
            return [
                (x1 + gap, y1),
                (x1 + gap + half, y1 - half),
                (x2 - gap - half, y1 - half),
                (x2 - gap, y1),
                (x2 - gap - half, y1 + half),
                (x1 + gap + half, y1 + half),
            ]
        return [
            (x1, y1 + gap),
            (x1 + half, y1 + gap + half),
            (x1 + half, y2 - gap - half),
            (x1, y2 - gap),
            (x1 - half, y2 - gap - half),
            (x1 - half, y1 + gap + half),
        ]

    left, right, top, mid, bottom = half, w - half, half, h / 2, h - half
    shapes = {
        "a": bar(left, top, right, top),
        "g": bar(left, mid, right, mid),
        "d": bar(left, bottom, right, bottom),
        "f": bar(left, top, left, mid),
        "b": bar(right, top, right, mid),
        "e": bar(left, mid, left, bottom),
        "c": bar(right, mid, right, bottom),
    }
    slant = 0.1
    pad = round(0.3 * h)
    glyphs = []
    for segments in _SEGMENTS_OF:
        canvas = np.zeros((round(h) + 2 * pad, round(w + slant * h) + 2 * pad), np.uint8)
        polys = [
            np.array([[pad + x + slant * (h - y), pad + y] for x, y in shapes[s]], np.float32)
            for s in segments
        ]
        cv2.fillPoly(
            canvas, [np.round(p * 16).astype(np.int32) for p in polys], 255, cv2.LINE_AA, 4
        )
        rows = np.flatnonzero(canvas.max(axis=1) > 20)
        cols = np.flatnonzero(canvas.max(axis=0) > 20)
        crop = np.ascontiguousarray(canvas[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
        glyphs.append((crop, int(rows[0]) - (pad + round(h))))
    return glyphs


@dataclass(frozen=True)
class _GlyphSet:
    masks: tuple[FloatImage, ...]  # coverage 0..1 of digits 0-9, "0" exactly height tall
    tops: tuple[int, ...]  # ink top of each digit relative to the ink top of "0"
    font: str  # the font actually drawn


def _font_candidates(font: str, lcd: bool) -> list[str]:
    if lcd:
        own = [font] if font.upper().startswith("DSEG") else []
        return [*own, *LCD_FONTS, SEGMENTS]
    return [font, *FALLBACK_FONTS, HERSHEY]


@functools.cache
def _warn_fallback(font: str, used: str) -> None:
    # Cached: once per font, not once per digit size a benchmark happens to draw.
    log.warning("font %r not usable for digits here, drawing with %r", font, used)


@functools.lru_cache(maxsize=64)
def _glyph_set(font: str, height: int, max_width: int, lcd: bool) -> _GlyphSet:
    target = height * SUPERSAMPLE
    raw: list[tuple[ByteImage, int]] | None = None
    used = font
    for candidate in _font_candidates(font, lcd):
        if candidate == HERSHEY:
            raw = _hershey_digits(target)
        elif candidate == SEGMENTS:
            raw = _segment_digits(target)
        else:
            path = resolve_font(candidate)
            raw = _ttf_digits(path, target) if path is not None else None
        if raw is not None:
            used = candidate
            break
    assert raw is not None  # Hershey and segments always draw
    if used != font:
        _warn_fallback(font, used)
    scale = height / raw[0][0].shape[0]
    widest = max(crop.shape[1] for crop, _ in raw) * scale
    squeeze = min(1.0, max_width / widest)  # a wide font is narrowed to fit its drum
    masks, tops = [], []
    for crop, top in raw:
        size = (
            max(1, round(crop.shape[1] * scale * squeeze)),
            max(1, round(crop.shape[0] * scale)),
        )
        small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        masks.append(small.astype(np.float32) / 255.0)
        tops.append(round((top - raw[0][1]) * scale))
    return _GlyphSet(tuple(masks), tuple(tops), used)


def _paste_max(dst: FloatImage, src: FloatImage, x: int, y: int) -> None:
    h, w = src.shape
    y0, x0 = max(0, y), max(0, x)
    y1, x1 = min(dst.shape[0], y + h), min(dst.shape[1], x + w)
    if y1 <= y0 or x1 <= x0:
        return
    region = dst[y0:y1, x0:x1]
    np.maximum(region, src[y0 - y : y1 - y, x0 - x : x1 - x], out=region)


def _digit_in_slot(glyphs: _GlyphSet, digit: int, slot: FloatImage, centre_y: float) -> None:
    mask = glyphs.masks[digit]
    top = round(centre_y - glyphs.masks[0].shape[0] / 2) + glyphs.tops[digit]
    _paste_max(slot, mask, (slot.shape[1] - mask.shape[1]) // 2, top)


@functools.lru_cache(maxsize=64)
def _drum_strip(font: str, height: int, cell_w: int, pitch: int) -> tuple[FloatImage, str]:
    """The printed band of a drum, unrolled: digits 9,0,1..9,0,1 at `pitch`, coverage 0..1."""
    glyphs = _glyph_set(font, height, cell_w - 2 * max(2, round(0.08 * height)), False)
    strip = np.zeros((len(STRIP_DIGITS) * pitch, cell_w), np.float32)
    for slot, digit in enumerate(STRIP_DIGITS):
        _digit_in_slot(glyphs, digit, strip, slot * pitch + pitch / 2)
    strip.flags.writeable = False
    return strip, glyphs.font


@functools.lru_cache(maxsize=64)
def _lcd_tiles(font: str, height: int, cell_w: int, cell_h: int) -> tuple[FloatImage, str]:
    """Coverage of LCD digits 0-9 in their slots; the "8" doubles as the unlit segments."""
    glyphs = _glyph_set(font, height, cell_w - max(2, round(0.14 * height)), True)
    tiles = np.zeros((10, cell_h, cell_w), np.float32)
    for digit in range(10):
        _digit_in_slot(glyphs, digit, tiles[digit], cell_h / 2)
    tiles.flags.writeable = False
    return tiles, glyphs.font


@functools.lru_cache(maxsize=128)
def _text_mask(text: str, cap: int) -> FloatImage:
    """Coverage of a printed label about `cap` px tall (sans, Hershey without fonts)."""
    for name in LABEL_FONTS:
        path = resolve_font(name)
        if path is None:
            continue
        try:
            ink = _ttf_ink(_pil_font(path, max(6, round(cap / 0.73))), text)
        except (OSError, ValueError):
            continue
        if ink is not None:
            return ink[0].astype(np.float32) / 255.0
    plain = text.replace("³", "3").replace("²", "2").encode("ascii", "replace").decode()
    face = cv2.FONT_HERSHEY_SIMPLEX
    (_, text_h), _ = cv2.getTextSize("H", face, 1.0, 1)
    scale = cap / max(1, text_h)
    (width, _), _ = cv2.getTextSize(plain, face, scale, 1)
    canvas = np.zeros((cap * 3, width + cap * 2), np.uint8)
    thickness = max(1, round(cap / 9))
    cv2.putText(canvas, plain, (cap, cap * 2), face, scale, 255, thickness, cv2.LINE_AA)
    rows = np.flatnonzero(canvas.max(axis=1) > 20)
    cols = np.flatnonzero(canvas.max(axis=0) > 20)
    if rows.size == 0:
        return np.zeros((1, 1), np.float32)
    crop = canvas[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return crop.astype(np.float32) / 255.0


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Layout:
    cells: tuple[Box, ...]  # drum cells, unrotated frame pixels
    opening: Box  # the hole in the face the drums show through
    bezel: Box  # outer edge of the bezel
    window: Box  # generous crop, unclipped
    pitch: int
    gap: int


@functools.lru_cache(maxsize=64)
def _layout(style: CounterStyle) -> _Layout:
    h = style.digit_height
    if style.lcd:
        cell_w, gap = round(0.78 * h), 0
        pad, bezel = max(2, round(0.12 * h)), max(2, round(0.1 * h))
    else:
        cell_w, gap = round(style.cell_width * h), max(2, round(0.12 * h))
        pad, bezel = max(1, round(0.06 * h)), max(2, round(0.12 * h))
    cell_h = round(style.cell_height * h)
    total = style.digits * cell_w + (style.digits - 1) * gap
    cx, cy = style.center
    x0, y0 = round(cx - total / 2), round(cy - cell_h / 2)
    cells = tuple((x0 + i * (cell_w + gap), y0, cell_w, cell_h) for i in range(style.digits))
    opening = (x0 - pad, y0 - pad, total + 2 * pad, cell_h + 2 * pad)
    outer = (opening[0] - bezel, opening[1] - bezel, opening[2] + 2 * bezel, opening[3] + 2 * bezel)
    # A quarter digit height of margin: the bezel (at most ~0.22 h out) is inside it.
    margin = max(pad + bezel + 2, round(0.25 * h))
    window = (x0 - margin, y0 - margin, total + 2 * margin, cell_h + 2 * margin)
    return _Layout(cells, opening, outer, window, round(style.pitch * h), gap)


def _clip_box(box: Box, size: tuple[int, int]) -> Box:
    x, y, w, h = box
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(size[0], x + w), min(size[1], y + h)
    return (x0, y0, max(0, x1 - x0), max(0, y1 - y0))


def default_window(style: CounterStyle | None = None) -> Box:
    """The window for `style` (default: default_style()) at rotation 0 without shift."""
    style = style or default_style()
    return _clip_box(_layout(style).window, style.frame_size)


def default_style() -> CounterStyle:
    """The embedded default: a clean 6-drum car odometer, white on black, centred."""
    return CounterStyle()


# --------------------------------------------------------------------------- the scene


def _stable_seed(style: CounterStyle) -> int:
    # hash() of strings changes per process; the scene must not.
    return zlib.crc32(repr(style).encode()) ^ style.seed


def _u8(image: object) -> ByteImage:
    # cv2's stubs type results as a union of dtypes; these calls keep uint8 in, uint8 out.
    return np.asarray(image, np.uint8)


def _luma(color: BGR) -> float:
    b, g, r = color
    return 0.114 * b + 0.587 * g + 0.299 * r


def _scaled(color: BGR, factor: float) -> BGR:
    b, g, r = (min(255, max(0, round(c * factor))) for c in color)
    return (b, g, r)


def _stamp(
    img: FloatImage, mask: FloatImage, at: tuple[int, int], color: BGR, alpha: float = 1.0
) -> None:
    """Paint `color` through a coverage mask whose top-left lands at `at` (x, y)."""
    x, y = at
    h, w = mask.shape
    y0, x0 = max(0, y), max(0, x)
    y1, x1 = min(img.shape[0], y + h), min(img.shape[1], x + w)
    if y1 <= y0 or x1 <= x0:
        return
    cover = mask[y0 - y : y1 - y, x0 - x : x1 - x, None] * alpha
    region = img[y0:y1, x0:x1]
    region += (np.array(color, np.float32) - region) * cover


def _texture(
    size: tuple[int, int], color: BGR, strength: float, rng: np.random.Generator, brushed: bool
) -> FloatImage:
    width, height = size
    out = np.empty((height, width, 3), np.float32)
    out[:] = color
    if strength <= 0:
        return out
    low = rng.standard_normal((height // 40 + 2, width // 40 + 2)).astype(np.float32)
    low = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC) * (7 * strength)
    grain = rng.standard_normal((height, width)).astype(np.float32)
    if brushed:  # brushed metal: fine streaks along x
        grain = np.asarray(cv2.blur(grain, (41, 1)), np.float32) * 5
    out += (low + grain * (3 * strength))[..., None]
    return out


def _rounded_rect(img: FloatImage, box: Box, radius: int, color: BGR) -> None:
    x, y, w, h = box
    radius = max(0, min(radius, w // 2, h // 2))
    c = tuple(float(v) for v in color)
    if radius == 0:
        cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), c, -1)
        return
    cv2.rectangle(img, (x + radius, y), (x + w - 1 - radius, y + h - 1), c, -1)
    cv2.rectangle(img, (x, y + radius), (x + w - 1, y + h - 1 - radius), c, -1)
    for cx, cy in (
        (x + radius, y + radius),
        (x + w - 1 - radius, y + radius),
        (x + radius, y + h - 1 - radius),
        (x + w - 1 - radius, y + h - 1 - radius),
    ):
        cv2.circle(img, (cx, cy), radius, c, -1, cv2.LINE_AA)


def _screw(img: FloatImage, at: tuple[int, int], radius: int, angle: float, metal: BGR) -> None:
    x, y = at
    cv2.circle(
        img, (x, y), radius + 1, tuple(float(v) for v in _scaled(metal, 0.45)), -1, cv2.LINE_AA
    )
    cv2.circle(img, (x, y), radius, tuple(float(v) for v in metal), -1, cv2.LINE_AA)
    cv2.circle(
        img,
        (x - radius // 3, y - radius // 3),
        max(1, radius // 3),
        tuple(float(v) for v in _scaled(metal, 1.25)),
        -1,
        cv2.LINE_AA,
    )
    dx, dy = math.cos(angle) * radius * 0.8, math.sin(angle) * radius * 0.8
    cv2.line(
        img,
        (round(x - dx), round(y - dy)),
        (round(x + dx), round(y + dy)),
        tuple(float(v) for v in _scaled(metal, 0.3)),
        max(1, radius // 4),
        cv2.LINE_AA,
    )


def _label_at(
    img: FloatImage, text: str, cap: int, at: tuple[float, float], color: BGR, *, centred: bool
) -> None:
    """Print `text` with its left end (or its middle, if centred) at `at`, centred in y."""
    if not text:
        return
    mask = _text_mask(text, cap)
    x = round(at[0]) - (mask.shape[1] // 2 if centred else 0)
    _stamp(img, mask, (x, round(at[1]) - mask.shape[0] // 2), color)


def _draw_dial(
    img: FloatImage, style: CounterStyle, lay: _Layout, rng: np.random.Generator
) -> None:
    """A speedometer dial with the odometer in its lower half (a car's instrument)."""
    h = style.digit_height
    _, wy, ww, wh = lay.window
    cx, cy = style.center
    hub = (cx, cy - 2.4 * h)
    corner = math.hypot(ww / 2, cy + wh / 2 - hub[1])
    radius = corner + 2.6 * h  # ticks and numbers stay clear of the counter
    centre = (round(hub[0]), round(hub[1]))
    ring = _scaled(style.bezel_color, 1.6) if _luma(style.bezel_color) < 128 else style.bezel_color
    cv2.circle(img, centre, round(radius + 0.3 * h), tuple(float(v) for v in ring), -1, cv2.LINE_AA)
    cv2.circle(
        img, centre, round(radius), tuple(float(v) for v in style.face_color), -1, cv2.LINE_AA
    )
    ink = tuple(float(v) for v in style.print_color)
    start, end, majors = 225.0, -45.0, 13  # degrees, counter-clockwise from +x
    for i in range((majors - 1) * 2 + 1):
        a = math.radians(start + (end - start) * i / ((majors - 1) * 2))
        major = i % 2 == 0
        r0, r1 = radius - 0.25 * h, radius - (0.85 if major else 0.5) * h
        p0 = (hub[0] + r0 * math.cos(a), hub[1] - r0 * math.sin(a))
        p1 = (hub[0] + r1 * math.cos(a), hub[1] - r1 * math.sin(a))
        cv2.line(
            img,
            (round(p0[0]), round(p0[1])),
            (round(p1[0]), round(p1[1])),
            ink,
            max(1, round(h * (0.09 if major else 0.05))),
            cv2.LINE_AA,
        )
        if major and style.dial_numbers:
            rn = radius - 1.45 * h
            at = (hub[0] + rn * math.cos(a), hub[1] - rn * math.sin(a))
            _label_at(img, str(i * 10), round(0.42 * h), at, style.print_color, centred=True)
    at = (hub[0], hub[1] - 1.3 * h)
    _label_at(img, "km/h", round(0.32 * h), at, style.print_color, centred=True)
    # The needle points somewhere in the upper half, away from the counter.
    a = math.radians(rng.uniform(40, 140))
    tip = (hub[0] + (radius - 0.7 * h) * math.cos(a), hub[1] - (radius - 0.7 * h) * math.sin(a))
    tail = (hub[0] - 0.6 * h * math.cos(a), hub[1] + 0.6 * h * math.sin(a))
    cv2.line(
        img,
        (round(tail[0]), round(tail[1])),
        (round(tip[0]), round(tip[1])),
        (20.0, 90.0, 240.0),
        max(2, round(0.12 * h)),
        cv2.LINE_AA,
    )
    cv2.circle(img, centre, max(3, round(0.42 * h)), (30.0, 30.0, 32.0), -1, cv2.LINE_AA)
    cv2.circle(img, centre, max(2, round(0.25 * h)), (70.0, 70.0, 74.0), -1, cv2.LINE_AA)
    at = (cx, wy + wh + 0.45 * h)
    _label_at(img, style.label, round(0.36 * h), at, style.print_color, centred=True)


def _plate_box(style: CounterStyle, lay: _Layout) -> Box:
    h = style.digit_height
    wx, wy, ww, wh = lay.window
    label_w = (
        _text_mask(style.label, round(0.42 * h)).shape[1] + round(0.5 * h) if style.label else 0
    )
    left = wx - round(1.1 * h)
    right = wx + ww + label_w + round(1.1 * h)
    return (left, wy - round(1.2 * h), right - left, wh + round(2.4 * h))


def _draw_plate(
    img: FloatImage, style: CounterStyle, lay: _Layout, rng: np.random.Generator
) -> None:
    """A utility meter's name plate: a rounded metal or plastic plate around the counter."""
    h = style.digit_height
    x, y, w, ph = _plate_box(style, lay)
    radius = round(0.4 * h)
    edge = max(2, round(0.06 * h))
    _rounded_rect(
        img,
        (x - edge, y - edge, w + 2 * edge, ph + 2 * edge),
        radius + edge,
        _scaled(style.face_color, 0.55),
    )
    plate = _texture(
        (w, ph), style.face_color, style.texture, rng, brushed=_luma(style.face_color) > 90
    )
    shape = np.zeros((ph, w, 3), np.float32)
    _rounded_rect(shape, (0, 0, w, ph), radius, (1, 1, 1))
    mask = shape[..., 0]
    y0, x0 = max(0, y), max(0, x)
    y1, x1 = min(img.shape[0], y + ph), min(img.shape[1], x + w)
    if y1 > y0 and x1 > x0:
        m = mask[y0 - y : y1 - y, x0 - x : x1 - x, None]
        region = img[y0:y1, x0:x1]
        region += (plate[y0 - y : y1 - y, x0 - x : x1 - x] - region) * m
    if style.screws:
        inset = round(0.42 * h)
        metal = (150, 150, 155) if _luma(style.face_color) < 140 else (110, 112, 118)
        for sx, sy in (
            (x + inset, y + inset),
            (x + w - inset, y + inset),
            (x + inset, y + ph - inset),
            (x + w - inset, y + ph - inset),
        ):
            _screw(img, (sx, sy), max(3, round(0.2 * h)), rng.uniform(0, math.pi), metal)


def _draw_prints(img: FloatImage, style: CounterStyle, lay: _Layout) -> None:
    """Unit label to the right, serial below, brand above: all outside the window."""
    h = style.digit_height
    wx, wy, ww, wh = lay.window
    cy = round(style.center[1])
    ink = style.print_color
    _label_at(img, style.label, round(0.42 * h), (wx + ww + 0.3 * h, cy), ink, centred=False)
    _label_at(
        img, style.serial, round(0.26 * h), (wx + 0.2 * h, wy + wh + 0.4 * h), ink, centred=False
    )
    _label_at(
        img, style.brand, round(0.34 * h), (style.center[0], wy - 0.45 * h), ink, centred=True
    )


def _separator_color(style: CounterStyle) -> BGR:
    if style.separator_color is not None:
        return style.separator_color
    if _luma(style.bg) < 100:
        return _scaled(style.bg, 0.3)
    return (48, 48, 48)


def _draw_counter_frame(img: FloatImage, style: CounterStyle, lay: _Layout) -> None:
    """Bezel and the opening behind the drums (the gaps between drums show its colour)."""
    h = style.digit_height
    ox, oy, ow, oh = lay.opening
    if style.separators or style.lcd:
        bx, by, bw, bh = lay.bezel
        _rounded_rect(img, lay.bezel, max(1, round(0.08 * h)), style.bezel_color)
        # Light from above: the bezel's top lip catches it, its bottom lip is in shade.
        lip = max(1, round(0.03 * h))
        bright = _scaled(style.bezel_color, 1.35) if _luma(style.bezel_color) > 30 else (70, 70, 70)
        cv2.rectangle(
            img,
            (bx + lip, by),
            (bx + bw - 1 - lip, by + lip - 1),
            tuple(float(v) for v in bright),
            -1,
        )
        cv2.rectangle(
            img,
            (bx + lip, by + bh - lip),
            (bx + bw - 1 - lip, by + bh - 1),
            tuple(float(v) for v in _scaled(style.bezel_color, 0.6)),
            -1,
        )
    inside = style.bg if style.lcd else (_separator_color(style) if style.separators else style.bg)
    cv2.rectangle(img, (ox, oy), (ox + ow - 1, oy + oh - 1), tuple(float(v) for v in inside), -1)
    if not style.separators and not style.lcd:
        # No bezel: the face is simply cut out; a hairline of shadow marks the edge.
        cv2.rectangle(img, (ox - 1, oy - 1), (ox + ow, oy + oh), (12.0, 12.0, 12.0), 1)


@functools.lru_cache(maxsize=16)
def _scene(style: CounterStyle) -> ByteImage:
    """Everything that does not move: surround, face, bezel, prints, LCD ghost segments."""
    rng = np.random.default_rng(_stable_seed(style))
    lay = _layout(style)
    size = style.frame_size
    h = style.digit_height
    if style.face == "panel":
        img = _texture(size, style.face_color, style.texture, rng, brushed=False)
    else:
        img = _texture(size, style.surround_color, style.texture * 1.5, rng, brushed=False)
    if style.face == "dial":
        _draw_dial(img, style, lay, rng)
    elif style.face == "plate":
        _draw_plate(img, style, lay, rng)
        _draw_prints(img, style, lay)
    else:
        _draw_prints(img, style, lay)
        if style.screws:
            metal = (150, 150, 155)
            cy = round(style.center[1])
            wx, _, ww, _ = lay.window
            for sx in (
                wx - round(0.9 * h),
                wx
                + ww
                + round(0.9 * h)
                + (_text_mask(style.label, round(0.42 * h)).shape[1] if style.label else 0),
            ):
                _screw(img, (sx, cy), max(3, round(0.22 * h)), rng.uniform(0, math.pi), metal)
    _draw_counter_frame(img, style, lay)
    if style.lcd:
        tiles, _ = _lcd_tiles(style.font, h, lay.cells[0][2], lay.cells[0][3])
        # Unlit segments stay faintly visible on a real LCD.
        for x, y, _, _ in lay.cells:
            _stamp(img, tiles[8], (x, y), style.fg, alpha=0.07)
    out = np.clip(img, 0, 255).astype(np.uint8)
    out.flags.writeable = False
    return out


# --------------------------------------------------------------------------- drums


@functools.lru_cache(maxsize=64)
def _drum_shading(
    cell_h: int, pitch: int, shading: float, height: int
) -> tuple[FloatImage, FloatImage]:
    """Strip row offsets for each cell row, and the brightness of each cell row.

    The cell looks at a cylinder: a row at height y above the axis shows the band at arc
    length R*asin(y/R), so digits are slightly compressed toward the cell's edges, and
    the surface turns away from the light there.
    """
    radius = len(STRIP_DIGITS[:10]) * pitch / (2 * math.pi)
    y = np.arange(cell_h, dtype=np.float64) + 0.5 - cell_h / 2
    arc = radius * np.arcsin(np.clip(y / radius, -1, 1))
    edge = y / (cell_h / 2)
    shade = 1.0 - shading * edge**2
    # The face's edge over the opening throws a narrow shadow onto the top of the drums.
    shade *= 1.0 - 0.3 * np.exp(-(y + cell_h / 2) / max(1.0, 0.07 * height))
    return arc.astype(np.float32), shade.astype(np.float32)


def _drum_cell(strip: FloatImage, position: float, pitch: int, arc: FloatImage) -> FloatImage:
    rows = (position + 1) * pitch + pitch / 2 + arc
    rows = np.clip(rows, 0, strip.shape[0] - 1.001)
    top = rows.astype(np.int32)
    t = (rows - top)[:, None]
    out: FloatImage = strip[top] * (1 - t) + strip[top + 1] * t
    return out


def _drum_colours(style: CounterStyle, index: int) -> tuple[BGR, BGR]:
    styled = max(1, style.decimal_drums)
    if index >= style.digits - styled:
        return style.last_fg or style.fg, style.last_bg or style.bg
    return style.fg, style.bg


def _draw_drums(
    img: ByteImage, style: CounterStyle, lay: _Layout, positions: Sequence[float]
) -> None:
    h = style.digit_height
    cell_w, cell_h = lay.cells[0][2], lay.cells[0][3]
    strip, _ = _drum_strip(style.font, h, cell_w, lay.pitch)
    arc, shade = _drum_shading(cell_h, lay.pitch, style.shading, h)
    jitter = (
        np.random.default_rng(_stable_seed(style)).uniform(-1, 1, style.digits) * style.drum_jitter
    )
    for i, ((x, y, w, ch), position) in enumerate(zip(lay.cells, positions, strict=True)):
        # The last drum's position is the value itself; the higher ones sit a bit askew.
        offset = 0.0 if i == style.digits - 1 else float(jitter[i])
        cover = _drum_cell(strip, position + offset, lay.pitch, arc)
        fg, bg = _drum_colours(style, i)
        bgv = np.array(bg, np.float32)
        cell = bgv + (np.array(fg, np.float32) - bgv) * cover[..., None]
        cell *= shade[:, None, None]
        y0, x0 = max(0, y), max(0, x)
        y1, x1 = min(img.shape[0], y + ch), min(img.shape[1], x + w)
        if y1 > y0 and x1 > x0:
            img[y0:y1, x0:x1] = np.clip(cell[y0 - y : y1 - y, x0 - x : x1 - x], 0, 255).astype(
                np.uint8
            )


def _draw_lcd(img: ByteImage, style: CounterStyle, lay: _Layout, truth: str) -> None:
    cell_w, cell_h = lay.cells[0][2], lay.cells[0][3]
    tiles, _ = _lcd_tiles(style.font, style.digit_height, cell_w, cell_h)
    colour = np.array(style.fg, np.float32)
    for (x, y, w, ch), char in zip(lay.cells, truth, strict=True):
        y0, x0 = max(0, y), max(0, x)
        y1, x1 = min(img.shape[0], y + ch), min(img.shape[1], x + w)
        if y1 <= y0 or x1 <= x0:
            continue
        region = img[y0:y1, x0:x1].astype(np.float32)
        cover = tiles[int(char)][y0 - y : y1 - y, x0 - x : x1 - x, None]
        region += (colour - region) * cover
        img[y0:y1, x0:x1] = np.clip(region, 0, 255).astype(np.uint8)
    if 0 < style.decimal_drums < style.digits:
        x, y, w, ch = lay.cells[style.digits - style.decimal_drums - 1]
        dot = max(2, round(0.1 * style.digit_height))
        cy = y + (ch + style.digit_height) // 2 - dot
        cv2.rectangle(img, (x + w - dot - 1, cy), (x + w - 2, cy + dot - 1), style.fg, -1)


# --------------------------------------------------------------------------- conditions


# Gains travel as uint8 in 1/GAIN_ONE steps so the whole frame stays in saturating
# uint8 OpenCV ops: float32 copies of a full frame cost more than the effects themselves.
GAIN_ONE = 128


def _lighting(
    img: ByteImage, cond: Conditions, lay: _Layout, style: CounterStyle, rng: np.random.Generator
) -> ByteImage:
    height, width = img.shape[:2]
    if cond.gradient > 0:
        sw, sh = width // 8 + 2, height // 8 + 2
        ys, xs = np.mgrid[0:sh, 0:sw].astype(np.float32)
        xs, ys = xs / (sw - 1), ys / (sh - 1) * (height / width)
        if rng.random() < 0.5:  # a lamp off to one side: linear falloff
            a = rng.uniform(0, 2 * math.pi)
            ramp = xs * math.cos(a) + ys * math.sin(a)
        else:  # a spot light: radial falloff from somewhere near the frame
            px, py = rng.uniform(-0.2, 1.2), rng.uniform(-0.2, 1.2) * height / width
            ramp = np.hypot(xs - px, ys - py) ** 1.5
        ramp = (ramp - ramp.min()) / max(1e-6, float(ramp.max() - ramp.min()))
        gain = cond.brightness * (1.0 - cond.gradient * ramp) * GAIN_ONE
        small = np.clip(np.round(gain), 0, 255).astype(np.uint8)
        full = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
        img = _u8(cv2.multiply(img, cv2.cvtColor(full, cv2.COLOR_GRAY2BGR), scale=1 / GAIN_ONE))
    elif cond.brightness != 1.0:
        img = _u8(cv2.convertScaleAbs(img, alpha=cond.brightness))
    if cond.glare > 0:
        _add_glare(img, cond.glare, lay, style, rng)
    return img


def _add_glare(
    img: ByteImage, strength: float, lay: _Layout, style: CounterStyle, rng: np.random.Generator
) -> None:
    """A specular reflection on the window glass: a soft halo with a saturated core."""
    h = style.digit_height
    wx, wy, ww, wh = lay.window
    cx = rng.uniform(wx - 0.3 * h, wx + ww + 0.3 * h)
    cy = wy + wh / 2 + rng.normal(0, 0.45) * wh
    sx = rng.uniform(0.35, 1.1) * h
    sy = sx * rng.uniform(0.35, 0.9)
    angle = rng.uniform(0, math.pi)
    reach = 3.2 * sx
    x0, x1 = max(0, int(cx - reach)), min(img.shape[1], int(cx + reach) + 1)
    y0, y1 = max(0, int(cy - reach)), min(img.shape[0], int(cy + reach) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xs - cx, ys - cy
    u = (dx * math.cos(angle) + dy * math.sin(angle)) / sx
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) / sy
    d2 = u * u + v * v
    blob = 170 * strength * np.exp(-d2 / 2) + 255 * strength * np.exp(-d2 / 0.18)
    warm = np.array([0.92, 0.97, 1.0], np.float32)  # lamps are a little warm
    region = img[y0:y1, x0:x1].astype(np.float32) + blob[..., None] * warm
    img[y0:y1, x0:x1] = np.clip(region, 0, 255).astype(np.uint8)


def _transform(style: CounterStyle, shift: tuple[float, float]) -> NDArray[np.float64]:
    centre = (float(style.center[0]), float(style.center[1]))
    matrix = np.asarray(cv2.getRotationMatrix2D(centre, float(style.rotation), 1.0), np.float64)
    matrix[0, 2] += shift[0]
    matrix[1, 2] += shift[1]
    return matrix


def _corners(box: Box, matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    x, y, w, h = box
    pts = np.array([[x, y, 1], [x + w, y, 1], [x + w, y + h, 1], [x, y + h, 1]], np.float64)
    out: NDArray[np.float64] = pts @ matrix.T
    return out


def _bounds(box: Box, matrix: NDArray[np.float64], size: tuple[int, int]) -> Box:
    pts = _corners(box, matrix)
    x0, y0 = math.floor(pts[:, 0].min() + 1e-6), math.floor(pts[:, 1].min() + 1e-6)
    x1, y1 = math.ceil(pts[:, 0].max() - 1e-6), math.ceil(pts[:, 1].max() - 1e-6)
    return _clip_box((x0, y0, x1 - x0, y1 - y0), size)


def _blur(
    img: ByteImage, cond: Conditions, rng: np.random.Generator, span: tuple[int, int]
) -> ByteImage:
    if cond.motion >= 1.0:
        length = max(2, round(cond.motion))
        kernel = np.zeros((length, length), np.float32)
        a = rng.uniform(0, math.pi)
        c = (length - 1) / 2
        dx, dy = math.cos(a) * c, math.sin(a) * c
        cv2.line(
            kernel,
            (round(c - dx), round(c - dy)),
            (round(c + dx), round(c + dy)),
            1.0,
            1,
            cv2.LINE_AA,
        )
        kernel /= kernel.sum()
        img = _u8(cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT_101))
    if cond.blur > 0.05:
        img = _u8(cv2.GaussianBlur(img, (0, 0), cond.blur, borderType=cv2.BORDER_REFLECT_101))
    if abs(cond.focus_tilt) > 0.05:
        img = _focus_tilt(img, cond.focus_tilt, span)
    return img


def _focus_tilt(img: ByteImage, tilt: float, span: tuple[int, int]) -> ByteImage:
    """Blend towards a more defocused copy across `span` (x from, x to) of the frame."""
    soft = cv2.GaussianBlur(img, (0, 0), abs(tilt), borderType=cv2.BORDER_REFLECT_101)
    x0, x1 = span
    ramp = np.clip((np.arange(img.shape[1], dtype=np.float32) - x0) / max(1, x1 - x0), 0, 1)
    if tilt < 0:
        ramp = 1.0 - ramp
    alpha = ramp[None, :, None]
    return _u8(np.round(img * (1.0 - alpha) + soft * alpha))


def _window_dirt(
    img: ByteImage, strength: float, window: Box, height: int, rng: np.random.Generator
) -> None:
    """Spots and a greasy haze on the glass over the counter."""
    wx, wy, ww, wh = window
    pad = round(1.5 * height)
    x0, y0 = max(0, wx - pad), max(0, wy - pad)
    x1, y1 = min(img.shape[1], wx + ww + pad), min(img.shape[0], wy + wh + pad)
    if x1 <= x0 or y1 <= y0:
        return
    roi_w, roi_h = x1 - x0, y1 - y0
    spots = np.zeros((roi_h, roi_w), np.float32)
    for _ in range(int(3 + 14 * strength)):
        centre = (int(rng.integers(0, roi_w)), int(rng.integers(0, roi_h)))
        axes = tuple(max(1, round(rng.uniform(0.04, 0.3) * height)) for _ in range(2))
        alpha = rng.uniform(0.2, 0.65) * strength
        cv2.ellipse(spots, centre, axes, rng.uniform(0, 180), 0, 360, alpha, -1)
    spots = np.asarray(cv2.GaussianBlur(spots, (0, 0), max(0.8, 0.05 * height)), np.float32)
    # The haze is all low frequencies: draw and blur it at a quarter of the resolution.
    q = 4
    haze = np.zeros((roi_h // q + 1, roi_w // q + 1), np.float32)
    for _ in range(int(1 + 2 * strength)):
        centre = (int(rng.integers(0, roi_w)) // q, int(rng.integers(0, roi_h)) // q)
        axes = (
            max(1, round(rng.uniform(0.8, 2.5) * height / q)),
            max(1, round(rng.uniform(0.3, 0.9) * height / q)),
        )
        alpha = rng.uniform(0.15, 0.4) * strength
        cv2.ellipse(haze, centre, axes, rng.uniform(0, 180), 0, 360, alpha, -1)
    haze = cv2.GaussianBlur(haze, (0, 0), max(1.0, 0.4 * height / q))
    haze = np.asarray(cv2.resize(haze, (roi_w, roi_h), interpolation=cv2.INTER_LINEAR), np.float32)
    # Fade out toward the edges of the worked area, or its rectangle would show.
    feather = max(2.0, 0.8 * height)
    ramp_y = np.minimum(np.arange(y1 - y0), np.arange(y1 - y0)[::-1]) / feather
    ramp_x = np.minimum(np.arange(x1 - x0), np.arange(x1 - x0)[::-1]) / feather
    taper = np.outer(np.clip(ramp_y, 0, 1), np.clip(ramp_x, 0, 1)).astype(np.float32)
    spots = (spots * taper)[..., None]
    haze = (haze * taper)[..., None]
    region = img[y0:y1, x0:x1].astype(np.float32)
    region += (np.array([62, 78, 92], np.float32) - region) * spots  # brownish grime
    region += (np.array([188, 192, 196], np.float32) - region) * haze  # milky film
    img[y0:y1, x0:x1] = np.clip(region, 0, 255).astype(np.uint8)


NOISE_ONE = 32  # the noise tile holds 128 + NOISE_ONE * N(0, 1), clipped at 4 sigma
NOISE_SLACK = 64


@functools.lru_cache(maxsize=4)
def _noise_tile(width: int, height: int) -> ByteImage:
    # Fresh normal noise for a whole frame costs ~10 ms; a fixed tile read at a random
    # offset and sign is just as random to a reader and far cheaper.
    shape = (height + NOISE_SLACK, width + NOISE_SLACK, 3)
    normal = np.random.default_rng(0x5EED).standard_normal(shape, np.float32)
    tile = np.clip(np.round(128 + NOISE_ONE * normal), 0, 255).astype(np.uint8)
    tile.flags.writeable = False
    return tile


def _add_noise(img: ByteImage, sigma: float, rng: np.random.Generator) -> ByteImage:
    height, width = img.shape[:2]
    tile = _noise_tile(width, height)
    oy, ox = (int(v) for v in rng.integers(0, NOISE_SLACK, 2))
    view = tile[oy : oy + height, ox : ox + width]
    k = sigma / NOISE_ONE * (1 if rng.random() < 0.5 else -1)
    return _u8(cv2.addWeighted(img, 1.0, view, k, -128 * k))


# --------------------------------------------------------------------------- render


# Vibration shift of a few px may pull in this much from beyond the frame edge.
SHIFT_MARGIN = 8
MAX_MARGIN = 320


def _margin(style: CounterStyle) -> int:
    """How far beyond the frame the scene is drawn, so a camera roll shows real scene.

    Rotating the frame swings its corners in from outside; mirroring the border instead
    would fold the meter's edge into a visible V.
    """
    if style.rotation == 0:
        return SHIFT_MARGIN
    width, height = style.frame_size
    cx, cy = style.center
    reach = max(math.hypot(x - cx, y - cy) for x in (0, width) for y in (0, height))
    swing = reach * 2 * math.sin(math.radians(abs(style.rotation)) / 2)
    return min(MAX_MARGIN, math.ceil(swing)) + SHIFT_MARGIN


@functools.lru_cache(maxsize=64)
def _canvas_style(style: CounterStyle) -> CounterStyle:
    """The style drawn on the larger canvas: same meter, moved in by the margin."""
    m = _margin(style)
    width, height = style.frame_size
    centre = (style.center[0] + m, style.center[1] + m)
    return dataclasses.replace(style, center=centre, frame_size=(width + 2 * m, height + 2 * m))


def render(
    style: CounterStyle, value: float, conditions: Conditions, rng: np.random.Generator
) -> SimFrame:
    """One camera frame of `style` showing `value` under `conditions`."""
    lay = _layout(style)
    size = style.frame_size
    truth = counter_truth(value, style.digits)
    positions = drum_positions(value, style.digits)
    # The meter is drawn and lit on a canvas `m` px larger all round, then the camera
    # (roll about the counter centre, shift) maps it onto the frame.
    m = _margin(style)
    canvas = _canvas_style(style)
    canvas_lay = _layout(canvas)
    img = _scene(canvas).copy()
    if style.lcd:
        _draw_lcd(img, canvas, canvas_lay, truth)
        rolling = False
    else:
        _draw_drums(img, canvas, canvas_lay, positions)
        rolling = is_rolling(value)

    img = _lighting(img, conditions, canvas_lay, canvas, rng)
    matrix = _transform(style, conditions.shift)
    if style.rotation != 0 or conditions.shift != (0.0, 0.0):
        from_canvas = matrix.copy()
        from_canvas[:, 2] -= matrix[:, :2] @ np.array([m, m], np.float64)
        warped = cv2.warpAffine(
            img, from_canvas, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
        img = _u8(warped)
    else:
        img = img[m : m + size[1], m : m + size[0]]
    window = _bounds(lay.window, matrix, size)
    img = _blur(img, conditions, rng, (window[0], window[0] + window[2]))
    if conditions.tint is not None:
        img = _u8(cv2.transform(img, np.diag(np.array(conditions.tint, np.float32))))
    if conditions.dirt > 0:
        _window_dirt(img, conditions.dirt, window, style.digit_height, rng)
    if conditions.noise > 0:
        img = _add_noise(img, conditions.noise, rng)
    if conditions.jpeg_quality is not None:
        quality = min(100, max(1, int(conditions.jpeg_quality)))
        ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            img = _u8(decoded)

    corners = tuple((float(x), float(y)) for x, y in _corners(lay.window, matrix))
    return SimFrame(
        image=np.ascontiguousarray(img),
        value=float(value),
        truth=truth,
        rolling=rolling,
        window=window,
        cells=tuple(_bounds(cell, matrix, size) for cell in lay.cells),
        corners=corners,
        drum_positions=positions,
    )


# --------------------------------------------------------------------------- variety


def _jitter(rng: np.random.Generator, color: BGR, amount: int) -> BGR:
    b, g, r = (int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)
    return (b, g, r)


def _pick(rng: np.random.Generator, options: Sequence[BGR]) -> BGR:
    return options[int(rng.integers(len(options)))]


WHITE, BLACK, RED = (238, 238, 238), (22, 22, 22), (40, 36, 185)


def random_style(rng: np.random.Generator, fonts: Sequence[str]) -> CounterStyle:
    """A random installation: counter look, meter around it, and camera pose."""
    names = list(fonts) or [CounterStyle.font]
    font = names[int(rng.integers(len(names)))]
    lcd = font.upper().startswith("DSEG")
    digits = int(rng.integers(4, 9))
    height = int(rng.integers(25, 71))
    light_on_dark = bool(rng.random() < 0.55)
    decimals = 0
    last_fg: BGR | None = None
    last_bg: BGR | None = None

    if lcd:
        if light_on_dark:  # backlit negative display
            bg = _pick(rng, [(40, 22, 10), (18, 18, 18), (60, 30, 0)])
            fg = _pick(rng, [(240, 240, 235), (230, 220, 120), (120, 235, 255)])
        else:  # reflective LCD: dark segments on grey-green glass
            bg = _pick(rng, [(150, 168, 158), (172, 182, 176), (140, 160, 170), (188, 192, 190)])
            fg = _pick(rng, [(38, 42, 36), (25, 25, 25), (60, 55, 45)])
        if rng.random() < 0.35:
            decimals = int(rng.integers(1, min(3, digits - 3) + 1))
    else:
        if light_on_dark:
            bg = _pick(rng, [BLACK, (38, 36, 34), (62, 34, 22), (28, 28, 48), RED])
            fg = _pick(rng, [WHITE, (250, 250, 250), (200, 232, 245), (205, 210, 210)])
        else:
            bg = _pick(rng, [WHITE, (242, 242, 242), (205, 228, 240), (208, 208, 204)])
            fg = _pick(rng, [BLACK, (40, 40, 40), (70, 40, 20), (30, 30, 120)])
        bg, fg = _jitter(rng, bg, 8), _jitter(rng, fg, 8)
        if rng.random() < 0.35:
            decimals = int(rng.integers(1, min(3, digits - 3) + 1))
            last_fg, last_bg = [
                (WHITE, RED),
                (RED, WHITE),
                (BLACK, (40, 60, 215)),
                (WHITE, (30, 30, 150)),
            ][int(rng.integers(4))]
        elif rng.random() < 0.3:  # the tenths drum of a car odometer
            last_fg, last_bg = [(WHITE, RED), (BLACK, WHITE), (RED, WHITE)][int(rng.integers(3))]

    car_like = not lcd and digits <= 7 and decimals <= 1
    face = FACES[int(rng.choice(3, p=[0.35, 0.4, 0.25] if car_like else [0.0, 0.7, 0.3]))]
    if face == "dial":
        face_color = _jitter(rng, _pick(rng, [(18, 18, 18), (30, 30, 30), (24, 22, 20)]), 4)
    else:
        face_color = _jitter(
            rng,
            _pick(
                rng,
                [
                    (185, 185, 188),
                    (200, 214, 222),
                    (25, 25, 25),
                    (120, 92, 60),
                    (228, 228, 226),
                    (150, 150, 145),
                    (60, 60, 62),
                ],
            ),
            10,
        )
    dark_face = _luma(face_color) < 110
    print_color = (225, 225, 225) if dark_face else (30, 30, 30)
    surround = _jitter(
        rng,
        _pick(rng, [(46, 44, 42), (90, 96, 100), (140, 150, 160), (70, 70, 80), (180, 190, 200)]),
        15,
    )
    bezel = _pick(
        rng, [(22, 22, 22), (52, 52, 52), (160, 160, 165), (215, 215, 215), (120, 130, 140)]
    )
    label = ["km", "km", "mi", "m³", "m³", "kWh", ""][int(rng.integers(7))]
    if lcd and label in ("km", "mi"):
        label = "kWh"
    if face == "dial":  # a speedometer counts distance
        label = "mi" if rng.random() < 0.25 else "km"
    serial = (
        f"Nr {int(rng.integers(10**7, 10**8))}" if rng.random() < 0.4 and face != "dial" else ""
    )
    brand = (
        ["", "", "AQUA", "METRA", "GAS", "ELSTAR", "HYDRO"][int(rng.integers(7))]
        if face != "dial"
        else ""
    )

    cell_width = float(rng.uniform(0.82, 1.15))
    pitch = float(rng.uniform(1.32, 1.55))
    cell_height = float(rng.uniform(1.18, min(1.42, 2 * pitch - 1.1)))
    rotation = float(rng.uniform(-4.0, 4.0))
    width, frame_h = 800, 600

    style = CounterStyle(
        digits=digits,
        font=font,
        digit_height=height,
        fg=fg,
        bg=bg,
        last_fg=last_fg,
        last_bg=last_bg,
        lcd=lcd,
        center=(width / 2, frame_h / 2),
        rotation=rotation,
        frame_size=(width, frame_h),
        separators=bool(rng.random() < 0.8),
        decimal_drums=decimals,
        cell_width=cell_width,
        cell_height=cell_height,
        pitch=pitch,
        shading=float(rng.uniform(0.2, 0.6)),
        drum_jitter=float(rng.uniform(0.0, 0.04)),
        bezel_color=bezel,
        face=face,
        face_color=face_color,
        surround_color=surround,
        print_color=print_color,
        label=label,
        serial=serial,
        brand=brand,
        screws=bool(rng.random() < 0.6),
        dial_numbers=bool(rng.random() < 0.5),
        texture=float(rng.uniform(0.1, 0.6)),
        seed=int(rng.integers(2**31)),
    )
    return fit_in_frame(style, rng)


def fit_in_frame(style: CounterStyle, rng: np.random.Generator) -> CounterStyle:
    """`style` shrunk until its counter fits the frame, then moved about at random.

    The counter keeps inside the frame at its rotation and moves from the frame centre
    at most 90 px sideways and 70 px up or down, as a camera is aimed at a meter.
    """
    width, frame_h = style.frame_size
    rotation = style.rotation
    while True:
        _, _, ww, wh = _layout(style).window
        a = math.radians(abs(rotation))
        half_w = (ww * math.cos(a) + wh * math.sin(a)) / 2 + 12
        half_h = (ww * math.sin(a) + wh * math.cos(a)) / 2 + 12
        if (half_w <= width / 2 and half_h <= frame_h / 2) or style.digit_height <= 20:
            break
        style = _replace(style, digit_height=style.digit_height - 3)
    room_x = max(0.0, min(90.0, width / 2 - half_w))
    room_y = max(0.0, min(70.0, frame_h / 2 - half_h))
    centre = (width / 2 + rng.uniform(-room_x, room_x), frame_h / 2 + rng.uniform(-room_y, room_y))
    return _replace(style, center=(float(centre[0]), float(centre[1])))


def hand_drawn_window(
    style: CounterStyle, rng: np.random.Generator, margin: tuple[float, float] = (0.0, 0.6)
) -> Box:
    """A window as a person draws it on a still frame, clipped to the frame.

    Level, around the whole counter (rotation included), each side a random `margin`
    (low, high, in digit heights) further out than the window `render` reports.
    """
    x, y, w, h = _bounds(_layout(style).window, _transform(style, (0.0, 0.0)), style.frame_size)
    low, high = margin
    left, top, right, bottom = (float(v) * style.digit_height for v in rng.uniform(low, high, 4))
    box = (
        math.floor(x - left),
        math.floor(y - top),
        math.ceil(w + left + right),
        math.ceil(h + top + bottom),
    )
    return _clip_box(box, style.frame_size)


def _replace(style: CounterStyle, **changes: object) -> CounterStyle:
    return dataclasses.replace(style, **changes)  # type: ignore[arg-type]


def random_conditions(rng: np.random.Generator, hard: bool = True) -> Conditions:
    """Imaging conditions of one frame: `hard` spans night to glare, mild stays easy."""
    if not hard:
        return Conditions(
            brightness=float(rng.uniform(0.8, 1.2)),
            gradient=float(rng.uniform(0.0, 0.25)),
            blur=float(rng.uniform(0.0, 0.8)),
            noise=float(rng.uniform(0.0, 4.0)),
            jpeg_quality=int(rng.integers(75, 96)) if rng.random() < 0.7 else None,
            shift=(float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))),
        )
    tint = tuple(float(v) for v in rng.uniform(0.72, 1.08, 3)) if rng.random() < 0.25 else None
    return Conditions(
        brightness=float(np.exp(rng.uniform(math.log(0.3), math.log(1.6)))),
        gradient=float(rng.uniform(0.0, 0.6)) if rng.random() < 0.7 else 0.0,
        glare=float(rng.uniform(0.2, 1.0)) if rng.random() < 0.3 else 0.0,
        blur=float(rng.uniform(0.0, 2.5)),
        noise=float(rng.uniform(0.0, 12.0)),
        jpeg_quality=int(rng.integers(45, 91)) if rng.random() < 0.85 else None,
        shift=(float(rng.uniform(-2.5, 2.5)), float(rng.uniform(-2.5, 2.5))),
        tint=(tint[0], tint[1], tint[2]) if tint is not None else None,
        dirt=float(rng.uniform(0.1, 0.9)) if rng.random() < 0.25 else 0.0,
        motion=float(rng.uniform(2.0, 7.0)) if rng.random() < 0.12 else 0.0,
    )


# --------------------------------------------------------------------------- streams


def detent(count: float, roll_fraction: float) -> float:
    """Map a smoothly rising count to what a counter shows: mostly at rest, sometimes rolling.

    Monotone: the first 1 - roll_fraction of each unit creeps within SETTLED_MAX of rest,
    the remainder sweeps ROLL_LOW..ROLL_HIGH; the jumps in between only go up.
    """
    whole = math.floor(count)
    u = count - whole
    r = min(1.0, max(0.0, roll_fraction))
    if u < 1.0 - r:
        frac = SETTLED_MAX * u / (1.0 - r)
    else:
        frac = ROLL_LOW + (ROLL_HIGH - ROLL_LOW) * (u - (1.0 - r)) / r
    return whole + frac


class Odometer:
    """A counter that rises over time, for streams: deterministic from seed."""

    def __init__(
        self, start: float, per_frame: float, rng: np.random.Generator, roll_fraction: float = 0.25
    ) -> None:
        self.rng = rng
        self.per_frame = max(0.0, float(per_frame))
        self.roll_fraction = roll_fraction
        self._count = float(start)
        self._started = False

    def resume(self, value: float) -> None:
        """Carry on from `value` (a restart does not wind a real counter back); never
        backwards."""
        self._count = max(self._count, float(value))

    def next_value(self) -> float:
        """The next reading: random steps averaging per_frame, never going down."""
        if self._started and self.per_frame > 0:
            # Gamma steps: always forward, average per_frame, and varied enough that the
            # phase of the last drum spreads evenly over the frames.
            self._count += float(self.rng.gamma(4.0, self.per_frame / 4.0))
        self._started = True
        return detent(self._count, self.roll_fraction)
