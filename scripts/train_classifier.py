"""Train the drum classifier that edgemeter.classify runs, and export it to ONNX.

    python scripts/train_classifier.py                 # build data, train, export, report val
    python scripts/train_classifier.py --report        # held-out figures of the packaged model

Needs torch (training time only: `pip install torch==2.13.0 onnx onnxscript`); the
daemon runs the exported model with OpenCV alone.

Data (fixed seeds, so a run rebuilds the same set):
- real: ../shared/data/meterdigits, `train` split only; a tenth of it (by file hash)
  is kept back for validation and calibration. Each crop is one drum cell; its label is
  the drum position in tenths. Several augmented copies of each (blur, noise, JPEG,
  light, glare, occlusion, shift, scale, rotation, colour channel mix).
- synthetic: edgemeter.simulate counters in TRAIN_FONTS only: the tuning fonts and
  further typefaces of other families (EXTRA_FONTS, from `scripts/deps.sh --train`); the
  benchmark's held-out fonts are never drawn. Hard and mild conditions, digits 16-70 px,
  drum positions spread over the whole turn and higher drums carried. Cells are cut the
  way the engine cuts them: from the `ocr.row_hypotheses` placement that lies on the
  drums, with the size errors that row finding makes (about +-10 %), else from the true
  cell boxes with jitter in position, scale and angle.
- not-a-digit cells: cuts half a drum off (between two simulated drums; two real crops
  side by side, cut in the middle) and one drum beyond either end of a simulated row
  (bezel, face, unit label, window edge), labelled with the extra output, so that a
  cell finder off by half a pitch, or a drum placed where there is none, gives no
  confident digit.

The model sees INPUT_H x INPUT_W grey (digit light on dark, contrast-stretched) and
says which of 100 tenths of the drum turn it shows (`--steps 20`: 200 twentieths), or:
no digit. Soft targets: the two steps around a position share it, no label smoothing.
After training, a softmax temperature is fitted on the validation set, and a
calibration map that puts the engine's gate (0.6) where the validation digits are
wrong at most `--risk` of the time (`--risk-each`: photographed and simulated drums
each). `correct`: a photographed drum labelled N may be read as either neighbour, a
simulated one from APPROACH_FROM on as the digit it rolls into. `--recalibrate` refits
only that, on the cached validation set, for an exported model.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import math
import multiprocessing
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edgemeter import classify, simulate
from edgemeter.ocr import NoReading, Reading, Row, row_hypotheses, to_grey
from edgemeter.window import DigitWindow, crop

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "data" / "meterdigits"
CACHE = ROOT / "build" / "classifier-data.npz"
GATE = 0.6
NO_DIGIT = float("nan")  # the label of a cell that shows no drum digit
# Per-drum error allowed above the gate on validation: a 6-drum reading stays well
# under 0.5 % wrong.
GATE_RISK = 0.001
# A simulated drum this far into its turn may be read as the digit it rolls into: the
# real labels call a drum at d - 0.1 d, and the engine flags a last drum read short of
# its digit as approaching. Below it (the hard set rolls up to 0.85) it must read floor.
APPROACH_FROM = 0.86
# Weight of the tenth under a digit's own (d - 0.2) in the digit's support: see
# classify's docstring.
BELOW = 0.5

# Channels of the three convolution stages and width of the dense layer: about 1.5x
# the arithmetic of 16-32-64/128, still far under a millisecond per cell.
WIDTHS = (20, 40, 80)
DENSE = 160

# Typefaces drawn for training only, beyond the tuning fonts: other families than any
# held-out one (no Times, Helvetica Narrow, Noto, Roboto or DSEG7 Modern/Classic
# Regular look-alikes), upright, from Debian's font packages (scripts/deps.sh --train).
# More shapes of each digit are what makes a reader generalise to counters it has
# never seen. The seven-segment ones are listed again so that LCDs keep their share.
EXTRA_FONTS = (
    "FreeSansBold",
    "FreeSans",
    "FreeMonoBold",
    "NimbusSans-Bold",
    "NimbusMonoPS-Bold",
    "URWGothic-Demi",
    "URWBookman-Demi",
    "C059-Bold",
    "P052-Bold",
    "OpenSans-Bold",
    "OpenSans-CondBold",
    "OpenSans-Regular",
    "Lato-Bold",
    "Lato-Black",
    "Lato-Regular",
    "Cantarell-Bold",
    "Carlito-Bold",
    "Inconsolata",
    "Hack-Bold",
    "B612-Bold",
    "B612Mono-Bold",
    "ComicNeue-Bold",
    "Oxygen-Sans-Bold",
    "JetBrainsMono-Bold",
    "JetBrainsMono-ExtraBold",
    "FiraCode-Bold",
    "Quicksand-Bold",
    "DejaVuSans",
    "DejaVuSansCondensed",
    "LiberationMono-Regular",
    "DSEG7SEGGCHAN-Regular",
    "DSEG7SEGGCHAN-Regular",
    "DSEG7Classic-Bold",
    "DSEG7Classic-Bold",
)
TRAIN_FONTS = (*simulate.TUNE_FONTS, *EXTRA_FONTS)
# Share of simulated frames drawn with small digits (16-25 px), below random_style's
# 25 px: the far-away counters whose cells hold only a few pixels.
SMALL_SHARE = 0.2
HELD_OUT_FONTS = simulate.HELD_OUT_FONTS


# --------------------------------------------------------------------------- real data


@dataclass(frozen=True)
class RealRow:
    file: str
    label: str
    position: float
    split: str

    @property
    def validation(self) -> bool:
        """A tenth of the train split, fixed by the file's name, kept for validation."""
        return int(hashlib.sha256(self.file.encode()).hexdigest()[:4], 16) % 10 == 0


def real_rows(split: str) -> list[RealRow]:
    with (REAL / "labels.csv").open() as handle:
        return [
            RealRow(r["file"], r["label"], float(r["position"]), r["split"])
            for r in csv.DictReader(handle)
            if r["split"] == split
        ]


def channel_mix(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grey from random channel weights: a red drum is dark to one camera, light to another."""
    if image.ndim == 2 or rng.random() < 0.6:
        return to_grey(image)
    weights = rng.dirichlet((1.0, 1.0, 1.0)).astype(np.float32)
    return np.clip(image.astype(np.float32) @ weights, 0, 255).astype(np.uint8)


def degrade(grey: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Camera trouble on one cell crop: light, glare, occlusion, blur, noise, JPEG."""
    img = grey.astype(np.float32)
    h, w = img.shape
    scale = h / 44.0  # the real crops' median height
    if rng.random() < 0.7 * strength:
        gain = math.exp(rng.uniform(-0.6, 0.4))
        gamma = math.exp(rng.uniform(-0.4, 0.4))
        img = 255.0 * (np.clip(img * gain, 0, 255) / 255.0) ** gamma
    if rng.random() < 0.3 * strength:  # uneven light across the cell
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        ramp = (math.cos(angle) * xs / w + math.sin(angle) * ys / h) * rng.uniform(0.2, 0.6)
        img *= 1.0 - ramp + ramp.mean()
    if rng.random() < 0.15 * strength:  # a specular spot
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        radius = rng.uniform(0.15, 0.4) * h
        spot = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * radius**2))
        img += spot * rng.uniform(60, 200)
    if rng.random() < 0.1 * strength:  # dirt or a shadow over part of the cell
        rw, rh = round(rng.uniform(0.15, 0.4) * w), round(rng.uniform(0.1, 0.25) * h)
        x0, y0 = int(rng.integers(0, max(1, w - rw))), int(rng.integers(0, max(1, h - rh)))
        img[y0 : y0 + rh, x0 : x0 + rw] = img[y0 : y0 + rh, x0 : x0 + rw] * rng.uniform(
            0.4, 0.8
        ) + rng.uniform(0, 60)
    if rng.random() < 0.25 * strength:  # few pixels: a small digit far from the lens
        factor = rng.uniform(0.35, 0.8)
        small = cv2.resize(img, (max(3, round(w * factor)), max(4, round(h * factor))))
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5 * strength:
        sigma = rng.uniform(0.3, 1.6) * scale
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    if rng.random() < 0.5 * strength:
        img += rng.normal(0, rng.uniform(2, 12), img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.5 * strength:
        ok, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 95))])
        if ok:
            out = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    return out


def warp(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small shifts, scale and rotation of a whole-drum crop, as a rough user crop.

    Sideways and in size generously; up and down only a little, since that is what
    the drum's turn looks like.
    """
    h, w = grey.shape
    angle = rng.uniform(-4, 4)
    # Width and height apart: typefaces range from condensed to wide.
    sx, sy = math.exp(rng.uniform(-0.2, 0.15)), math.exp(rng.uniform(-0.1, 0.08))
    tx, ty = rng.uniform(-0.07, 0.07) * w, rng.uniform(-0.025, 0.025) * h
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    matrix[:, 0] *= sx
    matrix[:, 1] *= sy
    matrix[0, 2] += tx + (w / 2) * (1 - sx)
    matrix[1, 2] += ty + (h / 2) * (1 - sy)
    return cv2.warpAffine(grey, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)


def _polarity(grey: np.ndarray, rng: np.random.Generator) -> bool:
    """The engine's polarity judgement, wrong on purpose now and then: the network
    should still read a digit whose polarity was misjudged (glare, a dirty drum)."""
    light = classify.light_on_dark(grey)
    return light != (rng.random() < 0.05)


def real_samples(
    rows: list[RealRow], copies: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, positions and 'real' flags: each crop as is, plus augmented copies."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    previous = None
    for row in rows:
        image = cv2.imread(str(REAL / row.file))
        if image is None:
            continue
        xs.append(classify.normalise(image))
        ys.append(row.position)
        for _ in range(copies):
            grey = degrade(warp(channel_mix(image, rng), rng), rng)
            xs.append(classify.normalise(grey, _polarity(grey, rng)))
            ys.append(row.position)
        if copies and previous is not None and rng.random() < 0.25:
            grey = degrade(between(previous, image, rng), rng)
            xs.append(classify.normalise(grey, _polarity(grey, rng)))
            ys.append(NO_DIGIT)
        previous = image
    return np.stack(xs), np.array(ys, np.float32), np.ones(len(ys), bool)


def between(left: np.ndarray, right: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a cell cut half a drum off shows: the right half of one drum and the left
    half of the next, side by side. Not a digit."""
    height = right.shape[0]
    scale = height / left.shape[0]
    left = cv2.resize(left, (max(2, round(left.shape[1] * scale)), height))
    pair = channel_mix(np.hstack([left, right]), rng)
    width = right.shape[1]
    x0 = left.shape[1] - width // 2 + round(rng.uniform(-0.12, 0.12) * width)
    x0 = min(max(0, x0), pair.shape[1] - width)
    return pair[:, x0 : x0 + width]


# --------------------------------------------------------------------------- synthetic


def sim_value(style: simulate.CounterStyle, rng: np.random.Generator) -> float:
    """A counter value whose drums spread over their whole turn, higher ones carried."""
    whole = int(rng.integers(0, 10**style.digits))
    if rng.random() < 0.35 and style.digits > 1:
        k = int(rng.integers(1, style.digits))  # the k drums below the carried one show 9
        whole = (whole // 10**k) * 10**k + 10**k - 1
    # At rest (a little off) or anywhere in the turn.
    frac = rng.uniform(-0.06, 0.08) if rng.random() < 0.45 else rng.uniform(0.0, 1.0)
    return max(0.0, whole + frac)


def sim_frame_samples(seed: int, fonts: tuple[str, ...]) -> tuple[list[np.ndarray], list[float]]:
    """The cells of one simulated frame (its own seed) as network inputs and positions."""
    rng = np.random.default_rng(seed)
    style = simulate.random_style(rng, fonts)
    if rng.random() < SMALL_SHARE:
        style = dataclasses.replace(style, digit_height=int(rng.integers(16, 26)))
    value = sim_value(style, rng)
    conditions = simulate.random_conditions(rng, hard=rng.random() < 0.75)
    frame = simulate.render(style, value, conditions, rng)
    window = crop(frame.image, DigitWindow(*frame.window))
    grey = channel_mix(window, rng)
    # An LCD shows the digits reached, whole.
    positions = [float(c) for c in frame.truth] if style.lcd else list(frame.drum_positions)
    rows = row_hypotheses(window, style.digits) if rng.random() < 0.75 else None
    row = _on_the_drums(rows, frame, style) if isinstance(rows, list) else None
    xs: list[np.ndarray] = []
    if row is not None:
        for where in classify.row_geometry(row):
            jittered = classify.CellGeometry(
                (
                    where.centre[0] + rng.normal(0, 0.02) * where.digit_height,
                    where.centre[1] + rng.normal(0, 0.015) * where.digit_height,
                ),
                where.angle + rng.normal(0, 0.5),
                where.digit_height * math.exp(rng.normal(0, 0.05)),
            )
            xs.append(_cut(grey, jittered, rng))
        centres = list(row.centres)
        angle, dh = row.angle, row.digit_height
    else:
        wx, wy = frame.window[:2]
        for x, y, w, h in frame.cells:
            dh = style.digit_height * math.exp(rng.normal(0, 0.1))
            where = classify.CellGeometry(
                (
                    x + w / 2 - wx + rng.normal(0, 0.05) * dh,
                    y + h / 2 - wy + rng.normal(0, 0.03) * dh,
                ),
                style.rotation + rng.normal(0, 1.2),
                dh,
            )
            xs.append(_cut(grey, where, rng))
        centres = [(x + w / 2 - wx, y + h / 2 - wy) for x, y, w, h in frame.cells]
        angle, dh = style.rotation, float(style.digit_height)
    if len(centres) > 1 and rng.random() < 0.6:
        # A cell cut between two drums, as a cell finder off by half a pitch cuts it.
        i = int(rng.integers(len(centres) - 1))
        t = 0.5 + rng.uniform(-0.1, 0.1)
        (x0, y0), (x1, y1) = centres[i], centres[i + 1]
        where = classify.CellGeometry((x0 + t * (x1 - x0), y0 + t * (y1 - y0)), angle, dh)
        xs.append(_cut(grey, where, rng))
        positions.append(NO_DIGIT)
    if len(centres) > 1 and rng.random() < 0.5:
        # A cell one drum beyond either end of the row (the bezel, the meter's face, its
        # unit label, the window's edge): where the engine tries a drum the cell finder
        # did not see, and must find none.
        (x0, y0), (x1, y1) = centres[0], centres[-1]
        step = ((x1 - x0) / (len(centres) - 1), (y1 - y0) / (len(centres) - 1))
        t = 1 + rng.uniform(-0.08, 0.08)
        if rng.random() < 0.5:
            beyond = (x0 - t * step[0], y0 - t * step[1])
        else:
            beyond = (x1 + t * step[0], y1 + t * step[1])
        xs.append(_cut(grey, classify.CellGeometry(beyond, angle, dh), rng))
        positions.append(NO_DIGIT)
    return xs, positions


def _on_the_drums(
    rows: list[Row], frame: simulate.SimFrame, style: simulate.CounterStyle
) -> Row | None:
    """The placement of the row that lies on the drums (the one the engine should
    choose), or None: cells off the drums (the serial number printed below them, the
    row shifted by one drum) would be given lying labels."""
    wx, wy = frame.window[:2]
    h = style.digit_height
    for row in rows:
        fits = all(
            abs(cx - (x + w / 2 - wx)) <= 0.25 * h
            and abs(cy - (y + ch / 2 - wy)) <= 0.2 * h
            and abs(row.digit_height / h - 1) <= 0.3
            for (cx, cy), (x, y, w, ch) in zip(row.centres, frame.cells, strict=True)
        )
        if fits:
            return row
    return None


def _cut(grey: np.ndarray, where: classify.CellGeometry, rng: np.random.Generator) -> np.ndarray:
    height = classify.CROP_H * math.exp(rng.uniform(-0.06, 0.06))
    width = classify.CROP_W * math.exp(rng.uniform(-0.12, 0.12))
    cell = degrade(classify.cut(grey, where, height, width), rng, 0.35)
    return classify.normalise(cell, _polarity(cell, rng))


def _sim_worker(args: tuple[int, int, tuple[str, ...]]) -> tuple[np.ndarray, np.ndarray]:
    start, count, fonts = args
    xs: list[np.ndarray] = []
    ys: list[float] = []
    for seed in range(start, start + count):
        try:
            cells, positions = sim_frame_samples(seed, fonts)
        except (cv2.error, ValueError) as err:
            print(f"frame seed={seed} skipped: {err}", file=sys.stderr)
            continue
        xs.extend(cells)
        ys.extend(positions)
    return np.stack(xs), np.array(ys, np.float32)


def sim_samples(
    frames: int, seed: int, fonts: tuple[str, ...], workers: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    chunk = 200
    jobs = [(seed + s, min(chunk, frames - s), fonts) for s in range(0, frames, chunk)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_sim_worker, jobs)
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return x, y, np.zeros(len(y), bool)


def _real_worker(args: tuple[list[RealRow], int, int]) -> tuple[np.ndarray, ...]:
    return real_samples(*args)


def build(frames: int, copies: int, seed: int, workers: int) -> dict[str, np.ndarray]:
    missing = [f for f in TRAIN_FONTS if simulate.resolve_font(f) is None]
    if missing:
        # A fallback typeface would silently train another model than the recipe's.
        raise SystemExit(
            f"training fonts missing: {', '.join(sorted(set(missing)))}; "
            "install them with: sudo bash scripts/deps.sh --train"
        )
    started = time.time()
    rows = real_rows("train")
    train_rows = [r for r in rows if not r.validation]
    val_rows = [r for r in rows if r.validation]
    halves = [(train_rows[k::workers], copies, seed + 1 + k) for k in range(workers)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        real_parts = pool.map(_real_worker, halves)
    rx = np.concatenate([p[0] for p in real_parts])
    ry = np.concatenate([p[1] for p in real_parts])
    rr = np.concatenate([p[2] for p in real_parts])
    vx, vy, vr = real_samples(val_rows, 0, seed + 100)
    print(f"real: train {len(ry)} val {len(vy)} ({time.time() - started:.0f} s)", flush=True)
    sx, sy, sr = sim_samples(frames, seed * 1_000_003, TRAIN_FONTS, workers)
    svx, svy, svr = sim_samples(max(200, frames // 10), seed * 1_000_003 + 10**7, TRAIN_FONTS, 2)
    print(f"synthetic: train {len(sy)} val {len(svy)} ({time.time() - started:.0f} s)", flush=True)
    return {
        "x": np.concatenate([rx, sx]).astype(np.float16),
        "y": np.concatenate([ry, sy]),
        "real": np.concatenate([rr, sr]),
        "vx": np.concatenate([vx, svx]).astype(np.float16),
        "vy": np.concatenate([vy, svy]),
        "vreal": np.concatenate([vr, svr]),
    }


# --------------------------------------------------------------------------- training


def soft_targets(positions: np.ndarray, steps: int = 10, spread: float = 0.0) -> np.ndarray:
    """Targets over the turn's `steps` per digit (10: tenths, 20: twentieths): a
    position shared by the two steps around it.

    No label smoothing by default: the reached digit changes between x.8 and x.9, one
    tenth from where real drums settle (the labels put 37 % of settled digits at x.9),
    so mass smeared onto neighbouring tenths is confidence lost on settled digits.
    """
    n = len(positions)
    none = np.isnan(positions)
    classes = 10 * steps
    at = np.mod(np.nan_to_num(positions.astype(np.float64)) * steps, classes)
    low = np.floor(at).astype(int) % classes
    frac = at - np.floor(at)
    target = np.zeros((n, classes), np.float32)
    rows = np.arange(n)
    target[rows, low] += 1 - frac
    target[rows, (low + 1) % classes] += frac
    smooth = (1 - 2 * spread) * target
    smooth += spread * (np.roll(target, 1, axis=1) + np.roll(target, -1, axis=1))
    out = np.zeros((n, classes + 1), np.float32)
    out[~none, :classes] = smooth[~none]
    out[none, classes] = 1.0  # not a digit
    return out


def make_model(  # type: ignore[no-untyped-def]
    outputs: int = classify.OUTPUTS, widths: tuple[int, ...] = (*WIDTHS, DENSE)
):
    from torch import nn  # noqa: PLC0415 - training-time dependency

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    a, b, c, dense = widths
    flat = c * (classify.INPUT_H // 8) * (classify.INPUT_W // 8)
    return nn.Sequential(
        *block(1, a),
        *block(a, a),
        nn.MaxPool2d(2),
        *block(a, b),
        *block(b, b),
        nn.MaxPool2d(2),
        *block(b, c),
        *block(c, c),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(flat, dense),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(dense, outputs),
    )


def train(  # type: ignore[no-untyped-def]
    data: dict[str, np.ndarray],
    epochs: int,
    seed: int,
    steps: int = 10,
    batch: int = 256,
    widths: tuple[int, ...] = (*WIDTHS, DENSE),
):
    import torch  # noqa: PLC0415

    torch.manual_seed(seed)
    # One thread: with two, torch's OpenMP workers stall for minutes whenever anything
    # else runs on a two-core machine.
    torch.set_num_threads(1)
    model = make_model(10 * steps + 1, widths)
    x = torch.from_numpy(data["x"].astype(np.float32))[:, None]
    t = torch.from_numpy(soft_targets(data["y"], steps))
    # Real crops are the scarcer and the closer to what users see: drawn twice as often.
    weights = torch.from_numpy(np.where(data["real"], 2.0, 1.0)).double()
    per_epoch = len(x)
    steps = epochs * math.ceil(per_epoch / batch)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    started = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.multinomial(weights, per_epoch, replacement=True, generator=gen)
        total = 0.0
        for k in range(0, per_epoch, batch):
            idx = order[k : k + batch]
            xb = x[idx]
            # Cheap per-batch jitter of contrast and offset, on top of the stored copies.
            gain = torch.empty(len(idx), 1, 1, 1).uniform_(0.8, 1.2, generator=gen)
            shift = torch.empty(len(idx), 1, 1, 1).uniform_(-0.1, 0.1, generator=gen)
            xb = xb * gain + shift
            logits = model(xb)
            loss = -(t[idx] * torch.log_softmax(logits, 1)).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        acc = evaluate_split(model, data["vx"], data["vy"], data["vreal"])
        print(
            f"epoch {epoch + 1}/{epochs} loss={total / per_epoch:.3f} "
            f"val real={acc[0]:.4f} sim={acc[1]:.4f} ({time.time() - started:.0f} s)",
            flush=True,
        )
    model.eval()
    return model


def logits_of(model, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    import torch  # noqa: PLC0415

    model.eval()
    out = []
    with torch.no_grad():
        for k in range(0, len(x), 2048):
            xb = torch.from_numpy(x[k : k + 2048].astype(np.float32))[:, None]
            out.append(model(xb).numpy())
    return np.concatenate(out).astype(np.float64)


def reached(positions: np.ndarray, steps: int = 10) -> np.ndarray:
    """The digit each true position has reached, by classify's rule on its nearest
    step (tenth or twentieth); -1 for a cell that shows no digit (any digit read there
    is wrong)."""
    at = np.round(np.nan_to_num(np.asarray(positions, np.float64), nan=-1.0) * steps)
    first = classify.REACHED_FROM * steps // 10
    digit = np.floor((at - first) / steps).astype(int) % 10
    return np.where(np.isnan(positions), -1, digit)


def correct(
    digits: np.ndarray, positions: np.ndarray, real: np.ndarray, steps: int = 10
) -> np.ndarray:
    """Whether each read digit is right. A photographed drum between two digits (its
    label is N: more than a tenth from either) may be read as either, as the real
    labels define; a simulated drum has its exact position, and reads as `reached`,
    or, from APPROACH_FROM on, as the digit it is rolling into (`classify` flags such
    a last drum approaching, and the judge waits a cycle before it takes the value)."""
    right = digits == reached(positions, steps)
    exact = np.nan_to_num(np.asarray(positions, np.float64), nan=-1.0)
    tenths = np.round(exact * 10)
    between = real & ~np.isnan(positions) & (np.abs(tenths - 10 * np.round(tenths / 10)) > 1)
    upper = (np.floor(tenths / 10).astype(int) + 1) % 10
    rolling_in = ~real & ~np.isnan(positions) & (np.mod(exact, 1.0) >= APPROACH_FROM)
    next_digit = (np.floor(exact).astype(int) + 1) % 10
    return right | (between & (digits == upper)) | (rolling_in & (digits == next_digit))


def evaluate_split(model, x: np.ndarray, y: np.ndarray, real: np.ndarray) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    probs = softmax(logits_of(model, x), 1.0)
    right = winners(probs) == reached(y, probs.shape[1] // 10)
    digit = ~np.isnan(y)
    return float(right[real & digit].mean()), float(right[~real & digit].mean())


def winners(probs: np.ndarray) -> np.ndarray:
    """The reached digit each distribution says, by the engine's rule."""
    return np.array([int(np.argmax(classify.reached_mass(p))) for p in probs])


def data_hash(data: dict[str, np.ndarray]) -> str:
    """SHA-256 of the built training and validation arrays: what the model saw."""
    digest = hashlib.sha256()
    for key in sorted(data):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(data[key]).tobytes())
    return digest.hexdigest()


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    best = (math.inf, 1.0)
    for temperature in np.exp(np.linspace(math.log(0.5), math.log(3.0), 41)):
        p = softmax(logits, float(temperature))
        nll = float(-(targets * np.log(p + 1e-12)).sum(1).mean())
        best = min(best, (nll, float(temperature)))
    return best[1]


def fit_calibration(
    mass: np.ndarray, right: np.ndarray, risk: float = GATE_RISK
) -> dict[str, list[float]]:
    """Knots mapping the winning digit's support (`classify.support`) to a confidence:
    the gate (0.6) at the lowest support above which validation digits are wrong at
    most `risk` of the time, and in between, the accuracy seen below it."""
    order = np.argsort(-mass)
    wrong = np.cumsum(~right[order])
    count = np.arange(1, len(order) + 1)
    ok = np.flatnonzero(wrong <= risk * count)
    # At least a few wrong ones must lie beyond the threshold for it to be measured.
    threshold = float(mass[order][ok[-1]]) if ok.size else 0.999
    threshold = min(max(threshold, 0.5), 0.995)
    low = mass < threshold
    below = float(right[low].mean()) if low.any() else 0.5
    raw = [0.0, max(0.01, threshold - 0.2), threshold, 1.0]
    conf = [0.0, min(0.5, below), GATE, 1.0]
    return {"raw": raw, "confidence": conf}


def export(model, out: Path, meta: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    import torch  # noqa: PLC0415

    out.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 1, classify.INPUT_H, classify.INPUT_W)
    torch.onnx.export(
        model,
        (dummy,),
        str(out),
        input_names=["cell"],
        output_names=["logits"],
        dynamic_axes={"cell": {0: "n"}, "logits": {0: "n"}},
        opset_version=13,
        dynamo=False,
    )
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- report


@dataclass
class Tally:
    read: int = 0
    wrong: int = 0
    unread: int = 0
    ms: float = 0.0

    @property
    def n(self) -> int:
        return self.read + self.wrong + self.unread

    def add(self, got: str | None, ok: set[str]) -> None:
        if got is None:
            self.unread += 1
        elif got in ok:
            self.read += 1
        else:
            self.wrong += 1

    def row(self, name: str) -> str:
        pct = 100.0 / max(1, self.n)
        ms = f"{self.ms / self.n:.1f}" if self.ms else "-"
        return (
            f"| {name} | {self.n} | {self.read * pct:.1f} | {self.wrong * pct:.2f} |"
            f" {self.unread * pct:.1f} | {ms} |"
        )


class Engine(Protocol):
    name: str

    def read(self, window: np.ndarray, digits: int) -> Reading | NoReading: ...


def _gated(result: Reading | NoReading) -> str | None:
    """What the daemon would take from a read: digits at or above the gate, or none."""
    if isinstance(result, NoReading):
        return None
    return result.digits if result.confidence >= GATE else None


def _combined(answers: dict[str, str | None]) -> dict[str, str | None]:
    """Two ways of using both engines: both must agree, or Tesseract when the
    classifier abstains."""
    if "tesseract" not in answers:
        return {}
    mine, theirs = answers["classifier"], answers["tesseract"]
    return {
        "classifier = tesseract": mine if mine == theirs else None,
        "classifier, else tesseract": mine if mine is not None else theirs,
    }


def _score(
    samples: Iterator[tuple[np.ndarray, int, set[str], str]], engines: dict[str, Engine]
) -> dict[str, dict[str, Tally]]:
    """Tallies per sample group and path; a sample is (window, digits, right answers,
    group)."""
    tallies: dict[str, dict[str, Tally]] = {}
    for window, digits, ok, group in samples:
        answers: dict[str, str | None] = {}
        for name, engine in engines.items():
            started = time.perf_counter()
            answers[name] = _gated(engine.read(window, digits))
            ms = (time.perf_counter() - started) * 1000
            tallies.setdefault(group, {}).setdefault(name, Tally()).ms += ms
        answers.update(_combined(answers))
        for name, got in answers.items():
            tallies.setdefault(group, {}).setdefault(name, Tally()).add(got, ok)
    return tallies


def real_test() -> Iterator[tuple[np.ndarray, int, set[str], str]]:
    """meterdigits `test` as one-drum windows: a digit must be read as its label, a
    drum between two digits as either."""
    for row in real_rows("test"):
        image = cv2.imread(str(REAL / row.file))
        if row.label == "N":
            low = int(row.position) % 10
            yield image, 1, {str(low), str((low + 1) % 10)}, "real test N (mid-roll)"
        else:
            yield image, 1, {row.label}, "real test 0-9"


def held_out_frames(count: int, seed: int) -> Iterator[tuple[np.ndarray, int, set[str], str]]:
    """Six-drum counters in held-out fonts under hard conditions, a quarter mid-roll,
    a new installation every 10 frames."""
    rng = np.random.default_rng(seed)
    style = simulate.default_style()
    for index in range(count):
        if index % 10 == 0:
            style = simulate.random_style(rng, HELD_OUT_FONTS)
            while style.digits != 6:
                style = simulate.random_style(rng, HELD_OUT_FONTS)
        value = float(rng.integers(0, 10**6))
        if rng.random() < 0.25:
            value += float(rng.uniform(0.15, 0.85))
        frame = simulate.render(style, value, simulate.random_conditions(rng, hard=True), rng)
        window = crop(frame.image, DigitWindow(*frame.window))
        yield window, 6, {frame.truth}, "held-out fonts, hard, 6 digits"


def report(model: Path, frames: int, tesseract: bool) -> None:
    engines: dict[str, Engine] = {"classifier": classify.ClassifierEngine(model)}
    if tesseract:
        from edgemeter.config import OcrConfig  # noqa: PLC0415
        from edgemeter.ocr import make_engine  # noqa: PLC0415

        # Not the configured default, which is this classifier.
        engines["tesseract"] = make_engine(OcrConfig(engine="auto"))
    print("| set | path | n | read % | wrong % | unread % | ms per window |")
    print("|---|---|---|---|---|---|---|")
    for samples in (real_test(), held_out_frames(frames, 2024)):
        for group, paths in _score(samples, engines).items():
            for name, tally in paths.items():
                print(tally.row(f"{group} | {name}"), flush=True)


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12000, help="simulated training frames")
    parser.add_argument("--copies", type=int, default=5, help="augmented copies per real crop")
    parser.add_argument("--epochs", type=int, default=11)
    parser.add_argument(
        "--steps",
        type=int,
        choices=classify.STEPS_PER_DIGIT,
        default=10,
        help="steps of a drum's turn per digit the network tells apart (tenths, twentieths)",
    )
    parser.add_argument(
        "--widths",
        type=int,
        nargs=4,
        default=[*WIDTHS, DENSE],
        help="channels of the three conv stages and the dense layer's width",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=CACHE, help="dataset cache (.npz)")
    parser.add_argument("--rebuild", action="store_true", help="ignore the dataset cache")
    parser.add_argument("--out", type=Path, default=classify.DEFAULT_MODEL)
    parser.add_argument("--report", action="store_true", help="held-out figures only")
    parser.add_argument("--report-frames", type=int, default=400)
    parser.add_argument("--no-tesseract", action="store_true")
    parser.add_argument(
        "--below",
        type=float,
        default=BELOW,
        help="share of d - 0.2 that counts for d, relative to d - 0.1 (classify.support)",
    )
    parser.add_argument(
        "--last",
        type=float,
        default=1.0,
        help="share of d + 0.8 that counts for d (classify.support)",
    )
    parser.add_argument(
        "--risk",
        type=float,
        default=GATE_RISK,
        help="share of validation drums allowed wrong at or above the gate",
    )
    parser.add_argument(
        "--recalibrate", action="store_true", help="refit --out's calibration on the cache"
    )
    parser.add_argument(
        "--risk-each",
        action="store_true",
        help="the risk holds for photographed and simulated validation drums each",
    )
    args = parser.parse_args()
    rule = GateRule(args.below, args.last, args.risk, args.risk_each)
    # Data are built in worker processes; OpenCV's own threads would only fight them
    # and torch's for the two cores.
    cv2.setNumThreads(1)

    if args.report:
        report(args.out, args.report_frames, not args.no_tesseract)
        return 0
    if args.recalibrate:
        recalibrate(args.out, dict(np.load(args.cache)), rule)
        return 0

    started = time.time()
    if args.cache.is_file() and not args.rebuild:
        data = dict(np.load(args.cache))
        print(f"dataset from {args.cache}: {len(data['y'])} train, {len(data['vy'])} val")
    else:
        data = build(args.frames, args.copies, args.seed, args.workers)
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.cache, **data)
    built = time.time()
    model = train(data, args.epochs, args.seed, args.steps, widths=tuple(args.widths))
    trained = time.time()

    temperature, calibration, support, right = calibrate(
        logits_of(model, data["vx"]), data["vy"], data["vreal"], rule
    )
    meta = {
        "input": [classify.INPUT_H, classify.INPUT_W],
        "crop": [classify.CROP_H, classify.CROP_W],
        "classes": 10 * args.steps,
        "outputs": 10 * args.steps + 1,
        "temperature": round(temperature, 4),
        "calibration": calibration,
        "trained": {
            "script": "scripts/train_classifier.py",
            "seed": args.seed,
            "epochs": args.epochs,
            "synthetic_frames": args.frames,
            "real_copies": args.copies,
            "train_samples": len(data["y"]),
            "widths": list(args.widths),
            "data_sha256": data_hash(data),
            "labels_sha256": hashlib.sha256((REAL / "labels.csv").read_bytes()).hexdigest(),
            "fonts": list(TRAIN_FONTS),
            "real_data": "meterdigits train split (haverland/Tenth-of-step-of-a-meter-digit, "
            "Apache-2.0), less a tenth kept for validation",
        },
    }
    export(model, args.out, meta)
    report_validation(args.out, data, support, right)
    print(
        f"times: data {built - started:.0f} s, training {trained - built:.0f} s; "
        f"model {args.out} {args.out.stat().st_size / 1024:.0f} KiB"
    )
    return 0


@dataclass(frozen=True)
class GateRule:
    """How a digit's support is counted (`classify.support`) and where the gate goes."""

    below: float = BELOW  # share of d - 0.2 that counts for d, relative to d - 0.1
    last: float = 1.0  # share of d + 0.8 that counts for d
    risk: float = GATE_RISK  # validation drums allowed wrong at or above the gate
    # The risk holds for the photographed and the simulated drums each; pooled, the
    # six times more simulated drums place the gate all but alone.
    each: bool = False


def calibrate(
    logits: np.ndarray, positions: np.ndarray, real: np.ndarray, rule: GateRule
) -> tuple[float, dict[str, object], np.ndarray, np.ndarray]:
    """Temperature and confidence calibration from validation logits; also each
    sample's support and whether its winning digit is right (`correct`)."""
    steps = logits.shape[1] // 10
    temperature = fit_temperature(logits, soft_targets(positions, steps))
    probs = softmax(logits, temperature)
    digits = winners(probs)
    right = correct(digits, positions, real, steps)
    support = np.array(
        [
            classify.support(p, int(d), rule.below, rule.last)
            for p, d in zip(probs, digits, strict=True)
        ]
    )
    groups = [real, ~real] if rule.each else [np.ones_like(real)]
    fits = [fit_calibration(support[g], right[g], rule.risk) for g in groups if g.any()]
    calibration: dict[str, object] = {
        **max(fits, key=lambda fit: fit["raw"][2]),  # the strictest gate
        "below": rule.below,
        "last": rule.last,
        "risk": rule.risk,
        "risk_each": rule.each,
    }
    return temperature, calibration, support, right


def recalibrate(model: Path, data: dict[str, np.ndarray], rule: GateRule) -> None:
    """Refit an exported model's temperature and calibration (its sidecar JSON) on the
    validation set, e.g. for another weight of the tenth below a digit."""
    net = cv2.dnn.readNetFromONNX(str(model))
    chunks = []
    for k in range(0, len(data["vx"]), 1024):
        net.setInput(np.ascontiguousarray(data["vx"][k : k + 1024, None], dtype=np.float32))
        chunks.append(np.asarray(net.forward(), dtype=np.float64))
    temperature, calibration, support, right = calibrate(
        np.concatenate(chunks), data["vy"], data["vreal"], rule
    )
    meta_path = model.with_suffix(".json")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["temperature"] = round(temperature, 4)
    meta["calibration"] = calibration
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    report_validation(model, data, support, right)


def report_validation(
    model: Path, data: dict[str, np.ndarray], support: np.ndarray, right: np.ndarray
) -> None:
    engine = classify.ClassifierEngine(model)
    gated = np.array([calibration_gate(engine, m) for m in support])
    none = np.isnan(data["vy"])
    for name, sel in (("real", data["vreal"] & ~none), ("sim", ~data["vreal"] & ~none)):
        print(
            f"val {name} digits: n={int(sel.sum())} top1={right[sel].mean():.4f} "
            f"read@gate={(gated & right)[sel].mean():.4f} "
            f"wrong@gate={(gated & ~right)[sel].mean():.5f}"
        )
    if none.any():
        print(f"val not-a-digit cells: n={int(none.sum())} read@gate={gated[none].mean():.5f}")
    print(f"temperature={engine.info.temperature:.3f} calibration={engine.info.calibration}")


def calibration_gate(engine: classify.ClassifierEngine, mass: float) -> bool:
    return engine.info.calibration(float(mass)) >= GATE


if __name__ == "__main__":
    raise SystemExit(main())
