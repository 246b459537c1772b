"""edgemeter: read a mechanical counter with a camera and publish it over MQTT."""

from __future__ import annotations

import os

__version__ = "0.1.0"

# Must be set before OpenCV first decodes an image: a small file claiming gigapixels is
# refused by the decoder instead of taking a Pi's memory. Matches source.MAX_IMAGE_PIXELS.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "50000000")
# Tesseract's OpenMP threads fight each other on a 4-core Pi running one OCR at a time.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")
