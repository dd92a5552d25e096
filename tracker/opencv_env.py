"""OpenCV's settings from the environment that it cannot be trusted to refuse gracefully.

OpenCV reads OPENCV_IO_MAX_IMAGE_PIXELS once, when it is imported, and a value it cannot parse aborts the whole
process there ("terminate called after throwing an instance of 'std::invalid_argument'"), which no Python code can
catch. This module imports no OpenCV, so the command line checks the value before it loads the modules that do
(tracker.launcher).
"""

from __future__ import annotations

import os
import re

# OpenCV decodes no picture over this many pixels (its OPENCV_IO_MAX_IMAGE_PIXELS guard, 2^30 unless set).
DEFAULT_MAX_DECODED_PIXELS = 1 << 30
# The values OpenCV takes for it (core/src/system.cpp, parseOption): digits, then KB or MB (2^10, 2^20) in any of
# three spellings.
_PIXEL_LIMIT = re.compile(r"([0-9]+)(KB|Kb|kb|MB|Mb|mb)?")


class OpenCVSettingError(ValueError):
    """An OpenCV setting in the environment that OpenCV would abort on."""


def max_decoded_pixels() -> int:
    """The most pixels OpenCV decodes in one picture, as OPENCV_IO_MAX_IMAGE_PIXELS sets it; OpenCVSettingError
    for a value OpenCV cannot read."""
    text = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS")
    if text is None:
        return DEFAULT_MAX_DECODED_PIXELS
    match = _PIXEL_LIMIT.fullmatch(text)
    if match is None or int(match[1]) >= 1 << 64:  # the number is read as an unsigned 64-bit integer
        raise OpenCVSettingError(
            f"OPENCV_IO_MAX_IMAGE_PIXELS is {text!r}, which OpenCV cannot read (it takes digits, optionally "
            "followed by KB or MB, as 2000000000 or 2000MB, below 2^64); correct or unset it")
    # OpenCV scales the number in 64 bits: a product past 2^64 wraps round, as it does here.
    return (int(match[1]) << (0 if match[2] is None else 10 if match[2].lower() == "kb" else 20)) % (1 << 64)
