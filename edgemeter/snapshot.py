"""Snapshot: one frame with the digit window drawn on it, and the digits as the OCR sees them.

`edgemeter snapshot` is how a user tunes `window.*`: it grabs one frame from the
configured source, reads it as the daemon would, and writes a PNG of two panels. The
left one is the frame with the window's real outline (turned or in perspective), each
digit cell the OCR cut out, and the reading or the reason there is none. The right
one is the levelled crop and each digit as the engine gets it (the classifier's input
at its own cut, or Tesseract's cleaned glyph), with the digit read and its confidence.
A window that does not fit the frame is drawn clipped, and the PNG says what is wrong;
it is still written, since that is when it helps most.

`draw_overlay` is also what the daemon's web page shows each cycle, so it only draws
lines and text on a copy of the frame (a millisecond or two). It judges nothing,
publishes nothing and keeps no state.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edgemeter.config import Config
from edgemeter.ocr import (
    Cell,
    Cells,
    NoReading,
    OcrEngine,
    OcrUnavailable,
    Reading,
    make_engine,
    preprocess,
)
from edgemeter.source import Frame, SourceEnded, SourceError, as_bgr, open_source
from edgemeter.window import DigitWindow, WindowError, check_fits, crop

Image = npt.NDArray[np.uint8]
BGR = tuple[int, int, int]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_ENGINE = 3

# Magenta and cyan: rare on meter faces, drums and walls, so the outlines stand out
# on any counter (and tests can find them pixel by pixel).
WINDOW_COLOUR: BGR = (255, 0, 255)
CELL_COLOUR: BGR = (255, 255, 0)
GOOD_COLOUR: BGR = (90, 210, 90)
BAD_COLOUR: BGR = (80, 80, 255)
TEXT_COLOUR: BGR = (245, 245, 245)
MUTED_COLOUR: BGR = (175, 175, 175)
BOX_COLOUR: BGR = (24, 24, 24)
PANEL_COLOUR: BGR = (40, 40, 40)
FONT = cv2.FONT_HERSHEY_SIMPLEX

# The frame panel is at most this wide (a 2304 px camera frame is halved): the whole
# PNG then fits a laptop screen, and the digits are shown full size on the right.
FRAME_PANEL_WIDTH = 1100
SIDE_PANEL_WIDTH = 500
GLYPH_TILE_HEIGHT = 96  # px of a glyph tile: Tesseract's 40 px digits, enlarged


# --------------------------------------------------------------------------- geometry


def window_to_frame(window: DigitWindow) -> npt.NDArray[np.float64]:
    """The 3x3 transform from window pixels (the crop) to frame pixels.

    The inverse of what `crop` applies: a shift for a plain window, the inverse of
    the perspective warp for a turned or cornered one."""
    if window.corners is None and window.rotation == 0:
        return np.array([[1.0, 0.0, window.x], [0.0, 1.0, window.y], [0.0, 0.0, 1.0]])
    out_w, out_h = window.output_size()
    target = np.array([[0, 0], [out_w, 0], [out_w, out_h], [0, out_h]], dtype=np.float32)
    return np.asarray(cv2.getPerspectiveTransform(target, window.outline()), np.float64)


def cell_outlines(window: DigitWindow, cells: Cells) -> list[npt.NDArray[np.float64]]:
    """Each cell's four corners (TL, TR, BR, BL) in frame pixels."""
    transform = window_to_frame(window)
    out = []
    for cell in cells.cells:
        points = np.array(cell.corners, np.float64).reshape(-1, 1, 2)
        out.append(
            np.asarray(cv2.perspectiveTransform(points, transform), np.float64).reshape(-1, 2)
        )
    return out


# --------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class _Pen:
    """Line and text sizes for an image of a given width: legible at any size."""

    line: int
    scale: float
    thick: int

    @classmethod
    def for_width(cls, width: int) -> _Pen:
        scale = min(1.1, max(0.55, width / 1150))
        return cls(max(2, round(width / 450)), scale, 1 if scale < 0.75 else 2)

    def size(self, text: str, scale: float | None = None) -> tuple[int, int, int]:
        (w, h), base = cv2.getTextSize(text, FONT, scale or self.scale, self.thick)
        return w, h, base


def _poly(image: Image, points: npt.NDArray[np.float64], colour: BGR, width: int) -> None:
    # Sub-pixel corners (shift=4: sixteenths of a pixel); 8-connected lines keep the
    # colour exact, so the outline is one colour however the frame looks beneath it.
    fixed = np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(image, [fixed], True, colour, width, cv2.LINE_8, shift=4)


def _wrap(text: str, pen: _Pen, max_width: int, scale: float | None = None) -> list[str]:
    """Lines of `text` no wider than `max_width` px (long messages: a WindowError)."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split(" "):
            longer = f"{line} {word}" if line else word
            if line and pen.size(longer, scale)[0] > max_width:
                lines.append(line)
                line = word
            else:
                line = longer
        lines.append(line)
    return lines


def _text_box(
    image: Image,
    lines: list[str],
    anchor: tuple[int, int],
    pen: _Pen,
    above: bool,
    colour: BGR = TEXT_COLOUR,
) -> None:
    """Lines of text on a dark box, left edge at anchor x, above or below anchor y,
    kept inside the image."""
    height, width = image.shape[:2]
    sizes = [pen.size(line) for line in lines]
    line_h = max(h + base for _, h, base in sizes) + 4
    pad = max(4, pen.line * 2)
    box_w = max(w for w, _, _ in sizes) + 2 * pad
    box_h = line_h * len(lines) + 2 * pad
    x = min(max(0, anchor[0]), max(0, width - box_w))
    y = anchor[1] - box_h if above else anchor[1]
    y = min(max(0, y), max(0, height - box_h))
    cv2.rectangle(image, (x, y), (x + box_w, y + box_h), BOX_COLOUR, -1)
    cv2.rectangle(image, (x, y), (x + box_w, y + box_h), WINDOW_COLOUR, 1)
    for i, line in enumerate(lines):
        base_y = y + pad + line_h * i + sizes[i][1] + 2
        cv2.putText(image, line, (x + pad, base_y), FONT, pen.scale, colour, pen.thick, cv2.LINE_AA)


def draw_message(frame_image: Image, text: str, *, max_width: int | None = None) -> Image:
    """The frame with `text` in a box at its top left: when there is no window to draw."""
    canvas, _ = _fitted(as_bgr(frame_image), max_width)
    pen = _Pen.for_width(canvas.shape[1])
    lines = _wrap(text, pen, max(260, int(0.8 * canvas.shape[1])))
    _text_box(canvas, lines, (8, 8), pen, above=False)
    return canvas


def _fitted(image: Image, max_width: int | None) -> tuple[Image, float]:
    """A copy to draw on, shrunk to `max_width` when wider; and the scale used."""
    width = image.shape[1]
    if max_width is None or width <= max_width:
        return image.copy(), 1.0
    scale = max_width / width
    size = (max_width, max(1, round(image.shape[0] * scale)))
    # Halvings first, then a linear step: nearly as clean as INTER_AREA at a quarter of
    # its cost (the daemon draws every cycle).
    while image.shape[1] >= 2 * max_width:
        image = np.asarray(cv2.pyrDown(image), np.uint8)
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), np.uint8), scale


def draw_overlay(
    frame_image: Image,
    window: DigitWindow,
    cells: Cells | None,
    label: str,
    *,
    max_width: int | None = None,
) -> Image:
    """The frame (BGR) with the window outline, the digit cells and `label` beside it.

    `max_width` shrinks a large frame before drawing, so lines and text keep their
    size in the result. The window may lie partly or wholly outside the frame: the
    outline is clipped, and the label stays in view."""
    canvas, scale = _fitted(as_bgr(frame_image), max_width)
    pen = _Pen.for_width(canvas.shape[1])
    outline = window.outline().astype(np.float64) * scale
    if cells is not None:
        for corners in cell_outlines(window, cells):
            _poly(canvas, corners * scale, CELL_COLOUR, max(1, pen.line - 1))
    _poly(canvas, outline, WINDOW_COLOUR, pen.line)
    if label:
        lines = _wrap(label, pen, max(260, int(0.6 * canvas.shape[1])))
        _, text_h, base = pen.size("0")
        needed = (text_h + base + 4) * len(lines) + 4 * max(4, pen.line * 2)
        top, bottom = float(outline[:, 1].min()), float(outline[:, 1].max())
        left = round(float(outline[:, 0].min()))
        gap = 2 * pen.line
        above = top - gap >= needed or bottom + gap + needed > canvas.shape[0]
        anchor_y = round(top - gap) if above else round(bottom + gap)
        _text_box(canvas, lines, (left, anchor_y), pen, above)
    return canvas


# --------------------------------------------------------------------------- the OCR's view


def _text(image: Image, text: str, at: tuple[int, int], scale: float, colour: BGR) -> int:
    """Draw one line (top-left at `at`); return the y below it."""
    thick = 1 if scale < 0.75 else 2
    (_, h), base = cv2.getTextSize(text, FONT, scale, thick)
    cv2.putText(image, text, (at[0], at[1] + h), FONT, scale, colour, thick, cv2.LINE_AA)
    return at[1] + h + base + 6


def _paragraph(image: Image, text: str, at: tuple[int, int], scale: float, colour: BGR) -> int:
    pen = _Pen(1, scale, 1 if scale < 0.75 else 2)
    y = at[1]
    for line in _wrap(text, pen, image.shape[1] - at[0] - 12, scale):
        y = _text(image, line, (at[0], y), scale, colour)
    return y


def _paste(panel: Image, image: Image, at: tuple[int, int]) -> None:
    """Paste (clipped to the panel) a grey or BGR image."""
    tile = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
    x, y = at
    h = min(tile.shape[0], panel.shape[0] - y)
    w = min(tile.shape[1], panel.shape[1] - x)
    if h > 0 and w > 0:
        panel[y : y + h, x : x + w] = tile[:h, :w]


def _cell_tile(cell: Cell, height: int) -> Image:
    """The cell's glyphs as the engine gets them (dark on white), stacked, enlarged.

    A turning drum has two: the digit leaving the cell and the one coming in."""
    glyphs = [g.image for g in cell.glyphs] or [np.full((40, 28), 255, np.uint8)]
    each = height // len(glyphs)
    parts = []
    for glyph in glyphs:
        factor = each / glyph.shape[0]
        size = (max(1, round(glyph.shape[1] * factor)), each)
        parts.append(np.asarray(cv2.resize(glyph, size, interpolation=cv2.INTER_NEAREST), np.uint8))
    width = max(p.shape[1] for p in parts)
    tile = np.full((each * len(parts), width), 255, np.uint8)
    for i, part in enumerate(parts):
        x = (width - part.shape[1]) // 2
        tile[i * each : (i + 1) * each, x : x + part.shape[1]] = part
    return tile


def _glyph_rows(
    panel: Image,
    cells: Cells,
    reading: Reading | None,
    min_confidence: float,
    top: int,
) -> int:
    """The glyph tiles side by side, each with its digit and confidence under it;
    in two rows when one row would make them too small to see. Returns the y below."""
    width = panel.shape[1] - 24
    gap = 8
    tiles = [_cell_tile(cell, GLYPH_TILE_HEIGHT) for cell in cells.cells]
    per_row = len(tiles)
    widest = max(t.shape[1] for t in tiles) + gap
    factor = min(1.0, width / (widest * per_row))
    if factor * GLYPH_TILE_HEIGHT < 56:
        per_row = math.ceil(len(tiles) / 2)
        factor = min(1.0, width / (widest * per_row))
    if factor < 1.0:
        tiles = [
            np.asarray(
                cv2.resize(t, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA), np.uint8
            )
            for t in tiles
        ]
    x, y = 12, top
    row_h = max(t.shape[0] for t in tiles) + 52
    for i, tile in enumerate(tiles):
        if i and i % per_row == 0:
            x, y = 12, y + row_h
        _paste(panel, tile, (x, y))
        below = y + tile.shape[0] + 4
        if reading is not None and i < len(reading.digits):
            conf = reading.confidences[i]
            colour = GOOD_COLOUR if conf >= min_confidence else BAD_COLOUR
            digit = reading.digits[i] + ("~" if reading.rolling[i] else "")
            after = _text(panel, digit, (x, below), 0.8, colour)
            _text(panel, f"{conf:.2f}", (x, after - 4), 0.5, colour)
        x += tile.shape[1] + gap
    return int(y + row_h)


def side_panel(
    window_image: Image | None,
    cells: Cells | NoReading | None,
    reading: Reading | NoReading | None,
    status: str,
    min_confidence: float,
    height: int,
) -> Image:
    """The right panel: the levelled crop, the glyphs as the engine gets them, the
    digits read with their confidences, and the status in words. At least `height`
    tall, taller when its content needs it."""
    panel = np.full((max(height, 1200), SIDE_PANEL_WIDTH, 3), PANEL_COLOUR, np.uint8)
    y = _text(panel, "What the OCR sees", (12, 12), 0.8, TEXT_COLOUR)
    if window_image is not None:
        size = f"{window_image.shape[1]}x{window_image.shape[0]} px"
        y = _text(panel, f"the window, levelled ({size})", (12, y + 4), 0.5, MUTED_COLOUR)
        room_w, room_h = SIDE_PANEL_WIDTH - 24, 200
        factor = min(room_w / window_image.shape[1], room_h / window_image.shape[0], 4.0)
        shown = cv2.resize(window_image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        _paste(panel, np.asarray(shown, np.uint8), (12, y))
        y += shown.shape[0] + 14
    if isinstance(cells, Cells):
        polarity = "light digits on dark" if cells.light_on_dark else "dark digits on light"
        facts = f"digits {cells.digit_height:.0f} px tall, row turned {cells.angle:.1f} deg"
        y = _text(panel, f"{facts}, {polarity}", (12, y), 0.5, MUTED_COLOUR)
        y = _text(panel, "each digit as the OCR engine gets it:", (12, y), 0.5, MUTED_COLOUR)
        ok = reading if isinstance(reading, Reading) else None
        y = _glyph_rows(panel, cells, ok, min_confidence, y + 2)
    sure = isinstance(reading, Reading) and reading.confidence >= min_confidence
    y = _paragraph(panel, status, (12, y + 4), 0.6, GOOD_COLOUR if sure else BAD_COLOUR)
    legend = "magenta: window.* from the config; cyan: the digit cells the OCR cut."
    if isinstance(reading, Reading):
        legend += (
            f" Digits in green: confidence >= {min_confidence:g}"
            " (plausibility.min_confidence); red: below; ~ : the drum is turning."
        )
    y = _paragraph(panel, legend, (12, y + 4), 0.45, MUTED_COLOUR)
    return panel[: max(height, y + 8)]


# --------------------------------------------------------------------------- snapshot


@dataclass(frozen=True)
class _Outcome:
    window_image: Image | None
    cells: Cells | NoReading | None
    reading: Reading | NoReading | None
    label: str  # short, beside the window
    summary: str  # one line for the terminal and the panel


def _read(
    frame_image: Image, window: DigitWindow, digits: int, engine: OcrEngine | None
) -> _Outcome:
    height, width = frame_image.shape[:2]
    try:
        check_fits(window, width, height)
    except WindowError as err:
        where = "wholly outside" if "wholly" in str(err) else "partly outside"
        return _Outcome(None, None, None, f"window {where} the frame", f"window problem: {err}")
    window_image = crop(frame_image, window)
    cells: Cells | NoReading | None
    if engine is None:
        cells = preprocess(window_image, digits)
        why = "no OCR engine (Tesseract missing): window and cells only"
        return _Outcome(window_image, cells, None, "not read: no OCR engine", why)
    # The cells where the engine cut them, as it saw them.
    reading, cells = engine.read_seen(window_image, digits)
    if isinstance(reading, NoReading):
        text = f"no reading: {reading.reason}"
        return _Outcome(window_image, cells, reading, text, text)
    label = f"{reading.digits}  confidence {reading.confidence:.2f}"
    summary = f"reading {reading.digits} confidence {reading.confidence:.2f}"
    if any(reading.rolling):
        summary += " (a drum is turning)"
    return _Outcome(window_image, cells, reading, label, summary)


def render_snapshot(
    frame_image: Image, config: Config, engine: OcrEngine | None
) -> tuple[Image, str]:
    """The two-panel PNG image (BGR) for one frame, and a one-line summary.

    `engine` None (Tesseract missing) still shows the window and the cells found."""
    window = DigitWindow.from_config(config.window)
    outcome = _read(frame_image, window, config.meter.digits, engine)
    cells = outcome.cells if isinstance(outcome.cells, Cells) else None
    left = draw_overlay(frame_image, window, cells, outcome.label, max_width=FRAME_PANEL_WIDTH)
    right = side_panel(
        outcome.window_image,
        outcome.cells,
        outcome.reading,
        outcome.summary,
        config.plausibility.min_confidence,
        left.shape[0],
    )
    height = max(left.shape[0], right.shape[0])
    image = np.full((height, left.shape[1] + right.shape[1], 3), PANEL_COLOUR, np.uint8)
    image[: left.shape[0], : left.shape[1]] = left
    image[: right.shape[0], left.shape[1] :] = right
    return image, outcome.summary


def grab_frame(config: Config) -> Frame:
    """One frame from the configured source; SourceError (or SourceEnded) if none."""
    source = open_source(config.camera, config.meter.digits)
    source.open()
    try:
        return source.read()
    finally:
        source.close()


def write_png(path: Path, image: Image) -> None:
    """Write `image` as PNG; OSError with the reason when it cannot be."""
    try:
        ok, data = cv2.imencode(".png", image)
    except cv2.error as err:
        raise OSError(f"cannot encode the PNG: {err}") from err
    if not ok:
        raise OSError("cannot encode the PNG")
    path.write_bytes(data.tobytes())


def run_snapshot(config: Config, out_path: Path | str = "snapshot.png") -> int:
    """`edgemeter snapshot`: grab, read, draw, write; print the summary and the path."""
    out = Path(out_path)
    try:
        frame = grab_frame(config)
    except (SourceError, SourceEnded) as err:
        print(
            f"edgemeter: cannot take a frame from camera.source={config.camera.source}: {err}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    engine: OcrEngine | None
    status = EXIT_OK
    try:
        engine = make_engine(config.ocr, config.plausibility.min_confidence)
    except OcrUnavailable as err:
        print(
            f"edgemeter: {err} (the snapshot shows the window without a reading)", file=sys.stderr
        )
        engine, status = None, EXIT_ENGINE
    image, summary = render_snapshot(frame.image, config, engine)
    try:
        write_png(out, image)
    except OSError as err:
        print(f"edgemeter: cannot write {out}: {err}", file=sys.stderr)
        return EXIT_FAILURE
    print(summary)
    print(
        f"wrote {out} ({image.shape[1]}x{image.shape[0]}): the frame from {frame.origin}"
        " with window.* drawn, and the digits as the OCR sees them"
    )
    return status
