"""The simulated odometer: reproducible frames whose digits and geometry are known."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from edgemeter import simulate
from edgemeter.simulate import Conditions, CounterStyle, Odometer, SimFrame, render

CLEAN = Conditions()


def frame(value: float, style: CounterStyle | None = None, seed: int = 0) -> SimFrame:
    return render(style or simulate.default_style(), value, CLEAN, np.random.default_rng(seed))


def cell_image(shot: SimFrame, index: int) -> np.ndarray:
    x, y, w, h = shot.cells[index]
    return shot.image[y : y + h, x : x + w]


def ink_rows(cell: np.ndarray) -> tuple[int, int]:
    """First and last row with bright (digit) pixels in a light-on-dark cell."""
    rows = np.flatnonzero((cv2.cvtColor(cell, cv2.COLOR_BGR2GRAY) > 100).any(axis=1))
    return int(rows[0]), int(rows[-1])


def luma(color: tuple[int, int, int]) -> float:
    b, g, r = color
    return 0.114 * b + 0.587 * g + 0.299 * r


# --------------------------------------------------------------------------- physics


@pytest.mark.parametrize(
    ("value", "digits", "truth", "rolling", "positions"),
    [
        (123456.0, 6, "123456", False, (1, 2, 3, 4, 5, 6)),
        (123456.7, 6, "123456", True, (1, 2, 3, 4, 5, 6.7)),
        (123.5, 3, "123", True, (1, 2, 3.5)),
        # Carry: the tens drum turns with the units only while the units go 9 -> 0.
        (129.5, 3, "129", True, (1, 2.5, 9.5)),
        (129.5, 6, "000129", True, (0, 0, 0, 1, 2.5, 9.5)),
        (199.25, 3, "199", True, (1.25, 9.25, 9.25)),
        (999999.5, 6, "999999", True, (9.5,) * 6),
        (1234567.0, 6, "234567", False, (2, 3, 4, 5, 6, 7)),  # the counter wraps
        (42.05, 4, "0042", False, (0, 0, 4, 2.05)),  # barely off rest: not visibly rolling
    ],
)
def test_truth_rolling_and_drum_positions(
    value: float, digits: int, truth: str, rolling: bool, positions: tuple[float, ...]
) -> None:
    style = dataclasses.replace(simulate.default_style(), digits=digits)
    shot = frame(value, style)
    assert shot.truth == truth
    assert shot.rolling is rolling
    assert shot.drum_positions == pytest.approx(positions)
    assert shot.value == value


def test_carry_turns_only_the_drums_whose_lower_drums_show_nine() -> None:
    style = dataclasses.replace(simulate.default_style(), digits=3)
    rolling_tens = frame(129.5, style)
    settled = frame(129.0, style)
    only_units = frame(123.5, style)
    settled_123 = frame(123.0, style)
    assert np.array_equal(cell_image(rolling_tens, 0), cell_image(settled, 0))
    assert not np.array_equal(cell_image(rolling_tens, 1), cell_image(settled, 1))
    assert np.array_equal(cell_image(only_units, 1), cell_image(settled_123, 1))
    assert not np.array_equal(cell_image(only_units, 2), cell_image(settled_123, 2))


def test_a_rising_drum_moves_its_digit_up_and_brings_the_next_from_below() -> None:
    # A tenth of a turn is 0.14 digit heights, ~7 px at 48 px digits.
    _, rest_bottom = ink_rows(cell_image(frame(120.0), 5))
    _, leaving_bottom = ink_rows(cell_image(frame(120.1), 5))  # "0" going up, "1" not in yet
    assert 4 <= rest_bottom - leaving_bottom <= 10
    next_top, _ = ink_rows(cell_image(frame(121.0), 5))
    arriving_top, _ = ink_rows(cell_image(frame(120.9), 5))  # "1" nearly in, still low
    assert 4 <= arriving_top - next_top <= 10


def test_lcd_shows_the_whole_units_and_never_rolls() -> None:
    style = dataclasses.replace(simulate.default_style(), lcd=True, font="DSEG7Classic-Bold")
    low, high = frame(4321.2, style), frame(4321.8, style)
    assert low.truth == high.truth == "004321"
    assert not low.rolling and not high.rolling
    assert np.array_equal(low.image, high.image)
    assert not np.array_equal(low.image, frame(4322.0, style).image)


# --------------------------------------------------------------------------- frames


def test_same_seed_gives_the_same_image_and_another_seed_does_not() -> None:
    def shot(seed: int) -> SimFrame:
        rng = np.random.default_rng(seed)
        style = simulate.random_style(rng, simulate.meter_fonts())
        return render(style, 123456.5, simulate.random_conditions(rng, hard=True), rng)

    first, again, other = shot(5), shot(5), shot(6)
    assert np.array_equal(first.image, again.image)
    assert first.window == again.window
    assert not np.array_equal(first.image, other.image)


def test_default_frame_is_an_800x600_bgr_image_with_a_centred_counter() -> None:
    shot = frame(12345.0)
    assert shot.image.shape == (600, 800, 3)
    assert shot.image.dtype == np.uint8
    x, y, w, h = shot.window
    assert abs(x + w / 2 - 400) <= 1 and abs(y + h / 2 - 300) <= 1
    assert len(shot.cells) == 6
    style = simulate.default_style()
    assert style.digits == 6 and style.digit_height == 48 and style.rotation == 0
    assert luma(style.fg) > luma(style.bg) + 150  # white digits on black drums


def test_default_window_is_the_window_render_reports() -> None:
    assert simulate.default_window() == frame(1.0).window
    style = dataclasses.replace(simulate.default_style(), digits=8, digit_height=30)
    assert simulate.default_window(style) == frame(1.0, style).window


def test_window_has_a_generous_margin_around_the_drums() -> None:
    shot = frame(777.0)
    x, y, w, h = shot.window
    left = min(c[0] for c in shot.cells)
    right = max(c[0] + c[2] for c in shot.cells)
    top = min(c[1] for c in shot.cells)
    bottom = max(c[1] + c[3] for c in shot.cells)
    for margin in (left - x, x + w - right, top - y, y + h - bottom):
        assert 0.15 * 48 <= margin <= 0.3 * 48


def test_window_stays_inside_the_frame_and_holds_every_cell() -> None:
    rng = np.random.default_rng(11)
    for _ in range(40):
        style = simulate.random_style(rng, simulate.meter_fonts())
        shot = render(style, 5.5, simulate.random_conditions(rng), rng)
        width, height = style.frame_size
        x, y, w, h = shot.window
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
        assert w > 0 and h > 0
        for cx, cy, cw, ch in shot.cells:
            assert x <= cx and y <= cy and cx + cw <= x + w and cy + ch <= y + h


def test_positive_rotation_leans_the_counter_counter_clockwise() -> None:
    style = dataclasses.replace(simulate.default_style(), rotation=4.0)
    shot = frame(123456.0, style)
    first, last = shot.cells[0], shot.cells[-1]
    assert last[1] < first[1]  # the right end rises, as window.rotation means it
    # The outline corners are the level window turned about the counter centre.
    tl, tr, _, _ = shot.corners
    assert math.degrees(math.atan2(tl[1] - tr[1], tr[0] - tl[0])) == pytest.approx(4.0)
    x, y, w, h = shot.window
    assert all(x - 1 <= px <= x + w + 1 and y - 1 <= py <= y + h + 1 for px, py in shot.corners)


def test_other_frame_sizes_are_honoured() -> None:
    style = dataclasses.replace(simulate.default_style(), frame_size=(640, 480), center=(320, 240))
    shot = frame(1.0, style)
    assert shot.image.shape == (480, 640, 3)
    assert simulate.default_window(style) == shot.window


@pytest.mark.parametrize(
    "conditions",
    [
        Conditions(brightness=0.4),
        Conditions(brightness=1.5),
        Conditions(gradient=0.5),
        Conditions(glare=0.8),
        Conditions(blur=1.5),
        Conditions(noise=8.0),
        Conditions(jpeg_quality=50),
        Conditions(shift=(2.0, -1.5)),
        Conditions(tint=(0.8, 0.95, 1.0)),
        Conditions(dirt=0.7),
        Conditions(motion=5.0),
        Conditions(focus_tilt=1.5),
        Conditions(focus_tilt=-1.5),
    ],
)
def test_conditions_change_the_image_but_not_the_truth(conditions: Conditions) -> None:
    clean = frame(98765.5)
    shot = render(simulate.default_style(), 98765.5, conditions, np.random.default_rng(0))
    assert shot.image.shape == clean.image.shape and shot.image.dtype == np.uint8
    assert not np.array_equal(shot.image, clean.image)
    assert (shot.truth, shot.rolling) == (clean.truth, clean.rolling)


def sharpness(shot: SimFrame, index: int) -> float:
    grey = cv2.cvtColor(cell_image(shot, index), cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


@pytest.mark.parametrize("tilt", [1.8, -1.8])
def test_uneven_focus_blurs_one_end_of_the_counter_more_than_the_other(tilt: float) -> None:
    clean = frame(123456.0)
    shot = render(
        simulate.default_style(), 123456.0, Conditions(focus_tilt=tilt), np.random.default_rng(0)
    )
    sharp_end, soft_end = (0, 5) if tilt > 0 else (5, 0)
    assert sharpness(shot, sharp_end) > 0.8 * sharpness(clean, sharp_end)
    assert sharpness(shot, soft_end) < 0.5 * sharpness(clean, soft_end)


def test_clean_default_frame_shows_one_blob_per_drum_of_digit_height() -> None:
    shot = frame(123456.0)
    x, y, w, h = shot.window
    grey = cv2.cvtColor(shot.image[y : y + h, x : x + w], cv2.COLOR_BGR2GRAY)
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    _, _, stats, _ = cv2.connectedComponentsWithStats(binary)
    blobs = [s for s in stats[1:] if s[cv2.CC_STAT_AREA] > 20]
    assert len(blobs) == 6
    for blob in blobs:
        assert 0.85 * 48 <= blob[cv2.CC_STAT_HEIGHT] <= 1.1 * 48


def test_styled_last_drums_get_their_own_colours() -> None:
    red = (40, 36, 185)
    style = dataclasses.replace(
        simulate.default_style(), decimal_drums=2, last_fg=(238, 238, 238), last_bg=red
    )
    shot = frame(123456.0, style)
    for index in range(6):
        b, _, r = cell_image(shot, index).reshape(-1, 3).mean(axis=0)
        assert bool(r > b + 40) is (index >= 4)


# --------------------------------------------------------------------------- fonts


def test_fonts_resolve_to_files_and_unknown_names_to_none() -> None:
    fonts = simulate.available_fonts()
    assert fonts == sorted(fonts)
    for name in fonts[:5]:
        path = simulate.resolve_font(name)
        assert path is not None and path.lower().endswith((".ttf", ".otf"))
    assert simulate.resolve_font("NoSuchFont-Bold") is None
    assert simulate.resolve_font("hershey") is None
    assert simulate.meter_fonts()[-1] == "hershey"


def test_missing_font_falls_back_without_error() -> None:
    style = dataclasses.replace(simulate.default_style(), font="NoSuchFont-Bold")
    shot = frame(246810.0, style)
    assert shot.truth == "246810"
    assert shot.image.std() > 10


@pytest.fixture
def no_fonts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(simulate, "_font_index", functools.cache(dict))
    simulate.clear_caches()
    yield
    simulate.clear_caches()  # drop glyphs drawn without fonts before the index returns


@pytest.mark.usefixtures("no_fonts")
@pytest.mark.parametrize("lcd", [False, True])
def test_a_machine_without_any_font_still_draws_digits(lcd: bool) -> None:
    assert simulate.available_fonts() == []
    style = dataclasses.replace(simulate.default_style(), lcd=lcd)
    shot = frame(123456.0, style)
    x, y, w, h = shot.window
    grey = cv2.cvtColor(shot.image[y : y + h, x : x + w], cv2.COLOR_BGR2GRAY)
    assert (grey > 150).sum() > 6 * 100  # six digits' worth of bright ink


# --------------------------------------------------------------------------- variety


def test_random_styles_cover_both_polarities_and_stay_within_the_pose_limits() -> None:
    rng = np.random.default_rng(2024)
    fonts = [*simulate.meter_fonts(), "DSEG7Classic-Bold"]
    styles = [simulate.random_style(rng, fonts) for _ in range(80)]
    light_on_dark = [luma(s.fg) > luma(s.bg) for s in styles]
    assert any(light_on_dark) and not all(light_on_dark)
    assert all(-4.0 <= s.rotation <= 4.0 for s in styles)
    assert min(s.rotation for s in styles) < -2 and max(s.rotation for s in styles) > 2
    assert all(25 <= s.digit_height <= 70 for s in styles)
    assert all(abs(luma(s.fg) - luma(s.bg)) > 60 for s in styles)
    assert any(s.lcd for s in styles) and not all(s.lcd for s in styles)
    assert all(s.font in fonts for s in styles)
    assert len({s.center for s in styles}) > 40


def test_random_styles_only_use_the_fonts_given() -> None:
    rng = np.random.default_rng(3)
    styles = [simulate.random_style(rng, ["LiberationMono-Bold"]) for _ in range(10)]
    assert {s.font for s in styles} == {"LiberationMono-Bold"}
    assert not any(s.lcd for s in styles)


def test_random_conditions_stay_in_their_ranges() -> None:
    rng = np.random.default_rng(8)
    hard = [simulate.random_conditions(rng, hard=True) for _ in range(300)]
    for c in hard:
        assert 0.3 <= c.brightness <= 1.6
        assert 0 <= c.gradient <= 0.6 and 0 <= c.glare <= 1 and 0 <= c.dirt <= 1
        assert 0 <= c.blur <= 2.5 and 0 <= c.noise <= 12
        assert c.jpeg_quality is None or 45 <= c.jpeg_quality <= 90
        assert all(abs(v) <= 2.5 for v in c.shift)
    assert any(c.glare > 0 for c in hard) and any(c.tint is not None for c in hard)
    assert any(c.dirt > 0 for c in hard) and any(c.brightness < 0.5 for c in hard)
    mild = [simulate.random_conditions(rng, hard=False) for _ in range(100)]
    assert all(c.glare == 0 and c.dirt == 0 and c.tint is None for c in mild)
    assert all(0.8 <= c.brightness <= 1.2 and c.noise <= 4 for c in mild)


def test_fit_in_frame_shrinks_a_counter_too_big_and_keeps_it_inside() -> None:
    rng = np.random.default_rng(4)
    big = dataclasses.replace(simulate.default_style(), digits=9, digit_height=90, rotation=3.5)
    for _ in range(10):
        style = simulate.fit_in_frame(big, rng)
        assert 20 <= style.digit_height < 90
        shot = frame(5.0, style)
        x, y, w, h = shot.window
        # Clipping would have cut the window short: it fits whole, with room to spare.
        assert x > 0 and y > 0 and x + w < 800 and y + h < 600
        assert abs(style.center[0] - 400) <= 90 and abs(style.center[1] - 300) <= 70


def test_a_hand_drawn_window_holds_the_counter_with_uneven_margins() -> None:
    rng = np.random.default_rng(9)
    for rotation in (0.0, 4.0, -4.0):
        style = dataclasses.replace(simulate.default_style(), rotation=rotation)
        shot = frame(123456.0, style)
        box = simulate.hand_drawn_window(style, rng, margin=(0.2, 0.8))
        x, y, w, h = box
        rx, ry, rw, rh = shot.window
        margins = (rx - x, ry - y, x + w - (rx + rw), y + h - (ry + rh))
        assert all(0.2 * 48 - 1 <= m <= 0.8 * 48 + 1 for m in margins)
        assert len({round(m) for m in margins}) > 1
        assert x >= 0 and y >= 0 and x + w <= 800 and y + h <= 600


def test_a_hand_drawn_window_is_clipped_to_the_frame() -> None:
    style = dataclasses.replace(simulate.default_style(), center=(120.0, 60.0))
    x, y, w, h = simulate.hand_drawn_window(style, np.random.default_rng(1), margin=(1.0, 2.0))
    assert (x, y) == (0, 0) and w > 0 and h > 0


# --------------------------------------------------------------------------- streams


def test_odometer_rises_and_rolls_about_the_requested_share_of_frames() -> None:
    odometer = Odometer(12345.0, 0.3, np.random.default_rng(1), roll_fraction=0.25)
    values = [odometer.next_value() for _ in range(3000)]
    assert values[0] == 12345.0
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert (values[-1] - values[0]) / (len(values) - 1) == pytest.approx(0.3, rel=0.1)
    fractions = np.array([v - math.floor(v) for v in values])
    rolling = (fractions >= 0.15) & (fractions <= 0.85)
    settled = fractions < 0.08
    assert np.all(rolling | settled)
    assert rolling.mean() == pytest.approx(0.25, abs=0.05)


def test_odometer_is_reproducible_and_can_be_told_not_to_roll() -> None:
    def run(seed: int, roll: float) -> list[float]:
        odometer = Odometer(5.0, 0.7, np.random.default_rng(seed), roll_fraction=roll)
        return [odometer.next_value() for _ in range(200)]

    assert run(4, 0.25) == run(4, 0.25)
    assert run(4, 0.25) != run(5, 0.25)
    assert not any(frame(v).rolling for v in run(4, 0.0)[:50])


def test_odometer_that_does_not_move_repeats_its_value() -> None:
    odometer = Odometer(99.0, 0.0, np.random.default_rng(0))
    assert {odometer.next_value() for _ in range(5)} == {99.0}
