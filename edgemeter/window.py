"""Digit window stage: cut the configured counter window out of a full frame.

The window is an axis-aligned box in frame pixels, optionally turned by `rotation`
degrees about its centre (a camera mounted slightly askew) or given as four corners
for a perspective-rectified view (a camera looking at the counter from the side).
It does not look for the counter: it trusts the config, and says clearly when the
config asks for pixels the frame does not have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edgemeter.config import WindowConfig


class WindowError(Exception):
    """The window does not fit the frame; the message says how to fix the config."""


@dataclass(frozen=True)
class DigitWindow:
    x: int
    y: int
    width: int
    height: int
    rotation: float = 0.0
    corners: tuple[tuple[float, float], ...] | None = None

    @classmethod
    def from_config(cls, window: WindowConfig) -> DigitWindow:
        return cls(window.x, window.y, window.width, window.height, window.rotation, window.corners)

    def outline(self) -> np.ndarray:
        """The window's four corners in frame pixels (TL, TR, BR, BL), float32 4x2."""
        if self.corners is not None:
            return np.array(self.corners, dtype=np.float32)
        cx, cy = self.x + self.width / 2, self.y + self.height / 2
        half = np.array(
            [
                [-self.width / 2, -self.height / 2],
                [self.width / 2, -self.height / 2],
                [self.width / 2, self.height / 2],
                [-self.width / 2, self.height / 2],
            ]
        )
        # Positive rotation means the counter leans counter-clockwise in the image
        # (y grows downwards, hence the sign of the sine terms).
        a = math.radians(self.rotation)
        turn = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        corners: np.ndarray = (half @ turn.T + [cx, cy]).astype(np.float32)
        return corners

    def output_size(self) -> tuple[int, int]:
        """Width and height of the levelled crop."""
        if self.corners is None:
            return self.width, self.height
        tl, tr, br, bl = self.outline()
        width = (np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2
        height = (np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
        return max(1, round(float(width))), max(1, round(float(height)))


def check_fits(window: DigitWindow, frame_width: int, frame_height: int) -> None:
    """Raise WindowError unless every corner of the window lies inside the frame."""
    outline = window.outline()
    # Half a pixel of slack: a rotated box computed in floats may graze the edge.
    lo = outline.min(axis=0)
    hi = outline.max(axis=0)
    if (
        lo[0] >= -0.5
        and lo[1] >= -0.5
        and hi[0] <= frame_width + 0.5
        and hi[1] <= frame_height + 0.5
    ):
        return
    if hi[0] <= 0 or hi[1] <= 0 or lo[0] >= frame_width or lo[1] >= frame_height:
        extent = "lies wholly outside"
    else:
        extent = "reaches outside"
    corners = f" corners={[list(map(round, c)) for c in window.corners]}" if window.corners else ""
    raise WindowError(
        f"window (x={window.x} y={window.y} width={window.width} height={window.height}"
        f"{f' rotation={window.rotation:g}' if window.rotation else ''}"
        f"{corners})"
        f" {extent} the {frame_width}x{frame_height} frame"
        f" (spans x {lo[0]:.0f}..{hi[0]:.0f}, y {lo[1]:.0f}..{hi[1]:.0f}):"
        " adjust window.* in the config; `edgemeter snapshot` shows the frame with the window"
    )


def crop(image: np.ndarray, window: DigitWindow) -> np.ndarray:
    """The window's pixels, levelled: a plain slice when the window is not turned."""
    height, width = image.shape[:2]
    check_fits(window, width, height)
    if window.corners is None and window.rotation == 0:
        plain: np.ndarray = image[
            window.y : window.y + window.height, window.x : window.x + window.width
        ].copy()
        return plain
    out_w, out_h = window.output_size()
    target = np.array([[0, 0], [out_w, 0], [out_w, out_h], [0, out_h]], dtype=np.float32)
    transform = cv2.getPerspectiveTransform(window.outline(), target)
    levelled: np.ndarray = cv2.warpPerspective(
        image, transform, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return levelled
