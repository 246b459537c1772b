"""The hard set: simulated installations, each a fixed counter and camera, and its stream.

An installation is what one user mounts once: a counter style (typeface, drum colours,
polarity, a styled last drum, LCD or drums, digit size), a camera pose (where the
counter sits, up to 4 degrees of roll, a lens that may be out of square), a window
drawn generously around the counter by hand, and maybe a tinted or dirty window
glass. Its stream is what the camera then sees, cycle after cycle: a rising counter
whose last drum is caught mid-roll in about a quarter of the cycles, each cycle a
burst of frames under independent conditions (exposure from dim to bright, uneven
light, glare, blur, noise, JPEG 45-90, a vibration shift of a couple of pixels).

The typefaces are from `simulate.HELD_OUT_FONTS` only: nothing in the reader was
tuned or trained on them. Every installation has a "seen" twin, identical but for a
typeface of the same kind from `simulate.TUNE_FONTS`, so that the gap between the two
shows how well the reader generalises. Everything comes from fixed seeds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from edgemeter import simulate
from edgemeter.simulate import BGR, Box, Conditions, CounterStyle, SimFrame

WHITE, BLACK, RED = simulate.WHITE, simulate.BLACK, simulate.RED
CREAM, BLUE_GREY = (200, 228, 240), (62, 40, 30)
LCD_GREEN, LCD_INK = (150, 168, 158), (38, 42, 36)
BACKLIT, BACKLIT_INK = (40, 22, 10), (230, 220, 120)

# Seconds between cycles (the daemon's default camera.interval_s) and between the
# frames of one burst.
CYCLE_S = 5.0
BURST_GAP_S = 0.2
# The counter advances by this much per cycle on average (gamma steps): each value is
# on show for about two to three cycles, as on a slowly turning meter read every 5 s.
STEP_PER_CYCLE = 0.4
ROLL_FRACTION = 0.25
START_TIME = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Installation:
    """One simulated installation: counter look and camera, fixed for its stream."""

    name: str
    font: str  # from HELD_OUT_FONTS
    seen_font: str  # the same kind of typeface from TUNE_FONTS
    digits: int
    height: int  # digit height in px in the 800x600 frame
    fg: BGR
    bg: BGR
    rotation: float
    start: float  # counter value at the first cycle
    last: tuple[BGR, BGR] | None = None  # (fg, bg) of the styled last drum(s)
    styled_drums: int = 1  # how many of the last drums are styled
    lcd: bool = False
    face: str | None = None  # None: as random_style chose
    tint: tuple[float, float, float] | None = None  # the window glass, every frame
    dirt: float = 0.0  # the window glass, every frame (spots move: a wet, smeared glass)
    focus_tilt: float = 0.0  # uneven focus across the counter, px sigma at the far end
    seed: int = 0

    def look(self) -> str:
        """A short description for the tables."""
        polarity = "light on dark" if _luma(self.fg) > _luma(self.bg) else "dark on light"
        kind = "LCD" if self.lcd else "drums"
        parts = [f"{kind} {polarity}", f"{self.digits}x{self.height}px", f"{self.rotation:+g}°"]
        if self.last is not None:
            parts.append(f"styled last {self.styled_drums}")
        if self.tint is not None or self.dirt > 0:
            parts.append("dirty/tinted glass")
        if self.focus_tilt:
            parts.append("uneven focus")
        return ", ".join(parts)


def _luma(color: BGR) -> float:
    b, g, r = color
    return 0.114 * b + 0.587 * g + 0.299 * r


INSTALLATIONS: tuple[Installation, ...] = (
    Installation(
        "car odometer", "RobotoCondensed-Bold", "DejaVuSansCondensed-Bold", 6, 40, WHITE, BLACK,
        2.5, 48213.0, last=(WHITE, RED), face="dial", seed=101,
    ),
    Installation(
        "water meter", "NotoSans-Bold", "DejaVuSans-Bold", 8, 30, BLACK, WHITE, -3.5, 1234.0,
        last=(WHITE, RED), styled_drums=3, face="plate", seed=102,
    ),
    Installation(
        "gas meter", "LiberationSerif-Bold", "DejaVuSerif-Bold", 8, 25, WHITE, BLACK, 1.0,
        583900.0, last=(WHITE, RED), styled_drums=3, focus_tilt=1.4, seed=103,
    ),
    Installation(
        "white on red", "Roboto-Bold", "DejaVuSans-Bold", 6, 55, WHITE, RED, -1.5, 7719.0,
        seed=104,
    ),
    Installation(
        "LCD backlit", "DSEG7Modern-Bold", "DSEG7Classic-Bold", 6, 45, BACKLIT_INK, BACKLIT, 3.0,
        40512.0, lcd=True, seed=105,
    ),
    Installation(
        "LCD reflective", "DSEG7Classic-Regular", "DSEG7Classic-Bold", 8, 35, LCD_INK, LCD_GREEN,
        -4.0, 2281.0, lcd=True, seed=106,
    ),
    Installation(
        "small digits", "NotoSans-Regular", "LiberationSans-Regular", 7, 20, WHITE, BLACK, 0.5,
        90417.0, seed=107,
    ),
    Installation(
        "large digits", "LiberationSansNarrow-Bold", "DejaVuSansCondensed-Bold", 5, 70, BLACK,
        WHITE, 4.0, 3998.0, seed=108,
    ),
    Installation(
        "stroke font", "hershey", "LiberationMono-Bold", 6, 32, WHITE, BLUE_GREY, -2.0, 15550.0,
        focus_tilt=-1.2, seed=109,
    ),
    Installation(
        "dirty cream", "NotoSerif-Bold", "DejaVuSerif-Bold", 6, 38, BLACK, CREAM, 2.0, 31008.0,
        tint=(0.78, 0.9, 1.0), dirt=0.6, seed=110,
    ),
    Installation(
        "wrapping", "Roboto-Medium", "LiberationSans-Bold", 6, 28, WHITE, BLACK, -0.8, 999997.0,
        seed=111,
    ),
    Installation(
        "carry", "RobotoCondensed-Bold", "DejaVuSansCondensed-Bold", 7, 48, BLACK, WHITE, 1.5,
        1299998.0, last=(RED, WHITE), seed=112,
    ),
)  # fmt: skip


def check_fonts() -> None:
    """The split this set stands on: held-out typefaces only, twins from the tuning set."""
    for installation in INSTALLATIONS:
        if installation.font not in simulate.HELD_OUT_FONTS:
            raise ValueError(f"{installation.name}: {installation.font} is not held out")
        if installation.seen_font not in simulate.TUNE_FONTS:
            raise ValueError(f"{installation.name}: {installation.seen_font} is not a tune font")


def style_of(installation: Installation, seen: bool) -> CounterStyle:
    """The counter and camera pose; the seen twin differs only in its typeface."""
    rng = np.random.default_rng(installation.seed)
    # random_style picks the meter around the counter (face, bezel, labels, drum
    # proportions); the installation then fixes what the set must cover.
    base = simulate.random_style(rng, [installation.font])
    style = dataclasses.replace(
        base,
        font=installation.seen_font if seen else installation.font,
        lcd=installation.lcd,
        digits=installation.digits,
        digit_height=installation.height,
        fg=installation.fg,
        bg=installation.bg,
        last_fg=installation.last[0] if installation.last else None,
        last_bg=installation.last[1] if installation.last else None,
        decimal_drums=installation.styled_drums if installation.last else 0,
        rotation=installation.rotation,
        face=installation.face or base.face,
    )
    return simulate.fit_in_frame(style, rng)


def window_of(installation: Installation, style: CounterStyle) -> Box:
    """The window the user drew once, on a still frame, around the whole counter."""
    rng = np.random.default_rng(installation.seed + 7)
    return simulate.hand_drawn_window(style, rng)


@dataclass(frozen=True)
class Shot:
    """One frame of a stream, with what the counter showed."""

    image: np.ndarray
    ts: datetime
    truth: str
    rolling: bool
    cells: tuple[Box, ...] = ()  # each drum's box in frame pixels (for benchmarks/cells.py)


@dataclass(frozen=True)
class CycleShots:
    """The burst of one cycle: the counter holds one value while it is taken."""

    index: int
    value: float
    truth: str
    shots: tuple[Shot, ...]


# Imaging conditions a diagnostic may take away from every frame (`easier`), to
# measure what each costs: the condition fields each name clears.
EASIER: dict[str, dict[str, object]] = {
    "glare": {"glare": 0.0},
    "blur": {"blur": 0.0, "motion": 0.0, "focus_tilt": 0.0},
    "noise": {"noise": 0.0},
    "jpeg": {"jpeg_quality": None},
    "dirt": {"dirt": 0.0, "tint": None},
}


def easier(conditions: Conditions, without: tuple[str, ...]) -> Conditions:
    """`conditions` with the named ones taken away ("dim": exposure at least 0.8)."""
    for name in without:
        if name == "dim":
            conditions = dataclasses.replace(conditions, brightness=max(conditions.brightness, 0.8))
        else:
            conditions = dataclasses.replace(conditions, **EASIER[name])  # type: ignore[arg-type]
    return conditions


@dataclass(frozen=True)
class Stream:
    installation: Installation
    seen: bool
    style: CounterStyle
    window: Box
    cycles: int
    burst: int
    without: tuple[str, ...] = ()  # conditions taken away (`easier`): diagnostics only

    @property
    def label(self) -> str:
        return self.installation.name

    def values(self) -> list[float]:
        """The counter's value at each cycle: rising, the last drum sometimes mid-roll."""
        rng = np.random.default_rng(self.installation.seed + 1)
        odometer = simulate.Odometer(
            self.installation.start, STEP_PER_CYCLE, rng, roll_fraction=ROLL_FRACTION
        )
        return [odometer.next_value() for _ in range(self.cycles)]

    def conditions(self, rng: np.random.Generator) -> Conditions:
        """One frame's conditions; the glass and the lens stay as installed."""
        drawn = simulate.random_conditions(rng, hard=True)
        glass: dict[str, object] = {"focus_tilt": self.installation.focus_tilt}
        if self.installation.tint is not None:
            glass["tint"] = self.installation.tint
        if self.installation.dirt > 0:
            glass["dirt"] = self.installation.dirt
        return easier(dataclasses.replace(drawn, **glass), self.without)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[CycleShots]:
        # The same frames for both twins: the seed does not depend on the typeface.
        rng = np.random.default_rng(self.installation.seed + 2)
        for index, value in enumerate(self.values()):
            start = START_TIME + timedelta(seconds=CYCLE_S * index)
            shots = self.shots(value, self.burst, start, rng)
            yield CycleShots(index, value, shots[-1].truth, tuple(shots))

    def more_shots(self, cycle: CycleShots, count: int) -> list[Shot]:
        """A second burst of `cycle` (the daemon asks for one when the first is short of
        a majority): the counter still at the cycle's value. Drawn from a generator of
        the cycle's own, so that asking leaves every other frame of the set unchanged."""
        rng = np.random.default_rng((self.installation.seed, cycle.index, 1))
        start = cycle.shots[-1].ts + timedelta(seconds=BURST_GAP_S)
        return self.shots(cycle.value, count, start, rng)

    def shots(
        self, value: float, count: int, start: datetime, rng: np.random.Generator
    ) -> list[Shot]:
        """`count` frames of the counter at `value`, BURST_GAP_S apart from `start`."""
        shots = []
        for k in range(count):
            frame: SimFrame = simulate.render(self.style, value, self.conditions(rng), rng)
            ts = start + timedelta(seconds=BURST_GAP_S * k)
            shots.append(Shot(frame.image, ts, frame.truth, frame.rolling, frame.cells))
        return shots


def streams(
    seen: bool,
    cycles: int,
    burst: int,
    installations: int | None = None,
    without: tuple[str, ...] = (),
) -> list[Stream]:
    """The hard set (seen=False) or its seen-styles twin, as streams of cycles
    (`without`: conditions taken away, see `easier`)."""
    check_fonts()
    chosen = INSTALLATIONS[: installations or None]
    out = []
    for installation in chosen:
        style = style_of(installation, seen)
        # The window is drawn on the held-out installation; its twin keeps it (same pose).
        window = window_of(installation, style_of(installation, seen=False))
        out.append(Stream(installation, seen, style, window, cycles, burst, without))
    return out
