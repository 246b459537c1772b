"""Row finding internals that must agree with numpy to the last bit: the row a window
gets depends on tie-breaks between equally good lines, and a faster sum or median that
rounds otherwise would move drums."""

from __future__ import annotations

import cv2
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from edgemeter.ocr import _blobs, _median, _pairwise_sum, contrast, grey_percentiles


@given(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=300))
def test_pairwise_sum_adds_up_as_numpy_does(values: list[float]) -> None:
    # The row's line breaks ties on this sum: it must fall as numpy's did.
    assert _pairwise_sum(values) == float(np.add.reduce(np.array(values)))


@given(st.lists(st.one_of(st.integers(0, 500), st.floats(-1e3, 1e3)), min_size=1, max_size=15))
def test_median_is_numpys(values: list[float]) -> None:
    assert _median(values) == float(np.median(values))


def test_a_mask_with_the_most_components_it_can_hold_keeps_its_digit_whole() -> None:
    # A dot in every 2x2 block: the most components a mask can have, within 16-bit
    # labels at 510x510 and far beyond them at 600x800; and a digit-sized blob among
    # them, labelled late, where an overflowing label would spoil it.
    for shape in ((510, 510), (600, 800)):
        mask = np.zeros(shape, np.uint8)
        mask[::2, ::2] = 255
        mask[440:500, 460:490] = 255
        _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        _, sized = _blobs(mask, 8.0)
        assert [(b.x, b.y, b.w, b.h, b.area) for b in sized] == [
            tuple(stats[labels[470, 475]].tolist())
        ]


@given(
    st.integers(1, 60),
    st.integers(1, 60),
    st.integers(0, 2**32 - 1),
)
def test_contrast_is_numpys_percentile_spread(h: int, w: int, seed: int) -> None:
    grey = np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)
    lo, hi = np.percentile(grey, (2, 98))

    assert contrast(grey) == float(hi - lo)


@given(
    st.integers(1, 60),
    st.integers(1, 60),
    st.integers(0, 2**32 - 1),
    st.lists(st.floats(0, 100), min_size=1, max_size=4),
    st.integers(1, 255),
)
def test_grey_percentiles_are_numpys_to_the_last_bit(
    h: int, w: int, seed: int, qs: list[float], levels: int
) -> None:
    # Few grey levels too: many pixels on one level is where interpolation has ties.
    grey = np.random.default_rng(seed).integers(0, levels + 1, (h, w), dtype=np.uint8)

    assert grey_percentiles(grey, tuple(qs)) == tuple(float(v) for v in np.percentile(grey, qs))
