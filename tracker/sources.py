"""Every way frames enter the tracker: webcams, stream URLs, video files, image folders, single images.

``open_source(spec)`` decides the kind from ``spec`` and returns a :class:`FrameSource`; iterating it
yields :class:`Frame` objects whose ``image`` is always a C-contiguous HxWx3 uint8 BGR array, whatever the
input was (grayscale, 16-bit, alpha, float). Errors the user can fix (missing file, busy camera, corrupt
video) raise :class:`SourceError` with a one-line message; skipped junk is logged and listed in
``FrameSource.skipped``.

Live sources (cameras, URLs, or a file opened with ``live=True``) are read on a daemon thread that keeps
only the newest frame, so a slow consumer sees fresh frames (and ``dropped`` counts the stale ones)
instead of an ever-growing backlog. Files are otherwise read synchronously and every frame is delivered.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, BinaryIO

import cv2
import numpy as np

from tracker.opencv_env import max_decoded_pixels
from tracker.types import is_utf8_path, readable_path

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs 3.11; the project supports 3.10

__all__ = ["Frame", "FrameSource", "SourceError", "open_source"]

log = logging.getLogger("tracker.sources")

# What OpenCV's image decoders read (JPEG under all its names, JPEG 2000, the Netpbm and Sun raster kinds,
# Radiance and PFM, Windows bitmaps). An animated GIF is read as a video, by FFmpeg.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp",
                              ".jp2", ".pbm", ".pgm", ".ppm", ".pnm", ".ras", ".sr", ".hdr", ".pic", ".pfm"})
# Photos this OpenCV has no decoder for (phones save them): named as such instead of "not a video".
UNREADABLE_IMAGE_EXTENSIONS = frozenset({".avif", ".heic", ".heif"})
UNREADABLE_IMAGE_REASON = "AVIF and HEIC images cannot be decoded here; convert them to JPEG or PNG"
# Sound files: when FFmpeg finds no picture in one, it is named as sound rather than "not a video or corrupt".
AUDIO_EXTENSIONS = frozenset({".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".oga", ".opus", ".wma", ".aif",
                              ".aiff", ".amr", ".mka", ".mid", ".midi"})

# Live sources: a source that has delivered nothing for this long is considered gone.
_STALL_S = 1.0
# An image folder names this many unreadable images (and files that are not images) one by one; more are
# counted instead.
_UNREADABLE_LISTED = 5
# Used when a file does not say its frame rate (pacing with live=True, time_s fallback, image folders).
_DEFAULT_FPS = 30.0
# Two frames' timestamps closer than this (5000 fps) are not a real step between them (see _media_time).
_MIN_STEP_S = 0.0002
# Failed reads of a local file in a row before it counts as ended: damaged data fails a few, then frames
# decode again (a zeroed 4 KiB block in an H.264 file: 3 reads).
_FILE_READ_RETRIES = 30
_INDEXED_CONTAINERS = (".mp4", ".m4v", ".mov", ".3gp")  # their frame count is the index's, not an estimate
_DAMAGE_LISTED = 3  # places of damaged data in a file named one by one; beyond, only counted
# Stream URLs: without these an unreachable host can block open/read for FFmpeg's own (long) timeouts.
_URL_OPEN_TIMEOUT_MS = 10_000
_URL_READ_TIMEOUT_MS = 5_000
# close() waits this long for a reader thread; a camera read can block inside the driver.
_JOIN_TIMEOUT_S = 3.0

# OpenCV's log levels (the Python bindings expose setLogLevel but not the constants).
_CV_LOG_FATAL, _CV_LOG_ERROR = 1, 2

# Silence OpenCV's stderr chatter ("[ WARN:0@0.01] ... can't open camera by index", FFmpeg's
# "[mjpeg @ 0x...] overread 8", "moov atom not found"): we report every such case ourselves, in one
# line. A user who sets these variables (to debug a device or codec) keeps their own choice.
#  - OPENCV_FFMPEG_LOGLEVEL is read when the FFmpeg backend is first used, so setting it here, after
#    `import cv2` but before any VideoCapture, works (checked with opencv 4.11); -8 is AV_LOG_QUIET.
#  - cv2.utils.logging does not exist in the 4.11 wheels; cv2.setLogLevel does.
_USER_CV_LOG_LEVEL = "OPENCV_LOG_LEVEL" in os.environ
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
if not _USER_CV_LOG_LEVEL:
    cv2.setLogLevel(_CV_LOG_ERROR)


@contextmanager
def opencv_quieter() -> Iterator[None]:
    """OpenCV's log at FATAL for the duration of the block, unless the user set OPENCV_LOG_LEVEL."""
    # Probing a missing camera also prints an ERROR-level line from the Orbbec backend
    # ("obsensor ... Camera index out of range"), decoding a truncated image logs ERRORs, and an encoder that
    # refuses a frame size two more, so these calls run at FATAL: each failure is reported by us in one line
    # instead. The level is process-wide; the window is only the duration of the call.
    old = cv2.getLogLevel()
    if not _USER_CV_LOG_LEVEL and old > _CV_LOG_FATAL:
        cv2.setLogLevel(_CV_LOG_FATAL)
    try:
        yield
    finally:
        cv2.setLogLevel(old)


@dataclass
class Frame:
    """One frame from a source."""

    image: np.ndarray  # HxWx3 uint8 BGR, C-contiguous, always
    index: int  # 0-based; for live sources gaps mean dropped frames; for folders the n-th image delivered
    time_s: float  # media time for files/images; seconds since the source opened for cameras/URLs
    source: str  # image path for image files/folders; else the spec (path, camera index, URL)
    grabbed_at: float  # time.perf_counter() when the frame was read (for latency measurement)


class SourceError(Exception):
    """A source cannot be opened or read; the message is one human-readable line."""


class FrameSource:
    """Base of all sources. Iterate once for frames; close() (or use as a context manager) when done.

    Attributes:
        name: human-readable description, e.g. ``camera 0`` or ``video 'clip.mp4'``.
        is_live: frames are produced in real time and may be dropped (cameras, URLs, ``live=True``).
        fps: frame rate if known, else None.
        total_frames: number of frames if known, else None (live sources). For image folders it is the
            number of files with an image extension, an upper bound since undecodable ones are skipped.
        still_images: frames are independent still images (image folder or single image), not video.
        skipped: human-readable notes about skipped inputs (junk files in a folder, ...).
        error: why a live source stopped early (device gone, stream ended), else None.
        dropped: frames a live source read but replaced by a newer one before the consumer took them.
    """

    def __init__(self, name: str, *, is_live: bool, fps: float | None, total_frames: int | None,
                 still_images: bool = False) -> None:
        self.name = name
        self.is_live = is_live
        self.fps = fps
        self.total_frames = total_frames
        self.still_images = still_images
        self.skipped: list[str] = []
        self.error: str | None = None
        self.dropped = 0
        self._closed = False

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device/file and stop any reader thread. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def _release(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


# ---------------------------------------------------------------------------------------------------
# Image normalisation


def to_bgr8(img: np.ndarray) -> np.ndarray:
    """Any decoded image -> C-contiguous HxWx3 uint8 BGR (the one format the rest of the tracker sees).

    Raises ValueError for layouts that are not an image (e.g. 5 channels)."""
    if img.dtype.kind in "ui" and not img.dtype.isnative:  # big-endian samples (a '>u2' array) as native ones
        img = img.astype(img.dtype.newbyteorder("="))
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            # Keep the top 8 bits: maps 0..65535 onto 0..255 exactly at both ends, costs one shift, and
            # rounds down by < 1 grey level, invisible to the detector. The same shift for every frame, so a
            # sequence never changes brightness; an image file of 10 or 12 bits in 16 is scaled to its own
            # depth when it is read (_read_image).
            img = (img >> 8).astype(np.uint8)
        elif np.issubdtype(img.dtype, np.floating):
            # Float images (e.g. 32-bit TIFF) conventionally hold 0..1; NaN becomes black.
            img = (np.nan_to_num(np.clip(img, 0.0, 1.0), nan=0.0) * 255.0 + 0.5).astype(np.uint8)
        elif img.dtype == np.bool_:
            img = img.astype(np.uint8) * 255
        elif np.issubdtype(img.dtype, np.integer):
            # Other integer depths (int8/int16/int32 TIFF) have no agreed range; clip instead of wrap.
            img = np.clip(img, 0, 255).astype(np.uint8)
        else:
            raise ValueError(f"unsupported pixel type {img.dtype}")
    if img.ndim == 3 and img.shape[2] in (1, 2):
        img = img[:, :, 0]  # grey (+ alpha): the alpha channel carries no picture
    if img.ndim in (2, 3) and (img.shape[0] == 0 or img.shape[1] == 0):
        raise ValueError("empty image")  # before OpenCV's conversions, which would assert on it
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        # Alpha is dropped, not composited: transparent pixels keep their stored colour, which for
        # photos with an alpha channel is the picture itself.
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif not (img.ndim == 3 and img.shape[2] == 3):
        raise ValueError(f"unsupported image shape {img.shape}")
    return np.ascontiguousarray(img)


# Decoding flags: ANYDEPTH keeps 16-bit/float so to_bgr8 scales it properly (plain IMREAD_COLOR would
# truncate), ANYCOLOR keeps grey as grey and lets the decoder drop alpha. Unlike IMREAD_UNCHANGED this
# combination also applies the EXIF orientation, so phone photos are upright (IMREAD_UNCHANGED ignores it
# and faces would arrive sideways).
_IMREAD_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


# EXIF orientation (1-8) as the turns that make the picture upright: (rotate code or None, then flip code or None).
_ORIENTATION_FIX = {
    2: (None, 1), 3: (cv2.ROTATE_180, None), 4: (None, 0), 5: (cv2.ROTATE_90_CLOCKWISE, 1),
    6: (cv2.ROTATE_90_CLOCKWISE, None), 7: (cv2.ROTATE_90_COUNTERCLOCKWISE, 1), 8: (cv2.ROTATE_90_COUNTERCLOCKWISE, None),
}


def webp_orientation(data: bytes | memoryview) -> int:
    """The EXIF orientation a WebP file's EXIF chunk holds (1, upright, when it has none). OpenCV turns JPEG,
    PNG and TIFF upright by their EXIF, but not WebP. Only the chunk headers are read on the way (the EXIF
    chunk comes after the picture's)."""
    data = memoryview(data)
    if len(data) < 12 or bytes(data[:4]) != b"RIFF" or bytes(data[8:12]) != b"WEBP":
        return 1
    at = 12
    while at + 8 <= len(data):
        fourcc, size = bytes(data[at:at + 4]), int.from_bytes(data[at + 4:at + 8], "little")
        if fourcc == b"EXIF":
            exif = bytes(data[at + 8:at + 8 + size])
            exif = exif[6:] if exif.startswith(b"Exif\0\0") else exif
            order = {b"II": "little", b"MM": "big"}.get(exif[:2])
            if order is None or len(exif) < 8:
                return 1
            ifd = int.from_bytes(exif[4:8], order)
            count = int.from_bytes(exif[ifd:ifd + 2], order) if ifd + 2 <= len(exif) else 0
            for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(exif) - 11), 12):
                if int.from_bytes(exif[entry:entry + 2], order) == 0x0112:  # Orientation, a SHORT
                    value = int.from_bytes(exif[entry + 8:entry + 10], order)
                    return value if 1 <= value <= 8 else 1
            return 1
        at += 8 + size + (size & 1)
    return 1


# OpenCV decodes no picture over this many pixels, and says only that there is none: the header's size tells the
# user why. OpenCV read the setting when it was imported, as this module is.
_MAX_DECODED_PIXELS = max_decoded_pixels()
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# libpng takes at most this many pixels a side (its PNG_USER_WIDTH_MAX and PNG_USER_HEIGHT_MAX).
_MAX_PNG_SIDE = 1_000_000
# A BMP's header sizes other than the OS/2 one (BITMAPINFOHEADER and its later versions).
_BMP_HEADER_SIZES = frozenset({40, 52, 56, 64, 108, 124})
_PNM_SPACE = b" \t\n\v\f\r"
_PNM_HEADER_BYTES = 4096  # where a PNM's size must have come, comments included
# JPEG's start-of-frame markers, which carry the picture's size: C0-CF but for DHT (C4), JPG (C8) and DAC (CC).
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def declared_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) that a PNG, JPEG, BMP or PNM (PBM, PGM, PPM) file's header declares; None for other files
    or a header cut short."""
    view = memoryview(data).cast("B")  # no copy: a picture too large to decode may be a large file
    if bytes(view[:8]) == _PNG_SIGNATURE and bytes(view[12:16]) == b"IHDR" and len(view) >= 24:
        return int.from_bytes(view[16:20], "big"), int.from_bytes(view[20:24], "big")
    if bytes(view[:2]) == b"BM" and len(view) >= 26:
        header = int.from_bytes(view[14:18], "little")
        if header == 12:  # the old OS/2 header: 16-bit sides
            width, height = int.from_bytes(view[18:20], "little"), int.from_bytes(view[20:22], "little")
        elif header in _BMP_HEADER_SIZES:
            width, height = (int.from_bytes(view[18:22], "little", signed=True),
                             int.from_bytes(view[22:26], "little", signed=True))
        else:  # a text file that starts with "BM"
            return None
        # A negative height is a picture stored top row first; a width under 1 is no BMP OpenCV reads.
        return (width, abs(height)) if width > 0 and height != 0 else None
    if len(view) >= 3 and view[0] == ord("P") and view[1] in b"123456" and view[2] in _PNM_SPACE + b"#":
        # "P6 <width> <height> ...", in ASCII, with comments from "#" to the end of a line.
        fields = re.sub(rb"#[^\n\r]*", b" ", bytes(view[2:_PNM_HEADER_BYTES])).split(None, 2)
        if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
            return int(fields[0]), int(fields[1])
        return None
    if bytes(view[:2]) != b"\xff\xd8":
        return None
    at = 2  # segment by segment: metadata (EXIF, ICC profiles, XMP) may run to hundreds of kB before the frame
    while at + 9 <= len(view) and view[at] == 0xFF:
        marker = view[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_FRAME_MARKERS:
            return int.from_bytes(view[at + 7:at + 9], "big"), int.from_bytes(view[at + 5:at + 7], "big")
        if marker == 0xDA:  # the image data begins: no frame header came before it
            return None
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            at += 2
            continue
        at += 2 + int.from_bytes(view[at + 2:at + 4], "big")
    return None


def _too_large(data: np.ndarray) -> str | None:
    """Why OpenCV would decode no picture from these bytes for its size, going by the size the header declares;
    None when the size is not the reason (or no header tells it). Asked before decoding: libpng writes its own
    refusal of a side over its limit to stderr, past OpenCV's log level."""
    size = declared_size(data.data)
    if size is None:
        return None
    width, height = size
    limit = _MAX_DECODED_PIXELS
    if width * height > limit:
        return (f"the picture is {width}x{height} px, more than the {limit:,} pixels OpenCV decodes; scale it "
                "down, or raise the limit with OPENCV_IO_MAX_IMAGE_PIXELS (it takes 3 bytes a pixel in memory)")
    if bytes(data[:8]) == _PNG_SIGNATURE and max(width, height) > _MAX_PNG_SIDE:
        return f"the picture is {width}x{height} px; PNG pictures are decoded up to {_MAX_PNG_SIDE:,} px a side"
    return None


# Brands of the ISO media files that hold pictures (HEIF, AVIF), not video, and of those that hold sound or a raw
# photo; a file lists its major brand and the others it is compatible with.
_PICTURE_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis", b"MiHE", b"MiHA",
                             b"MiHB", b"miaf"})
_SOUND_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "})
_RAW_BRANDS = frozenset({b"crx "})
# The boxes an MP4 or MOV may begin with (an old QuickTime movie has no 'ftyp').
_FIRST_MOVIE_BOXES = frozenset({b"ftyp", b"wide", b"free", b"skip", b"mdat", b"moov"})


def _brands(ftyp_data: bytes) -> set[bytes]:
    """The major and compatible brands of an 'ftyp' box's data (what follows its 8-byte header: the major brand,
    a version, then the compatible brands)."""
    return {ftyp_data[:4]} | {ftyp_data[k:k + 4] for k in range(8, len(ftyp_data) - 3, 4)}


def _picture_brand(ftyp_data: bytes) -> bool:
    return bool(_brands(ftyp_data) & _PICTURE_BRANDS)


def _png_cut_short(data: np.ndarray) -> bool:
    """Whether a PNG's chunks run past the end of its bytes before the IEND chunk that ends every PNG."""
    view = memoryview(data).cast("B")
    if bytes(view[:8]) != _PNG_SIGNATURE:
        return False
    at = 8
    while at + 8 <= len(view):
        if bytes(view[at + 4:at + 8]) == b"IEND":
            return False
        at += 12 + int.from_bytes(view[at:at + 4], "big")  # length, type, data, CRC
    return True


def _what_else(data: np.ndarray) -> str:
    """Why an image file OpenCV decoded no picture from could not be read: a video or a HEIF picture under an
    image's name, or damage."""
    head = bytes(data[:12])
    if head[4:8] == b"ftyp":
        brands = _brands(bytes(data[8:min(int.from_bytes(head[:4], "big"), 264)]))
        if brands & _PICTURE_BRANDS:
            return f"it is a HEIC or AVIF picture under another name; {UNREADABLE_IMAGE_REASON}"
        if brands & _SOUND_BRANDS:
            return "it holds sound (M4A), not a picture"
        if brands & _RAW_BRANDS:
            return "it is a raw photo (CR3), which cannot be decoded here; convert it to JPEG or PNG"
        return "it holds a video (MP4 or MOV), not a picture: name it .mp4 to track its frames"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "it holds a video (AVI), not a picture: name it .avi to track its frames"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "it holds a video (MKV or WebM), not a picture: name it .mkv to track its frames"
    return "not an image or the file is corrupt"


def _tiff_pages(data: np.ndarray, most: int = 10_000) -> int:
    """How many images a TIFF or BigTIFF holds (its chain of image directories); 1 for other files."""
    view = memoryview(data).cast("B")
    order = {b"II": "little", b"MM": "big"}.get(bytes(view[:2]))
    if order is None or len(view) < 16:
        return 1
    version = int.from_bytes(view[2:4], order)
    if version == 42:  # 4-byte offsets, 2-byte entry counts, 12-byte entries
        offset, count, entry, at = 4, 2, 12, int.from_bytes(view[4:8], order)
    elif version == 43:  # BigTIFF: 8-byte offsets, 8-byte entry counts, 20-byte entries
        offset, count, entry, at = 8, 8, 20, int.from_bytes(view[8:16], order)
    else:
        return 1
    pages, seen = 0, set()
    while 8 <= at and at + count <= len(view) and at not in seen and pages < most:
        seen.add(at)
        pages += 1
        end = at + count + entry * int.from_bytes(view[at:at + count], order)
        if end + offset > len(view):
            break
        at = int.from_bytes(view[end:end + offset], order)
    return max(pages, 1)


def _float_range_to_unit(img: np.ndarray, path: str) -> np.ndarray:
    """A float picture's pixels in [0, 1], as to_bgr8 reads floats. A file may hold another range (a 32-bit TIFF
    of 0-255, an HDR frame): clipped to [0, 1] it would read white, with no face. Read as 0-255 when it fits
    there and reaches 64 or more, else from its own lowest to highest value; with a warning, for the picture is
    then guessed at."""
    known = img[np.isfinite(img)]
    low, high = (float(known.min()), float(known.max())) if known.size else (0.0, 1.0)
    # A lossy float format strays a little beyond its range: OpenCV's own 32-bit colour TIFFs (LogLuv) read a
    # 0-1 photo back as -0.008 to 1.018. That much is clipped, as to_bgr8 clips.
    slack = 0.05
    if low >= -slack and high <= 1.0 + slack:
        return img
    # 0-255 when it reaches well past 1 and stays within 255; an HDR frame (0-4, say) or a -1..1 picture read so
    # would be all but black.
    if low >= -slack * 255.0 and 64.0 <= high <= (1.0 + slack) * 255.0:
        scale, offset, read_as = 255.0, 0.0, "0-255"
    else:
        scale, offset, read_as = max(high - low, 1e-12), low, "its own range"
    log.warning("'%s' holds float pixels from %g to %g, not the usual 0 to 1: read as %s", readable_path(path), low,
                high, read_as)
    return (img - offset) / scale


def _read_image(path: str) -> tuple[np.ndarray | None, str]:
    """Decode one image file -> (BGR uint8 image, "") or (None, why it could not be read)."""
    try:
        if os.path.getsize(path) == 0:
            return None, "the file is empty"
        # imdecode(fromfile) instead of imread: same decoders, but also works for non-ASCII paths on Windows.
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        return None, f"cannot read the file ({e.strerror or e})"
    if (why := _too_large(data)) is not None:
        return None, why
    if _png_cut_short(data):  # libpng would print its own complaint, past OpenCV's log level
        return None, "the PNG is cut short (it ends before its last chunk), as an unfinished download or copy is"
    try:
        with opencv_quieter():  # truncated BMP/PPM log multi-line ERRORs; we report it in one line
            img = cv2.imdecode(data, _IMREAD_FLAGS)
    except cv2.error:
        img = None
    if img is None:
        return None, _what_else(data)
    if (pages := _tiff_pages(data)) > 1:
        log.warning("'%s' holds %d images (a multi-page TIFF): only the first is tracked", readable_path(path),
                    pages)
    if img.dtype == np.uint16:
        # Keep the top 8 of the bits the picture uses: 10- or 12-bit data stored in 16 bits (a PGM with maxval
        # 1023, a machine-vision camera's frame saved as PNG) would read as black through the top 8 of 16. A
        # 16-bit photo so dark that it uses 12 bits or fewer comes out brighter, which only helps the detector.
        # Each still is tracked on its own, so a folder's images may differ in this.
        img = (img >> max(int(img.max()).bit_length() - 8, 0)).astype(np.uint8)
    elif np.issubdtype(img.dtype, np.floating):
        img = _float_range_to_unit(img, path)
    rotate, flip = _ORIENTATION_FIX.get(webp_orientation(data.data), (None, None))
    if rotate is not None:
        img = cv2.rotate(img, rotate)
    if flip is not None:
        img = cv2.flip(img, flip)
    try:
        return to_bgr8(img), ""
    except ValueError as e:
        return None, str(e)


# ---------------------------------------------------------------------------------------------------
# Image files and folders


class _ImageFilesSource(FrameSource):
    """A sorted list of image files; undecodable ones are skipped (folder) or fatal (single image)."""

    def __init__(self, name: str, paths: list[str], *, strict: bool, skipped: list[str]) -> None:
        super().__init__(name, is_live=False, fps=None, total_frames=len(paths), still_images=True)
        self.skipped.extend(skipped)
        self._paths = paths
        self._strict = strict
        self._pos = 0
        self._index = 0
        # A folder's unreadable images: the first few are named as they are met, the rest counted and told at
        # the end (a folder of many broken files would otherwise bury the run in warnings).
        self._listed = self._unlisted = 0
        # Decode the first readable image now, so a folder of junk fails in open_source, not mid-run.
        self._pending = self._next_frame()
        if self._pending is None:
            count = len(self.skipped)
            raise SourceError(f"no readable images in {name} ({count} file{'s' * (count != 1)} skipped)")

    def _next_frame(self) -> Frame | None:
        while self._pos < len(self._paths):
            path = self._paths[self._pos]
            self._pos += 1
            img, why = _read_image(path)
            if img is None:
                if self._strict:
                    raise SourceError(f"cannot read image '{readable_path(path)}': {why}")
                note = f"skipped '{readable_path(path)}': {why}"
                self.skipped.append(note)
                if self._listed < _UNREADABLE_LISTED:
                    log.warning(note)
                    self._listed += 1
                else:
                    self._unlisted += 1
                continue
            # Stills have no time; a nominal frame rate keeps time_s strictly increasing for consumers
            # that compute time steps.
            frame = Frame(img, self._index, self._index / _DEFAULT_FPS, path, time.perf_counter())
            self._index += 1
            return frame
        if self._unlisted:
            log.warning("%s: %d more unreadable images skipped", self.name, self._unlisted)
            self._unlisted = 0
        return None

    def __iter__(self) -> Iterator[Frame]:
        while not self._closed:
            frame, self._pending = self._pending, None
            if frame is None:
                frame = self._next_frame()
                if frame is None:
                    return
            yield frame

    def _release(self) -> None:
        self._pending = None


def _skipped_kind(entry: os.DirEntry) -> tuple[tuple[str, str], str] | None:
    """Why a folder entry is not read as an image: ((kind, its plural), reason), or None for an image file."""
    extension = os.path.splitext(entry.name)[1].lower()
    try:
        if entry.is_dir():
            return ("subfolder", "subfolders"), "subfolders are not searched"
    except OSError as e:  # a link in a loop ("too many levels of symbolic links")
        return ("unreadable entry", "unreadable entries"), f"cannot read it ({e.strerror or e})"
    if extension in IMAGE_EXTENSIONS:
        return None
    if not extension:
        return ("file without extension", "files without extension"), "not an image file"
    shown = f"'{readable_path(extension)}' "
    if extension in UNREADABLE_IMAGE_EXTENSIONS:
        return (f"{shown}image", f"{shown}images"), UNREADABLE_IMAGE_REASON
    return (f"{shown}file", f"{shown}files"), "not an image file"


def _open_folder(path: str) -> FrameSource:
    candidates: list[str] = []
    skipped: list[str] = []
    others: dict[tuple[str, str], int] = {}  # skipped by name: (kind, its plural) -> count
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as e:
        raise SourceError(f"cannot list folder '{path}': {e.strerror or e}") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue  # hidden files (.DS_Store, ._foo.jpg from macOS) are never meant as input
        full = os.path.join(path, entry.name)
        skip = _skipped_kind(entry)
        if skip is None:
            candidates.append(full)
            continue
        kind, why = skip
        others[kind] = others.get(kind, 0) + 1
        skipped.append(f"skipped '{readable_path(full)}': {why}")
    if len(skipped) <= _UNREADABLE_LISTED:
        for note in skipped:
            log.warning(note)
    else:
        # One line, not one per file: a dataset folder holds an annotation file beside every image.
        counts = ", ".join(f"{n} {kind[n > 1]}" for kind, n in others.items())
        why = "; subfolders are not searched" if ("subfolder", "subfolders") in others else ""
        log.warning("folder '%s': skipped what is not an image (%s%s)", readable_path(path), counts, why)
    return _ImageFilesSource(f"folder '{path}'", candidates, strict=False, skipped=skipped)


# ---------------------------------------------------------------------------------------------------
# cv2.VideoCapture: files, cameras, URLs


class _CaptureReader:
    """Reads one cv2.VideoCapture into Frames; shared by the synchronous and the threaded source."""

    def __init__(self, cap: cv2.VideoCapture, label: str, source: str, *, is_file: bool,
                 shown: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.cap = cap
        self.shown = shown
        self.label = label
        self.source = source
        self.is_file = is_file
        fps = cap.get(cv2.CAP_PROP_FPS)
        # Some containers/drivers report 0, NaN or nonsense like 90000 (a time base); treat as unknown.
        self.fps: float | None = fps if math.isfinite(fps) and 0 < fps <= 1 / _MIN_STEP_S else None
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.total_frames: int | None = int(count) if is_file and math.isfinite(count) and count > 0 else None
        self.index = 0
        # Files: the container's time of the first and the latest frame, the time given to the latest, the last
        # real step between two frames' times, and where the first frame starts (seconds, as the frame count
        # counts it: a stream that starts late, as a cut from a broadcast does, is counted from 0).
        self._first_time = self._last_stamp = self._last_time = self._start_s = 0.0
        self._step = 1.0 / (self.fps or _DEFAULT_FPS)
        self._damaged = 0  # files: places where damaged data was skipped
        self._lost = 0  # files: the frames it held (failed reads), which the frame numbers count
        self._timed = False  # files: whether a frame's time was read (the first sets where the clock starts)
        self.error: str | None = None
        self.t_open = time.perf_counter()
        self._last_good = self.t_open

    def read(self, stop: threading.Event | None = None) -> Frame | None:
        """The next frame, or None at the end (then ``error`` says why, if it was not a normal end)."""
        failed = 0
        while True:
            ok, img = self.cap.read()
            now = time.perf_counter()
            if ok and img is not None:
                break
            if self.is_file:
                # Damaged data fails a few reads and the frames after it decode again; at the end every read fails
                # (at once: a local file's failed reads are cheap). Over a network each may wait out a timeout.
                failed += 1
                if failed <= _FILE_READ_RETRIES and "://" not in self.source:
                    continue
                self._report_end()
                return None
            # Cameras and streams hiccup; only a source silent for _STALL_S is considered gone.
            if now - self._last_good > _STALL_S:
                self.error = f"{self.label} stopped delivering frames"
                return None
            if stop is not None:
                if stop.wait(0.01):
                    return None
            else:
                time.sleep(0.01)
        self._last_good = now
        if self.is_file:
            if failed:
                self._skipped_damage(failed)
                # Each failed read was a frame that could not be decoded: the frames after it keep their numbers
                # in the file, so results can be matched back to the video. (An H.264 decoder may also drop a
                # frame without a failed read, or fail a read more: of 12 copies of talking_d0 with a block
                # damaged, 7 numbered frames after it 1-5 off, 41 frame-offsets in all; counted by the timestamps
                # instead, 717.)
                self.index += failed
                self._lost += failed
            time_s = self._media_time()
        else:
            time_s = now - self.t_open
        try:
            image = to_bgr8(img)
        except ValueError as e:
            raise SourceError(f"{self.label} delivered an unusable frame: {e}") from None
        if self.shown is not None:
            image = self.shown(image)
        frame = Frame(image, self.index, time_s, self.source, now)
        self.index += 1
        return frame

    def _media_time(self) -> float:
        """The time of the frame just read, from the container's timestamps. The smoothing and the outputs read
        the time between frames, so it must increase: a step under _MIN_STEP_S is no real one (a repeated
        timestamp; a negative duration in the file, after which FFmpeg squeezes the frames microseconds apart; a
        header declaring 90000 fps) and becomes the last real step. Real steps are the file's, so a burst of
        frames in a file whose average rate is low keeps its times, and times moved on by repeats fall back
        onto the file's clock within a few frames instead of drifting ahead of it."""
        pos_ms = self.cap.get(cv2.CAP_PROP_POS_MSEC)  # after read(): the timestamp of this frame
        stamp = pos_ms / 1000.0 if math.isfinite(pos_ms) and pos_ms > 0 else self.index / (self.fps or _DEFAULT_FPS)
        if not self._timed:
            self._timed = True
            time_s = self._first_time = stamp
            # Where the stream starts, in frames from the container's 0 (FFmpeg). An estimated frame count
            # (duration × rate) includes it; an MP4's or MOV's, read from its index, does not.
            start = self.cap.get(cv2.CAP_PROP_PTS)
            estimated = os.path.splitext(self.source)[1].lower() not in _INDEXED_CONTAINERS
            if estimated and self.fps and math.isfinite(start) and 0 < start < (self.total_frames or 0):
                self._start_s = start / self.fps
        elif stamp - self._last_stamp < _MIN_STEP_S:  # (no more than two frames: the last step may be a pause)
            time_s = self._last_time + min(self._step, 2.0 / (self.fps or _DEFAULT_FPS))
        else:  # ahead of the file's clock after such a step: back onto it, by steps of half a frame at least
            step = stamp - self._last_stamp
            time_s = max(stamp, self._last_time + 0.5 * min(step, self._step))
            self._step = step
        self._last_stamp, self._last_time = stamp, time_s
        return time_s

    def _skipped_damage(self, failed_reads: int) -> None:
        """Say where damaged data was skipped, as it is found (a stop later must not hide it): the first few
        places, then only their count, at the end."""
        self._damaged += 1
        if self._damaged <= _DAMAGE_LISTED:
            where = f"after frame {self.index - 1}" if self.index else "before the first frame"
            log.warning("%s: damaged data %s could not be decoded (%d failed read%s) and was skipped", self.label,
                        where, failed_reads, "s" * (failed_reads != 1))

    def _report_end(self) -> None:
        """A file's end: how much damaged data was skipped on the way, and whether it ended early."""
        if self._damaged > _DAMAGE_LISTED:
            log.warning("%s: damaged data was skipped at %d places in all", self.label, self._damaged)
        self._check_truncated()

    def _check_truncated(self) -> None:
        n, m = self.index, self.total_frames
        # FRAME_COUNT is an estimate (duration x fps) for some containers and can be a frame off on
        # healthy files, hence the small tolerance. n == 0 is reported as a SourceError by the caller.
        if n == 0 or m is None:
            return
        slack = max(1, m // 100)
        if m - n <= slack:
            return
        # A variable-rate WebM or MKV (a browser's or a screen recorder's) stores no frame count: FFmpeg's is
        # its duration times the highest rate, more frames than the file holds. Its timestamps still reach the
        # end (the last frame lasting as long as the mean), where a truncated file's stop short.
        if self.fps is not None and n > 1:
            covered_s = self._start_s + (self._last_stamp - self._first_time) * n / (n - 1)
            if covered_s >= (m - slack) / self.fps:
                return
        if "://" in self.source:  # a video file read over the network
            # FFmpeg gives up on a connection silent for _URL_READ_TIMEOUT_MS and cannot resume it.
            log.warning("%s ended after %d of %d frames: the connection dropped or sent nothing for %d s, or the "
                        "file it serves is truncated; the rest was not read", self.label, n, m,
                        _URL_READ_TIMEOUT_MS // 1000)
        else:
            lost = f" ({self._lost} of them could not be decoded)" if self._lost else ""
            log.warning("%s ended after %d of %d frames%s; the file may be truncated", self.label, n, m, lost)

    def release(self) -> None:
        self.cap.release()


class _SyncCaptureSource(FrameSource):
    """Reads in the consumer's thread: every frame is delivered (files, or live=False)."""

    def __init__(self, reader: _CaptureReader, first: Frame, *, name: str, is_live: bool) -> None:
        super().__init__(name, is_live=is_live, fps=reader.fps, total_frames=reader.total_frames)
        self._reader = reader
        self._first: Frame | None = first
        self._lock = threading.Lock()  # close() from another thread must not release mid-read

    def __iter__(self) -> Iterator[Frame]:
        if self._first is not None and not self._closed:
            frame, self._first = self._first, None
            yield frame
        while True:
            with self._lock:
                if self._closed:
                    return
                frame = self._reader.read()
            if frame is None:
                self.error = self._reader.error
                return
            yield frame

    def _release(self) -> None:
        self._first = None
        with self._lock:
            self._reader.release()


class _ThreadedCaptureSource(FrameSource):
    """Reads on a daemon thread into a single newest-frame slot, so latency never accumulates.

    With ``pace_fps`` (a file opened with live=True) frames are released at that rate, the way a camera
    would deliver them; grabbed_at is then the release time."""

    def __init__(self, reader: _CaptureReader, first: Frame, *, name: str, pace_fps: float | None) -> None:
        super().__init__(name, is_live=True, fps=reader.fps, total_frames=reader.total_frames)
        self._reader = reader
        self._pace_fps = pace_fps
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._ended = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(first,), daemon=True,
                                        name=f"tracker.sources reader: {name}")
        self._thread.start()

    def _run(self, first: Frame) -> None:
        frame: Frame | None = first
        t0 = time.perf_counter()
        try:
            while frame is not None and not self._stop.is_set():
                if self._pace_fps:
                    # Absolute schedule (not sleep-per-frame), so decode time does not slow the pace.
                    delay = t0 + frame.index / self._pace_fps - time.perf_counter()
                    if delay > 0 and self._stop.wait(delay):
                        break
                    frame = dataclasses.replace(frame, grabbed_at=time.perf_counter())
                with self._cond:
                    if self._slot is not None:
                        self.dropped += 1
                    self._slot = frame
                    self._cond.notify_all()
                frame = self._reader.read(self._stop)
            if not self._stop.is_set():
                self.error = self._reader.error
        except Exception as e:  # noqa: BLE001 -- report it as .error, not a thread traceback
            self.error = f"{self.name} failed: {e}"
            log.warning(self.error)
        finally:
            # The thread owns the capture: releasing it from close() could race a blocking read().
            self._reader.release()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        while True:
            with self._cond:
                while self._slot is None and not self._ended and not self._closed:
                    self._cond.wait(0.1)  # notify wakes us; the timeout is only a safety net
                if self._closed or self._slot is None:
                    return
                frame, self._slot = self._slot, None  # taking it empties the slot: next one is newer
            yield frame

    def _release(self) -> None:
        self._stop.set()
        with self._cond:
            self._slot = None
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(_JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("%s: reader thread did not stop within %.0f s", self.name, _JOIN_TIMEOUT_S)


def _capture_source(cap: cv2.VideoCapture, *, label: str, source: str, is_file: bool, live: bool,
                    fail: Callable[[], SourceError],
                    shown: Callable[[np.ndarray], np.ndarray] | None = None) -> FrameSource:
    """Wrap an opened capture; raise fail() if it yields no first frame. ``shown`` turns each frame as the
    file's tag asks, where OpenCV would not."""
    reader = _CaptureReader(cap, label, source, is_file=is_file, shown=shown)
    try:
        first = reader.read()
    except SourceError:
        reader.release()
        raise
    if first is None:
        reader.release()
        raise fail()
    if not live:
        return _SyncCaptureSource(reader, first, name=label, is_live=not is_file)
    pace = (reader.fps or _DEFAULT_FPS) if is_file else None
    return _ThreadedCaptureSource(reader, first, name=label, pace_fps=pace)


def _open_camera(index: int, camera_size: tuple[int, int] | None, camera_fps: float | None,
                 live: bool) -> FrameSource:
    def fail() -> SourceError:
        return SourceError(f"camera {index} could not be opened (no such device or it is busy)")

    try:
        with opencv_quieter():
            cap = cv2.VideoCapture(index)
    except cv2.error:  # an index beyond what OpenCV's API takes (int32)
        raise fail() from None
    if not cap.isOpened():
        cap.release()
        raise fail()
    if camera_size:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, camera_size[0])
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, camera_size[1])
    if camera_fps:
        cap.set(cv2.CAP_PROP_FPS, camera_fps)
    if camera_size or camera_fps:
        # Drivers silently pick the nearest mode they support; say what we actually got. (Asked here,
        # before the reader thread owns the capture: VideoCapture is not thread-safe.)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        log.info("camera %d mode: %dx%d at %g fps", index, w, h, cap.get(cv2.CAP_PROP_FPS))
    return _capture_source(cap, label=f"camera {index}", source=str(index), is_file=False, live=live,
                           fail=fail)


def _redact_url(url: str) -> str:
    # rtsp://user:password@host/... -> rtsp://user:***@host/...: names end up in logs and output files.
    # The password runs to the authority's last '@' (a password may hold '@' itself).
    return re.sub(r"^([a-zA-Z][\w+.-]*://[^/@:]*):[^/]*@", r"\1:***@", url)


# Stream opens given up on at a stop, still waiting in FFmpeg: OpenCV opens one capture at a time, so another open
# (the overlay video's check that it plays) would wait them out.
_ABANDONED_OPENS: list[threading.Thread] = []


def stream_open_pending() -> bool:
    """Whether a stream open given up on at a stop is still waiting (opening a capture now would wait too)."""
    _ABANDONED_OPENS[:] = [t for t in _ABANDONED_OPENS if t.is_alive()]
    return bool(_ABANDONED_OPENS)


def _open_capture_cancellably(open_capture: Callable[[], cv2.VideoCapture], label: str,
                              cancelled: Callable[[], bool] | None) -> cv2.VideoCapture:
    """open_capture() on a thread of its own, so that a stop ends the wait at once: a stream's host may take
    FFmpeg's whole open timeout to answer, and a signal handler cannot run while the call blocks. A capture
    that opens after the stop is released by that thread."""
    if cancelled is None:
        return open_capture()
    lock = threading.Lock()
    result: dict[str, object] = {}

    def target() -> None:
        try:
            cap = open_capture()
        except BaseException as exc:  # noqa: BLE001 -- handed to the waiting thread, which raises it
            cap, result["error"] = None, exc
        with lock:
            if result.get("abandoned"):
                if cap is not None:
                    cap.release()
            else:
                result["cap"] = cap

    opener = threading.Thread(target=target, name="tracker.stream open", daemon=True)
    opener.start()
    while opener.is_alive():
        opener.join(0.05)
        with lock:
            if "cap" not in result and "error" not in result and cancelled():
                result["abandoned"] = True
                _ABANDONED_OPENS.append(opener)
                raise SourceError(f"stopped while opening {label}")
    if "error" in result:
        raise result["error"]
    return result["cap"]


def _open_url(url: str, live: bool | None, cancelled: Callable[[], bool] | None = None) -> FrameSource:
    shown = _redact_url(url)
    label = f"stream '{shown}'"

    def open_capture() -> cv2.VideoCapture:
        with opencv_quieter():
            if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG):
                params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, _URL_OPEN_TIMEOUT_MS,
                          cv2.CAP_PROP_READ_TIMEOUT_MSEC, _URL_READ_TIMEOUT_MS]
                return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
            return cv2.VideoCapture(url)

    cap = _open_capture_cancellably(open_capture, label, cancelled)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"cannot open {label}: unreachable, wrong address, or unsupported protocol")
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)  # a phone video served over http is turned upright as a local one
    # A video file served over the network knows its length; a live stream (a camera's MJPEG or RTSP) does
    # not. The file is read like a local one, every frame, unless asked to play live.
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    is_file = math.isfinite(count) and count > 0
    # An MP4 whose index comes after its data (as most recorders write it) is read over http by seeking to the
    # index: a server that ignores byte ranges (python -m http.server) opens it, then delivers no frame.
    indexed = os.path.splitext(urllib.parse.urlsplit(url).path)[1].lower() in _INDEXED_CONTAINERS
    why = (" (if its index is at its end, an MP4 over http needs a server that answers byte-range requests, or the "
           "index moved to the front: ffmpeg -i in.mp4 -c copy -movflags +faststart out.mp4)"
           if is_file and indexed and url.lower().startswith("http") else "")
    return _capture_source(cap, label=label, source=shown, is_file=is_file,
                           live=(not is_file) if live is None else live,
                           fail=lambda: SourceError(f"{label} opened but delivered no frames{why}"))


def _box_header(header: bytes | memoryview, room: int) -> tuple[bytes, int, int]:
    """(type, header length, box length) of the ISO media box whose first 16 bytes (fewer at the end) are
    ``header``, ``room`` bytes before the end of what holds it: a length of 1 is given in the 64 bits after the
    type, one of 0 runs to the end."""
    length, kind, head = int.from_bytes(header[:4], "big"), bytes(header[4:8]), 8
    if length == 1 and len(header) >= 16:
        length, head = int.from_bytes(header[8:16], "big"), 16
    elif length == 0:
        length = room
    return kind, head, length


def _file_boxes(f: BinaryIO, size: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, where it starts, its length) of each top-level box of an ISO media file (MP4, MOV) open as ``f``,
    ``size`` bytes long; none when the file does not start as one, and no more after a length that cannot be
    one. The last box may run past the end (a file cut off in it)."""
    at = 0
    while at + 8 <= size:
        f.seek(at)
        kind, _, length = _box_header(f.read(16), size - at)
        if (at == 0 and kind not in _FIRST_MOVIE_BOXES) or length < 8:
            return
        yield kind, at, length
        at += length


def _lacks_its_index(path: str) -> bool:
    """Whether ``path`` is an MP4 or MOV (ISO media) that holds a recording's data ('mdat') but runs to the end of
    the file without its index (the 'moov' box), as a recording cut off before it was finished does."""
    try:
        with open(path, "rb") as f:
            size, data_seen = os.fstat(f.fileno()).st_size, False
            for kind, at, length in _file_boxes(f, size):
                if kind == b"ftyp":
                    f.seek(at + 8)
                    if _picture_brand(f.read(min(length - 8, 256))):
                        return False
                if kind in (b"moov", b"moof"):  # its index, or a fragment's (a stream's segment needs none)
                    return False
                data_seen = data_seen or kind == b"mdat"
                if at + length >= size:  # the last box: up to the end, or cut off in it
                    return data_seen
    except OSError:
        return False
    return False


_MOVIE_INDEX_LIMIT = 64 << 20  # an MP4's 'moov' box is read whole for its display matrix: an hour's is a few MB


def _boxes(data: bytes | memoryview, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, where its content starts, where it ends) of each ISO media box in data[start:end]."""
    end = len(data) if end is None else end
    while start + 8 <= end:
        kind, head, length = _box_header(data[start:min(start + 16, end)], end - start)
        if length < head or start + length > end:
            return
        yield kind, start + head, start + length
        start += length


def video_display_matrix(path: str) -> tuple[int, int, int, int] | None:
    """The turn and mirror an MP4 or MOV file tags its video with (its track header's display matrix): (a, b, c,
    d) in {-1, 0, 1}, a stored pixel (x, y) shown at (a·x + c·y, b·x + d·y) plus a shift; None if the file is
    none or says nothing readable. (A movie header's matrix, which players apply on top and phones leave alone,
    is not read.)"""
    try:
        with open(path, "rb") as f:
            for kind, at, length in _file_boxes(f, os.fstat(f.fileno()).st_size):
                if kind == b"moov":  # the movie's index, which may come last
                    if length > _MOVIE_INDEX_LIMIT:
                        return None
                    f.seek(at)
                    return _video_track_matrix(memoryview(f.read(length)))  # a cut-off index: IndexError
    except (OSError, IndexError):
        pass
    return None


def _video_track_matrix(moov: memoryview) -> tuple[int, int, int, int] | None:
    for _, start, end in _boxes(moov):
        for kind, track, track_end in _boxes(moov, start, end):
            if kind != b"trak":
                continue
            parts = {k: (s, e) for k, s, e in _boxes(moov, track, track_end)}
            if b"tkhd" not in parts or b"mdia" not in parts:
                continue
            handler = {k: (s, e) for k, s, e in _boxes(moov, *parts[b"mdia"])}.get(b"hdlr")
            if handler is None or bytes(moov[handler[0] + 8:handler[0] + 12]) != b"vide":
                continue  # a sound track's header holds a matrix too
            s, e = parts[b"tkhd"]
            matrix = s + (52 if moov[s] == 1 else 40)  # past version 1's or version 0's times and ids
            if matrix + 36 > e:
                return None
            values = [int.from_bytes(moov[matrix + 4 * i:matrix + 4 * i + 4], "big", signed=True) for i in (0, 1, 3, 4)]
            a, b, c, d = (round(v / 0x10000) for v in values)  # 16.16 fixed point
            # A turn by quarter turns, mirrored or not: two of the four are 0, on one diagonal.
            if {a, b, c, d} <= {-1, 0, 1} and (a == 0) == (d == 0) != (b == 0) == (c == 0):
                return a, b, c, d
            return None
    return None


def shown_as_tagged(image: np.ndarray, matrix: tuple[int, int, int, int]) -> np.ndarray:
    """A stored frame as its display matrix (:func:`video_display_matrix`) shows it."""
    a, b, c, d = matrix
    if a == 0:  # the axes trade places: x' = c·y, y' = b·x
        image, (flip_x, flip_y) = image.transpose(1, 0, 2), (c < 0, b < 0)
    else:
        flip_x, flip_y = a < 0, d < 0
    if flip_x:
        image = image[:, ::-1]
    if flip_y:
        image = image[::-1]
    return np.ascontiguousarray(image)


def _open_video(path: str, live: bool) -> FrameSource:
    counted: float | None = None  # the frame count the opened file gives in its header

    def fail() -> SourceError:
        extension = os.path.splitext(path)[1].lower()
        if extension in AUDIO_EXTENSIONS:
            return SourceError(f"cannot read video '{path}': no pictures to track in it (a {extension} file is "
                               "usually sound only)")
        if os.path.exists(path) and os.path.getsize(path) == 0:
            return SourceError(f"cannot read video '{path}': the file is empty")
        if _lacks_its_index(path):
            return SourceError(f"cannot read video '{path}': the file ends before its index (the 'moov' box an MP4 "
                               "or MOV writes last), as a recording cut off before it was finished does; it cannot "
                               "be read")
        if counted == 0:  # a container opened whole, with no frame in it (a recording stopped before one)
            return SourceError(f"cannot read video '{path}': it holds no frames (none that can be decoded)")
        return SourceError(f"cannot read video '{path}': not a video or the file is corrupt")

    if not is_utf8_path(path):  # OpenCV's VideoCapture crashes the process on such a name
        raise SourceError(f"cannot read video '{readable_path(path)}': OpenCV cannot open a file whose name is not "
                          "UTF-8; rename it")
    try:  # FFmpeg says "not a video" of a file it may not read
        with open(path, "rb"):
            pass
    except OSError as e:
        raise SourceError(f"cannot read video '{path}': {e.strerror or e}") from None
    with opencv_quieter():
        # FFmpeg only, when present: after it fails, CAP_ANY would also try OpenCV's built-in MJPEG/AVI
        # reader, which prints "Unexpected element. Expected: LIST. Got: JUNK." on broken files with a
        # plain fprintf that no log level silences, and reads nothing FFmpeg cannot.
        if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG):
            cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        else:
            cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        raise fail()
    counted = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    # Phone videos store portrait frames on their side with a tag that says how to turn them; this OpenCV
    # leaves them unturned unless asked, and a sideways face reads as a 90° roll. Of a tag that also mirrors the
    # picture (a front camera's) it reads the turn alone (a mirror left to right came out upside down): such a
    # file is shown as tagged here.
    matrix = video_display_matrix(path)
    mirrored = matrix is not None and matrix[0] * matrix[3] - matrix[1] * matrix[2] < 0
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0 if mirrored else 1)
    return _capture_source(cap, label=f"video '{path}'", source=path, is_file=True, live=live, fail=fail,
                           shown=partial(shown_as_tagged, matrix=matrix) if mirrored else None)


# ---------------------------------------------------------------------------------------------------


def open_source(spec: str | int, *, camera_size: tuple[int, int] | None = None,
                camera_fps: float | None = None, live: bool | None = None,
                cancelled: Callable[[], bool] | None = None) -> FrameSource:
    """Open a frame source; the kind is decided from ``spec``:

    - int or all-digit string: webcam index (live); ``camera_size`` (width, height) and ``camera_fps``
      are requested from the driver, which may pick the nearest mode it supports.
    - string containing ``://``: stream URL (rtsp/http/udp/...), live; a video file served over http(s)
      (one that knows its frame count) is read whole, as a local file is.
    - existing folder: its image files in sorted name order (not recursive; hidden files ignored; other
      files and undecodable images skipped with a warning).
    - existing file with an image extension: that single image.
    - any other existing file: a video, every frame delivered.

    ``live``: None = auto (cameras and live streams live, files not). True plays a video file as a live source paced
    at its own frame rate, dropping frames the consumer has not taken (for latency benchmarks). False
    reads a camera/URL synchronously without dropping. Ignored for images.

    ``cancelled``: polled while a stream URL opens (which can take FFmpeg's whole 10 s timeout); once it
    returns True, the wait ends with SourceError.

    Raises SourceError (one-line message) if the source cannot be opened or yields no frame at all.
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise TypeError(f"source must be a path, URL or camera index, not {type(spec).__name__}")
    if isinstance(spec, int) or (spec.isascii() and spec.isdigit()):
        try:
            return _open_camera(int(spec), camera_size, camera_fps, live=live is not False)
        except SourceError as exc:
            if isinstance(spec, str) and os.path.exists(spec):  # digits name a camera; say how to read the file
                raise SourceError(f"{exc}; to read the file '{spec}' instead, pass it as './{spec}'") from None
            raise
    if "://" in spec:
        return _open_url(spec, live=live, cancelled=cancelled)
    if os.path.isdir(spec):
        return _open_folder(spec)
    if os.path.isfile(spec):
        extension = os.path.splitext(spec)[1].lower()
        if extension in UNREADABLE_IMAGE_EXTENSIONS:
            raise SourceError(f"cannot read image '{readable_path(spec)}': {UNREADABLE_IMAGE_REASON}")
        if extension in IMAGE_EXTENSIONS:
            return _ImageFilesSource(f"image '{spec}'", [spec], strict=True, skipped=[])
        return _open_video(spec, live=live is True)
    if os.path.exists(spec):
        raise SourceError(f"source '{spec}' is neither a file nor a folder")
    raise absent_source_error(spec)


def absent_source_error(spec: str) -> SourceError:
    """Why a source that is not there cannot be read: not found, a link to nothing, or out of reach."""
    try:
        os.stat(spec)
    except PermissionError:  # a folder on the way that may not be entered: "not found" would mislead
        return SourceError(f"source '{spec}' cannot be reached: permission denied")
    except OSError:
        pass
    return SourceError(f"source '{spec}' not found" + (" (a link to nothing)" if os.path.islink(spec) else ""))
