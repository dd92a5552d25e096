"""Frame sources on real files written here with OpenCV: folders with junk, videos (whole, truncated,
fake), odd pixel formats, huge/tiny images, live pacing with drops, and quiet failure on missing devices."""

import itertools
import logging
import os
import re
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest
from conftest import run_without_root_rights, shared_path, write_variable_rate_mkv

from tracker.sources import Frame, SourceError, open_source, to_bgr8

REPO = Path(__file__).resolve().parent.parent
FPS = 25.0
N_FRAMES = 20


def _level(i: int) -> int:
    return 10 * i + 20  # flat grey level of video frame i: survives MJPG nearly exactly


def _assert_bgr8(image: np.ndarray) -> None:
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.flags["C_CONTIGUOUS"]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (64, 48))
    assert writer.isOpened()
    for i in range(N_FRAMES):
        writer.write(np.full((48, 64, 3), _level(i), np.uint8))
    writer.release()
    return path


def _read_all(spec, **kw) -> tuple[list[Frame], object]:
    with open_source(str(spec), **kw) as src:
        return list(src), src


# --- image folders -----------------------------------------------------------------------------------


def test_folder_skips_junk_and_normalises(tmp_path, caplog):
    cv2.imwrite(str(tmp_path / "01_gray.jpg"), np.full((40, 50), 100, np.uint8))
    (tmp_path / "02_empty.jpg").write_bytes(b"")
    bgra = np.dstack([np.full((30, 20, 3), (10, 20, 30), np.uint8), np.full((30, 20), 128, np.uint8)])
    cv2.imwrite(str(tmp_path / "03_bgra.png"), bgra)
    (tmp_path / "04_corrupt.png").write_bytes(np.random.default_rng(1).bytes(3000))
    cv2.imwrite(str(tmp_path / "05_deep.png"), np.full((24, 36, 3), (10000, 20000, 40000), np.uint16))
    (tmp_path / "06_notes.txt").write_text("not an image")
    (tmp_path / ".DS_Store").write_bytes(b"\0\1")  # hidden: ignored without a warning

    with caplog.at_level(logging.WARNING, logger="tracker.sources"):
        frames, src = _read_all(tmp_path)

    assert [f.source for f in frames] == [str(tmp_path / n) for n in ("01_gray.jpg", "03_bgra.png", "05_deep.png")]
    assert [f.index for f in frames] == [0, 1, 2]
    assert [f.image.shape for f in frames] == [(40, 50, 3), (30, 20, 3), (24, 36, 3)]
    for f in frames:
        _assert_bgr8(f.image)
    assert np.abs(frames[0].image.astype(int) - 100).max() <= 2  # JPEG of a flat grey
    assert frames[1].image[0, 0].tolist() == [10, 20, 30]  # alpha dropped, colour kept
    assert frames[2].image[0, 0].tolist() == [10000 >> 8, 20000 >> 8, 40000 >> 8]
    assert src.total_frames == 5 and src.still_images and not src.is_live and src.fps is None
    assert len(src.skipped) == 3
    assert sum("02_empty.jpg" in s and "empty" in s for s in src.skipped) == 1
    assert sum("04_corrupt.png" in s for s in src.skipped) == 1
    assert sum("06_notes.txt" in s for s in src.skipped) == 1
    warnings = [r for r in caplog.records if r.name == "tracker.sources" and r.levelno == logging.WARNING]
    assert len(warnings) == 3


def test_a_folder_with_many_files_that_are_not_images_warns_in_a_few_lines(tmp_path, caplog):
    """A dataset folder (an annotation file beside every image), a subfolder and many broken images: one line
    for what is not an image, the first five broken images named, one line counting the rest; every skipped
    file is still listed in FrameSource.skipped."""
    for i in range(40):
        (tmp_path / f"face_{i:02d}.pts").write_text("version: 1")
    (tmp_path / "README").write_text("x")
    (tmp_path / "crops").mkdir()
    for i in range(8):
        (tmp_path / f"broken_{i}.png").write_bytes(b"\x89PNG garbage")
    cv2.imwrite(str(tmp_path / "face_00.jpg"), np.full((40, 50, 3), 90, np.uint8))
    with caplog.at_level(logging.WARNING, logger="tracker.sources"):
        frames, src = _read_all(tmp_path)
    assert [Path(f.source).name for f in frames] == ["face_00.jpg"]
    assert len(src.skipped) == 40 + 1 + 1 + 8
    warnings = [r.getMessage() for r in caplog.records if r.name == "tracker.sources"]
    assert len(warnings) == 1 + 5 + 1, warnings
    assert "40 '.pts' files" in warnings[0] and "1 file without extension" in warnings[0]
    assert "1 subfolder" in warnings[0] and "not searched" in warnings[0]
    assert all("broken_" in w for w in warnings[1:6])
    assert "3 more unreadable images" in warnings[6]


def test_a_folder_reads_every_kind_of_image_and_names_what_it_cannot(tmp_path, caplog):
    """JPEGs under other names are read; a photo this OpenCV cannot decode (AVIF, HEIC) is named as such, in a
    folder and alone; a link in a loop is skipped with the others."""
    image = np.full((40, 50, 3), 90, np.uint8)
    for name in ("a.jpg", "b.jfif", "c.jpe", "d.pnm"):
        (tmp_path / name).write_bytes(cv2.imencode(".ppm" if name.endswith(".pnm") else ".jpg", image)[1].tobytes())
    (tmp_path / "e.avif").write_bytes(b"\0\0\0\x1cftypavif" + bytes(64))
    os.symlink(tmp_path / "loop2.jpg", tmp_path / "loop1.jpg")
    os.symlink(tmp_path / "loop1.jpg", tmp_path / "loop2.jpg")
    with caplog.at_level(logging.WARNING, logger="tracker.sources"):
        frames, src = _read_all(tmp_path)
    assert [Path(f.source).name for f in frames] == ["a.jpg", "b.jfif", "c.jpe", "d.pnm"]
    assert len(src.skipped) == 3
    assert sum("e.avif" in s and "AVIF and HEIC images cannot be decoded" in s for s in src.skipped) == 1
    assert sum("loop" in s and "cannot read it" in s for s in src.skipped) == 2
    with pytest.raises(SourceError, match="e.avif.*AVIF and HEIC images cannot be decoded"):
        open_source(str(tmp_path / "e.avif"))


def test_a_file_or_folder_that_may_not_be_read_says_so(video, tmp_path):
    """A video without read permission is not called "not a video", nor a file behind a folder that may not
    be entered "not found"."""
    unreadable = tmp_path / "clip.avi"
    unreadable.write_bytes(video.read_bytes())
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "face.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    script = ("import sys\nfrom tracker.sources import SourceError, open_source\nfor spec in sys.argv[1:]:\n"
              "    try:\n        open_source(spec)\n    except SourceError as e:\n        print(e)\n")
    unreadable.chmod(0)
    locked.chmod(0)
    try:
        proc = run_without_root_rights([sys.executable, "-c", script, str(unreadable), str(locked / "face.jpg")],
                                       cwd=REPO, timeout=60)
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    said = proc.stdout.splitlines()
    assert said == [f"cannot read video '{unreadable}': Permission denied",
                    f"source '{locked / 'face.jpg'}' cannot be reached: permission denied"], proc.stdout


def test_truncated_images_skipped_quietly(tmp_path, capfd):
    img = np.random.default_rng(2).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    for ext in (".png", ".bmp", ".ppm", ".tiff"):
        data = cv2.imencode(ext, img)[1].tobytes()
        (tmp_path / f"cut{ext}").write_bytes(data[: len(data) // 2])
    cv2.imwrite(str(tmp_path / "z_ok.png"), img)
    frames, src = _read_all(tmp_path)
    assert [Path(f.source).name for f in frames] == ["z_ok.png"]
    assert np.array_equal(frames[0].image, img)
    assert len(src.skipped) == 4
    assert capfd.readouterr().err == ""  # OpenCV's own ERROR/WARN lines for these are silenced


def test_empty_or_junk_folder_fails(tmp_path):
    with pytest.raises(SourceError, match="no readable images"):
        open_source(str(tmp_path))
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.jpg").write_bytes(b"")
    (tmp_path / "c.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(SourceError, match="no readable images") as exc:
        open_source(str(tmp_path))
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(("w", "h", "ext"), [(32, 32, ".png"), (4000, 3000, ".jpg")])
def test_image_sizes_pass_through(tmp_path, w, h, ext):
    path = tmp_path / f"img{ext}"
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (0, 0, 255)
    cv2.imwrite(str(path), img)
    frames, src = _read_all(path)
    assert len(frames) == 1 and src.total_frames == 1
    assert frames[0].image.shape == (h, w, 3)
    assert frames[0].source == str(path) and frames[0].index == 0
    _assert_bgr8(frames[0].image)


def test_single_corrupt_image_fails(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8 this is not really a jpeg")
    with pytest.raises(SourceError, match="broken.jpg"):
        open_source(str(path))


def _with_declared_size(data: bytes, width: int, height: int) -> bytes:
    """An encoded PNG, JPEG, BMP or PPM whose header declares another size (the pixel data left as it was)."""
    if data.startswith(b"BM"):
        return data[:18] + struct.pack("<ii", width, height) + data[26:]
    if data.startswith(b"P6"):
        return b"P6\n%d %d\n255\n" % (width, height) + data[data.index(b"255\n") + 4:]
    if data.startswith(b"\x89PNG"):
        import zlib

        ihdr = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
        return data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]
    sof = data.index(b"\xff\xc0")
    return data[:sof + 5] + struct.pack(">HH", height, width) + data[sof + 9:]


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".ppm"])
def test_a_picture_too_large_to_decode_says_so(tmp_path, ext):
    """OpenCV decodes no picture over 2^30 px and says only that there is none; the header's size says why."""
    from tracker.sources import declared_size

    picture = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    data = cv2.imencode(ext, picture)[1].tobytes()
    assert declared_size(data) == (40, 30)
    path = tmp_path / f"panorama{ext}"
    path.write_bytes(_with_declared_size(data, 40000, 30000))
    with pytest.raises(SourceError, match=r"panorama.*40000x30000 px, more than the 1,073,741,824 pixels OpenCV "
                                          r"decodes.*OPENCV_IO_MAX_IMAGE_PIXELS"):
        open_source(str(path))


def test_a_png_wider_than_libpng_decodes_says_so_in_one_line(tmp_path):
    """libpng takes at most 1,000,000 px a side and prints its own refusal to stderr; the header is read first,
    so the run says why in one line of its own."""
    data = cv2.imencode(".png", np.zeros((30, 40, 3), np.uint8))[1].tobytes()
    path = tmp_path / "strip.png"
    path.write_bytes(_with_declared_size(data, 2_000_000, 10))
    proc = subprocess.run([sys.executable, str(REPO / "run_tracker.py"), str(path), "--quiet"], capture_output=True,
                          text=True, cwd=tmp_path, check=False, timeout=120)
    said = (f"ERROR: cannot read image '{path}': the picture is 2000000x10 px; PNG pictures are decoded up to "
            "1,000,000 px a side")
    assert proc.returncode == 2 and proc.stderr.splitlines() == [said], proc.stderr


def test_a_png_cut_short_says_so_in_one_line(tmp_path):
    """libpng prints "PNG input buffer is incomplete" of a PNG cut short; its chunks are walked first, so the run
    says why in one line of its own. Bytes after the end chunk are no cut."""
    data = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))[1].tobytes()
    cut, padded = tmp_path / "cut.png", tmp_path / "padded.png"
    cut.write_bytes(data[:len(data) // 2])
    padded.write_bytes(data + b"bytes after the end")
    proc = subprocess.run([sys.executable, str(REPO / "run_tracker.py"), str(cut), "--quiet"], capture_output=True,
                          text=True, cwd=tmp_path, check=False, timeout=120)
    said = (f"ERROR: cannot read image '{cut}': the PNG is cut short (it ends before its last chunk), as an "
            "unfinished download or copy is")
    assert proc.returncode == 2 and proc.stderr.splitlines() == [said], proc.stderr
    frames, _ = _read_all(padded)
    assert frames[0].image.shape == (60, 80, 3)


def test_the_declared_size_of_pngs_and_jpegs_is_their_size(afw_dir):
    from tracker.sources import declared_size

    rng = np.random.default_rng(1)
    for h, w in ((1, 1), (7, 11), (480, 640), (1000, 37)):
        picture = rng.integers(0, 256, (h, w), dtype=np.uint8)
        for ext, flags in ((".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".bmp", []),
                           (".pgm", []), (".pbm", []), (".pgm", [cv2.IMWRITE_PXM_BINARY, 0])):
            assert declared_size(cv2.imencode(ext, picture, flags)[1].tobytes()) == (w, h), (ext, flags, w, h)
    for path in sorted(afw_dir.glob("*.jpg"))[:20]:  # camera JPEGs: EXIF and other segments before the frame
        h, w = cv2.imread(str(path)).shape[:2]
        assert declared_size(path.read_bytes()) == (w, h), path.name
    assert declared_size(b"GIF89a\x01\x00\x01\x00") is None and declared_size(b"\xff\xd8\xff\xe0\x00") is None
    assert declared_size(b"P6\n# made by hand, 99 99\n640\t480\n255\n") == (640, 480)
    top_down = bytearray(cv2.imencode(".bmp", np.zeros((7, 11), np.uint8))[1].tobytes())
    top_down[22:26] = struct.pack("<i", -7)  # rows stored top first
    assert declared_size(bytes(top_down)) == (11, 7)
    top_down[18:22] = struct.pack("<i", -11)  # no width: no BMP
    assert declared_size(bytes(top_down)) is None
    assert declared_size(b"BMW service log: oil changed at 40000 km") is None  # no BMP header size
    assert declared_size(b"P5#made by hand\n12 13\n255\n") == (12, 13)
    # Two full-size ICC segments (APP2) before the frame header, as photo editors write them.
    jpeg = cv2.imencode(".jpg", np.zeros((7, 11), np.uint8))[1].tobytes()
    icc = b"\xff\xe2" + struct.pack(">H", 65535) + b"ICC_PROFILE\x00" + bytes(65521)
    assert declared_size(jpeg[:2] + 2 * icc + jpeg[2:]) == (11, 7)


def test_the_pixel_limit_is_read_as_opencv_reads_it(tmp_path, monkeypatch):
    """OPENCV_IO_MAX_IMAGE_PIXELS as set by the user: the message gives the limit OpenCV applied, and a value
    OpenCV cannot read (on which importing OpenCV aborts the process) is one line, before OpenCV is loaded."""
    from tracker.opencv_env import OpenCVSettingError, max_decoded_pixels

    path = tmp_path / "square.png"
    cv2.imwrite(str(path), np.zeros((400, 400), np.uint8))
    probe = f"from tracker.sources import open_source; open_source({str(path)!r})"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=False,
                          env={**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": "100KB"})  # OpenCV reads it once
    assert "400x400 px, more than the 102,400 pixels OpenCV decodes" in proc.stderr, proc.stderr
    for value, pixels in (("100", 100), ("00100", 100), ("3kb", 3072), ("2Mb", 2 << 20),
                          (str((1 << 64) - 1), (1 << 64) - 1), ("17592186044416MB", 0),  # 2^64, wrapped round
                          ("18014398509481985KB", 1024)):
        monkeypatch.setenv("OPENCV_IO_MAX_IMAGE_PIXELS", value)
        assert max_decoded_pixels() == pixels, value
    for value in ("abc", "", "0.1M", "1GB", " 50000", "-5", "\u0661\u0662", str(1 << 64)):
        monkeypatch.setenv("OPENCV_IO_MAX_IMAGE_PIXELS", value)
        with pytest.raises(OpenCVSettingError, match=f"OPENCV_IO_MAX_IMAGE_PIXELS is {value!r}, which OpenCV "):
            max_decoded_pixels()
    for value in ("abc", "1GB", str(1 << 64)):  # each aborts `import cv2`
        proc = subprocess.run([sys.executable, str(REPO / "run_tracker.py"), str(path), "--quiet"],
                              capture_output=True, text=True, cwd=tmp_path, check=False, timeout=60,
                              env={**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": value})
        said = (f"ERROR: OPENCV_IO_MAX_IMAGE_PIXELS is {value!r}, which OpenCV cannot read (it takes digits, "
                "optionally followed by KB or MB, as 2000000000 or 2000MB, below 2^64); correct or unset it")
        assert proc.returncode == 2 and proc.stderr.splitlines() == [said], proc.stderr


@pytest.mark.parametrize("name", ["phone.jpg", "phone.jfif", "phone.JPE"])
def test_exif_orientation_is_applied(tmp_path, name):
    # A landscape JPEG tagged "rotate 90° CW" (orientation 6) must arrive as portrait, bright band on top, under
    # any of JPEG's names (a .jfif read as a video would keep neither its orientation nor its pixels' place).
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :10] = 255
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    tiff = b"MM" + struct.pack(">HI", 42, 8) + struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
    tiff += struct.pack(">I", 0)
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\0\0" + tiff
    path = tmp_path / name
    path.write_bytes(jpg[:2] + app1 + jpg[2:])
    (frame,), _ = _read_all(path)
    assert frame.image.shape == (80, 40, 3)
    assert frame.image[:10].mean() > 200 and frame.image[20:].mean() < 30


def test_normalisation_of_pixel_formats():
    assert to_bgr8(np.full((5, 6, 1), 7, np.uint8)).tolist() == np.full((5, 6, 3), 7).tolist()
    f = to_bgr8(np.array([[[-1.0, 0.5, 2.0]]], np.float32))
    assert f.tolist() == [[[0, 128, 255]]]
    assert to_bgr8(np.full((2, 2), 65535, np.uint16)).tolist() == np.full((2, 2, 3), 255).tolist()
    # An array's 16 bits map the same way whatever its content (a sequence never changes brightness).
    assert to_bgr8(np.array([[1023, 30000]], np.uint16))[0, :, 0].tolist() == [3, 117]
    assert to_bgr8(np.array([[1000, 40000]], ">u2"))[0, :, 0].tolist() == [3, 156]  # big-endian, as native
    strided = np.zeros((10, 10, 3), np.uint8)[:, ::2]
    assert to_bgr8(strided).flags["C_CONTIGUOUS"]
    with pytest.raises(ValueError):
        to_bgr8(np.zeros((4, 4, 5), np.uint8))


def test_a_10_bit_pgm_reads_as_bright_as_its_8_bit_twin(tmp_path):
    picture = np.random.default_rng(3).integers(0, 256, (12, 16)).astype(np.uint16)
    deep = picture * 4 + 3  # 10 bits: maxval 1023
    (tmp_path / "deep.pgm").write_bytes(b"P5 16 12 1023\n" + deep.astype(">u2").tobytes())
    (frame,), _ = _read_all(tmp_path / "deep.pgm")
    assert np.abs(frame.image[:, :, 0].astype(int) - picture).max() <= 1


def test_a_float_picture_of_another_range_is_read_from_that_range_with_a_warning(tmp_path, caplog):
    """QA: a 32-bit TIFF holding 0-255 read as white (clipped to [0, 1]) and showed no face, without a word. OpenCV
    writes float colour TIFFs lossily (LogLuv): a 0-1 picture comes back a little beyond [0, 1], which is no
    other range."""
    picture = np.random.default_rng(4).integers(0, 256, (24, 32, 3)).astype(np.float32)
    # An HDR frame (0-4) and a -1..1 picture are no 0-255 ones. (A colour float TIFF, LogLuv, keeps no sign: the
    # signed one is grey, stored as plain floats.)
    stored = {"unit": picture / 255, "bytes": picture, "wide": picture * 10 - 300, "hdr": picture / 64,
              "signed": picture[:, :, 0] / 127.5 - 1}
    for name, values in stored.items():
        cv2.imwrite(str(tmp_path / f"{name}.tiff"), values)
    frames = {}
    with caplog.at_level(logging.WARNING, logger="tracker.sources"):
        (frames["unit"],), _ = _read_all(tmp_path / "unit.tiff")
        assert caplog.records == []
        for name in ("bytes", "wide", "hdr", "signed"):
            (frames[name],), _ = _read_all(tmp_path / f"{name}.tiff")
    assert [r.getMessage().split(": ")[-1] for r in caplog.records] == [
        "read as 0-255", "read as its own range", "read as its own range", "read as its own range"]
    for name in ("unit", "bytes"):
        assert np.abs(frames[name].image.astype(float) - picture).mean() < 3
    for name in ("wide", "hdr", "signed"):
        image, truth = frames[name].image, picture if name != "signed" else picture[:, :, :1].repeat(3, 2)
        assert np.corrcoef(image.ravel(), truth.ravel())[0, 1] > 0.99 and image.max() > 200, name


def test_the_tracker_called_as_a_library_takes_any_image_layout(afw_dir):
    """FaceTracker.process normalises what it is handed as the sources do: grey, BGRA, 16-bit and float images
    find the same face; an empty or five-channel array is a ValueError that says so."""
    from tracker.pipeline import FaceTracker, TrackerConfig

    tracker = FaceTracker(TrackerConfig(backend="onnxruntime"))
    image = cv2.imread(str(afw_dir / "1051618982_1.jpg"))
    (face,) = tracker.process(image, still=True).faces
    layouts = {"grey": cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), "BGRA": cv2.cvtColor(image, cv2.COLOR_BGR2BGRA),
               "16-bit": image.astype(np.uint16) * 257, "float": image.astype(np.float32) / 255.0}
    eyes = np.linalg.norm(face.landmarks[36] - face.landmarks[45])
    for name, other in layouts.items():
        (same,) = tracker.process(other, still=True).faces
        # The same pixels give the same points; grey is another picture of the face, so near them.
        limit = 0.05 * eyes if name == "grey" else 0.5
        assert np.abs(same.landmarks - face.landmarks).max() < limit, name
    for bad, words in ((image[:0], "empty"), (np.zeros((0, 0), np.uint8), "empty"),
                       (np.zeros((0, 0, 4), np.uint8), "empty"), (np.zeros((8, 8, 5), np.uint8), "shape"),
                       (image.astype(np.float32), "spans 0 to 255"), (image / 127.5 - 1.0, "spans -1 to 1")):
        with pytest.raises(ValueError, match=words):
            tracker.process(bad, still=True)
    # Rounding a hair over 1, and NaN (black), are taken.
    assert len(tracker.process(np.minimum(image / 255.0 + 0.001, 1.0019), still=True).faces) == 1
    nan_corner = image / 255.0
    nan_corner[:5, :5] = np.nan
    assert len(tracker.process(nan_corner, still=True).faces) == 1


# --- missing things ----------------------------------------------------------------------------------


def test_missing_path_and_camera(tmp_path):
    missing = tmp_path / "nope" / "clip.mp4"
    with pytest.raises(SourceError) as exc:
        open_source(str(missing))
    assert str(missing) in str(exc.value) and "not found" in str(exc.value)
    with pytest.raises(SourceError, match="camera 7"):
        open_source(7)
    with pytest.raises(SourceError, match="camera 7"):
        open_source("7")


def test_missing_camera_prints_nothing_from_opencv():
    # OpenCV/FFmpeg write "[ WARN:0@0.01] ..." lines to stderr on their own; the module silences them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    code = "import tracker.sources as s\ntry:\n    s.open_source(7)\nexcept s.SourceError as e:\n    print(e)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.stdout.strip() == "camera 7 could not be opened (no such device or it is busy)"
    assert out.stderr == ""


# --- video files -------------------------------------------------------------------------------------


def test_video_every_frame_in_order(video):
    frames, src = _read_all(video)
    assert len(frames) == N_FRAMES
    assert src.total_frames == N_FRAMES and src.fps == pytest.approx(FPS) and not src.is_live
    assert [f.index for f in frames] == list(range(N_FRAMES))
    np.testing.assert_allclose([f.time_s for f in frames], np.arange(N_FRAMES) / FPS, atol=1e-6)
    levels = [float(f.image.mean()) for f in frames]
    np.testing.assert_allclose(levels, [_level(i) for i in range(N_FRAMES)], atol=3)
    assert all(f.source == str(video) and f.image.shape == (48, 64, 3) for f in frames)
    assert src.error is None and src.dropped == 0
    src.close()  # idempotent


def test_a_container_with_a_nonsense_frame_rate_still_gets_increasing_times(video, tmp_path):
    """An AVI whose header declares 90000 fps (its timestamps 11 µs apart): the rate is treated as unknown,
    and so are its timestamps, so frames come 1/30 s apart and the smoothing does not freeze."""
    data = bytearray(video.read_bytes())
    at = data.index(b"strh")
    data[at + 28:at + 36] = struct.pack("<II", 1, 90000)  # the stream header's dwScale, dwRate
    bad = tmp_path / "fast.avi"
    bad.write_bytes(bytes(data))
    with open_source(str(bad)) as probe:
        assert probe.fps is None  # OpenCV reads 90000, which the source refuses
    frames, _ = _read_all(bad)
    np.testing.assert_allclose([f.time_s for f in frames], np.arange(N_FRAMES) / 30.0, atol=1e-9)


class _StampedCapture:
    """Stands in for cv2.VideoCapture: blank frames with these container timestamps (ms) at this nominal rate."""

    def __init__(self, stamps: list[float], fps: float, start_frames: float = 0.0, count: int | None = None,
                 suffix: str = ".mkv"):
        self.stamps, self.fps, self.start, self.count, self.at = stamps, fps, start_frames, count, -1
        self.suffix = suffix

    def read(self):
        self.at += 1
        return (True, np.zeros((4, 4, 3), np.uint8)) if self.at < len(self.stamps) else (False, None)

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FRAME_COUNT: self.count or len(self.stamps),
                cv2.CAP_PROP_PTS: self.start + max(self.at, 0),
                cv2.CAP_PROP_POS_MSEC: self.stamps[min(self.at, len(self.stamps) - 1)]}[prop]


def _times(capture: _StampedCapture) -> list[float]:
    from tracker.sources import _CaptureReader

    reader = _CaptureReader(capture, "clip", f"clip{capture.suffix}", is_file=True)
    times = []
    while (frame := reader.read()) is not None:
        times.append(frame.time_s)
    return times


@pytest.mark.parametrize("stamps, fps, want", [
    # A negative frame duration in a file makes FFmpeg report the frames after it microseconds apart: each
    # such step becomes the last real one, so the smoothing does not freeze and no two frames share a time.
    ([40.0, 80.0, 120.0, 120.08, 120.16, 240.0, 280.0], 25.0, [40, 80, 120, 160, 200, 240, 280]),
    # A repeated timestamp moves the frame on by a step; the times come back onto the file's clock by half
    # steps, not drifting ahead of it with every repeat.
    ([0, 100, 200, 200, 300, 400, 400, 500, 600], 10.0, [0, 100, 200, 300, 350, 400, 500, 550, 600]),
    # Bursts of frames 33 ms apart, 10 s between them: the file's average rate, 2.65 fps, is what OpenCV
    # reports, and the times within a burst are kept as they are.
    ([0, 33, 67, 10_000, 10_033, 10_067], 2.65, [0, 33, 67, 10_000, 10_033, 10_067]),
    # Frames half a millisecond apart (2000 fps) are real steps.
    ([0, 0.5, 1.0, 1.5], 2000.0, [0, 0.5, 1.0, 1.5]),
])
def test_times_follow_the_files_clock_and_always_increase(stamps, fps, want):
    np.testing.assert_allclose(_times(_StampedCapture(stamps, fps)), np.array(want) / 1000, atol=1e-9)


def test_a_stream_that_starts_late_is_not_called_truncated(caplog):
    """A stream starting 1.4 s into its Matroska container (a cut from a broadcast): FFmpeg counts the frames
    from the container's 0, the times from the stream's first frame. The same count with the frames ending
    early is."""
    stamps = [1000 * k / 30 for k in range(210)]
    with caplog.at_level(logging.WARNING, logger="tracker.sources"):
        _times(_StampedCapture(stamps, 30.0, start_frames=42, count=252))
        assert caplog.records == []
        _times(_StampedCapture(stamps[:150], 30.0, start_frames=42, count=252))
    assert [r.getMessage() for r in caplog.records] == ["clip ended after 150 of 252 frames; the file may be truncated"]
    caplog.clear()
    # An MP4's count is its index's, without the start: one starting late and ending early is still reported.
    with caplog.at_level(logging.WARNING, logger="tracker.sources"):
        _times(_StampedCapture(stamps[:180], 30.0, start_frames=42, count=210, suffix=".mp4"))
    assert [r.getMessage() for r in caplog.records] == ["clip ended after 180 of 210 frames; the file may be truncated"]


def _mp4_boxes(data: bytes, start: int = 0, end: int | None = None):
    """(type, offset) of every box of an MP4, descending into the containers on the way to tkhd."""
    end = len(data) if end is None else end
    while start < end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        yield kind, start
        if kind in (b"moov", b"trak"):
            yield from _mp4_boxes(data, start + 8, start + size)
        start += size


def test_an_mp4_over_http_from_a_server_without_byte_ranges_says_what_it_needs(tmp_path):
    """The shared clips keep their index at the end: over http, FFmpeg seeks back from it to the data, which
    python -m http.server (no byte ranges) cannot serve. QA found the message said only "no frames"."""
    import functools
    import http.server

    (tmp_path / "clip.mp4").write_bytes(shared_path("video", "talking_d0.mp4").read_bytes())

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "clip.bin").write_bytes((tmp_path / "clip.mp4").read_bytes())
    try:
        with pytest.raises(SourceError, match="byte-range requests, or the index moved to the front"):
            list(open_source(f"http://127.0.0.1:{server.server_address[1]}/clip.mp4"))
        with pytest.raises(SourceError, match="delivered no frames$"):  # not named as an MP4: no guess at why
            list(open_source(f"http://127.0.0.1:{server.server_address[1]}/clip.bin"))
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("as_url", [False, True])
def test_a_phone_video_tagged_to_be_turned_is_read_upright(tmp_path, as_url):
    """Portrait frames stored on their side with a display matrix that turns them, as phones record: the
    frames come out as a player shows them, upright, from a file or from a URL (here file://)."""
    upright = np.zeros((96, 48, 3), np.uint8)
    upright[:24] = (0, 0, 255)  # red top: a sideways frame would put it on the left or the right
    path = tmp_path / "phone.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (96, 48))
    assert writer.isOpened()
    for _ in range(3):
        writer.write(cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE))
    writer.release()
    data = bytearray(path.read_bytes())
    tkhd = next(offset for kind, offset in _mp4_boxes(bytes(data)) if kind == b"tkhd")
    # tkhd version 0: its 3×3 display matrix sits 48 bytes in; this one turns the picture 90° clockwise.
    data[tkhd + 48:tkhd + 84] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))
    frames, _ = _read_all(path.as_uri() if as_url else path)
    assert len(frames) == 3 and frames[0].image.shape == (96, 48, 3)
    top, bottom = frames[0].image[:20].mean((0, 1)), frames[0].image[-40:].mean((0, 1))
    assert top[2] > 200 and top[0] < 60 and bottom.max() < 60


def _tagged_mp4(path: Path, stored: np.ndarray, matrix: tuple[int, int, int, int]) -> Path:
    """Two frames of ``stored`` in an MP4 whose track header's display matrix is (a, b, c, d)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, stored.shape[1::-1])
    for _ in range(2):
        writer.write(stored)
    writer.release()
    data = bytearray(path.read_bytes())
    tkhd = next(offset for kind, offset in _mp4_boxes(bytes(data)) if kind == b"tkhd")
    a, b, c, d = matrix
    data[tkhd + 48:tkhd + 84] = struct.pack(">9i", a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))
    return path


def test_a_display_matrix_that_is_no_quarter_turn_is_not_read(tmp_path):
    """A shear (determinant -1, so 'mirrored') or a scale is no turn of the picture: left to OpenCV."""
    from tracker.sources import video_display_matrix

    stored = np.zeros((48, 96, 3), np.uint8)
    for matrix, read in (((1, 1, 0, -1), None), ((2, 0, 0, 1), None), ((0, -1, 1, 0), (0, -1, 1, 0))):
        assert video_display_matrix(str(_tagged_mp4(tmp_path / "t.mp4", stored, matrix))) == read


@pytest.mark.parametrize("matrix", [(-1, 0, 0, 1), (1, 0, 0, -1), (0, 1, 1, 0), (0, -1, -1, 0)])
def test_a_video_tagged_to_be_mirrored_is_read_as_tagged(tmp_path, matrix):
    """A display matrix that mirrors the picture (alone, or with a turn) is shown as a player shows it. OpenCV
    reads only such a tag's turn: a clip mirrored left to right came out upside down, one mirrored top to
    bottom unturned. Each stored pixel (x, y) must show at (a·x + c·y, b·x + d·y), moved into the frame."""
    stored = np.zeros((48, 96, 3), np.uint8)
    stored[:, :24] = (0, 0, 255)  # red left, blue top: every turn and mirror of it differs
    stored[:12] = (255, 0, 0)
    path = _tagged_mp4(tmp_path / "front.mp4", stored, matrix)
    a, b, c, d = matrix
    y, x = np.mgrid[0:48, 0:96]
    shown_x, shown_y = a * x + c * y, b * x + d * y
    expected = np.zeros((shown_y.max() - shown_y.min() + 1, shown_x.max() - shown_x.min() + 1, 3), np.uint8)
    expected[shown_y - shown_y.min(), shown_x - shown_x.min()] = stored
    frames, _ = _read_all(path)
    assert len(frames) == 2 and frames[0].image.shape == expected.shape
    assert np.abs(frames[0].image.astype(int) - expected).mean() < 12


def test_truncated_video_ends_with_warning(video, tmp_path, caplog, capfd):
    # Cut halfway through the frame data (the 'movi' list), keeping the AVI header: a cut inside the
    # header (which is half of this tiny file) leaves nothing FFmpeg can open.
    data = video.read_bytes()
    movi, idx1 = data.index(b"movi"), data.index(b"idx1")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: (movi + idx1) // 2])  # OpenCV 4.11/FFmpeg decodes 9 frames of this
    with caplog.at_level(logging.WARNING, logger="tracker.sources"):
        frames, _ = _read_all(cut)
    n = len(frames)
    assert 0 < n < N_FRAMES
    assert [f.index for f in frames] == list(range(n))
    np.testing.assert_allclose([f.image.mean() for f in frames], [_level(i) for i in range(n)], atol=3)
    msgs = [r.getMessage() for r in caplog.records if r.name == "tracker.sources"]
    assert msgs == [f"video '{cut}' ended after {n} of {N_FRAMES} frames; the file may be truncated"]
    assert capfd.readouterr().err == ""  # no FFmpeg chatter


def test_variable_rate_mkv_is_not_called_truncated(tmp_path, caplog):
    # Declared 50 fps over frames 40 ms apart: FFmpeg counts twice the frames the file holds.
    path = tmp_path / "vfr.mkv"
    write_variable_rate_mkv(path, [np.full((48, 64, 3), _level(i), np.uint8) for i in range(N_FRAMES)], FPS, 2 * FPS)
    data = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="tracker.sources"):
        frames, src = _read_all(path)
    assert src.total_frames == 2 * N_FRAMES and len(frames) == N_FRAMES
    np.testing.assert_allclose(np.diff([f.time_s for f in frames]), 1 / FPS, atol=0.002)
    assert [r.getMessage() for r in caplog.records if r.name == "tracker.sources"] == []
    # The same file cut short is still reported.
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with caplog.at_level(logging.WARNING, logger="tracker.sources"):
        frames, _ = _read_all(cut)
    assert 0 < len(frames) < N_FRAMES - 2
    msgs = [r.getMessage() for r in caplog.records if r.name == "tracker.sources"]
    assert msgs == [f"video '{cut}' ended after {len(frames)} of {2 * N_FRAMES} frames; the file may be truncated"]


def test_damaged_data_mid_file_is_skipped_and_the_frames_after_it_read(talking_clip, tmp_path, caplog, capfd):
    """A zeroed 4 KiB block 40% into an MPEG-4 file: a few reads fail there, then frames decode again. The
    source reads on to the end and says what it skipped, instead of ending there as if truncated."""
    cap = cv2.VideoCapture(str(talking_clip))
    path = tmp_path / "damaged.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (160, 160))
    for _ in range(40):
        writer.write(cv2.resize(cap.read()[1], (160, 160)))
    writer.release()
    data = bytearray(path.read_bytes())
    at = int(0.4 * len(data))
    data[at:at + 4096] = bytes(4096)
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="tracker.sources"):
        frames, _ = _read_all(path)
    assert len(frames) >= 30, len(frames)  # OpenCV 4.11 reads 36 of the 40, 15 before the damage
    # The frames after the damage keep their numbers in the file, as their timestamps tell them.
    assert [f.index for f in frames] == [round(f.time_s * FPS) for f in frames] != list(range(len(frames)))
    assert np.all(np.diff([f.time_s for f in frames]) > 0)
    [message] = [r.getMessage() for r in caplog.records if r.name == "tracker.sources"]
    assert message.startswith(f"video '{path}': damaged data after frame ") and message.endswith("was skipped")
    assert capfd.readouterr().err == ""  # no FFmpeg chatter


def test_a_truncated_video_with_damage_before_its_cut_says_both(tmp_path, caplog, capfd):
    """An MJPEG AVI with one frame's data garbled and the file cut off later: the frames after the damage keep
    their numbers, and the end's warning counts the frame lost with the frames read."""
    path = tmp_path / "both.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(40):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))  # noise: each frame's JPEG is large
    writer.release()
    data = bytearray(path.read_bytes())
    starts = [k for k in range(len(data) - 1) if data[k:k + 2] == b"\xff\xd8"]
    assert len(starts) == 40
    data[starts[10] + 100:starts[10] + 2100] = np.random.default_rng(1).bytes(2000)
    path.write_bytes(bytes(data[:starts[25] + 100]))
    with caplog.at_level(logging.WARNING, logger="tracker.sources"):
        frames, _ = _read_all(path)
    assert [f.index for f in frames] == [*range(10), *range(11, 25)]
    assert [r.getMessage() for r in caplog.records][-1] == (
        f"video '{path}' ended after 25 of 40 frames (1 of them could not be decoded); the file may be truncated")
    assert capfd.readouterr().err == ""  # no FFmpeg chatter


def test_fake_or_header_cut_video_fails(video, tmp_path, capfd):
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(SourceError, match="cannot read video .*fake.mp4.*not a video or the file is corrupt"):
        open_source(str(fake))
    headless = tmp_path / "headless.avi"
    headless.write_bytes(video.read_bytes()[:2000])  # ends inside the AVI header
    with pytest.raises(SourceError, match="headless.avi"):
        open_source(str(headless))
    assert capfd.readouterr().err == ""  # neither FFmpeg nor OpenCV's AVI parser printed anything


def test_an_empty_video_or_one_cut_off_before_its_index_says_so(tmp_path, capfd):
    """A zero-byte .mp4, an AVI without frames, and an MP4 cut off before the index its writer puts last (a recording
    stopped by a crash): each says what it is, not just "corrupt"; a file of boxes that is no MP4 is still "not a
    video"."""
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match=r"cannot read video .*empty.mp4.*: the file is empty$"):
        open_source(str(empty))
    # A whole AVI with no frame in it (its writer closed before the first).
    cv2.VideoWriter(str(tmp_path / "none.avi"), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (64, 48)).release()
    with pytest.raises(SourceError, match=r"cannot read video .*none.avi.*: it holds no frames \(none that can be decoded\)$"):
        open_source(str(tmp_path / "none.avi"))
    whole = tmp_path / "whole.mp4"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (64, 48))
    for i in range(N_FRAMES):
        writer.write(np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    data = whole.read_bytes()
    assert data[4:8] == b"ftyp" and data.rindex(b"moov") > len(data) // 2  # OpenCV's writer puts it last
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(SourceError, match=r"cut.mp4.*: the file ends before its index \(the 'moov' box"):
        open_source(str(cut))
    # An old QuickTime movie (no 'ftyp') cut off before its index; and one of a stream's segments, which has none.
    (tmp_path / "classic.mov").write_bytes(b"\x00\x00\x00\x08wide" + b"\x00\x10\x00\x00mdat" + bytes(5000))
    with pytest.raises(SourceError, match=r"classic.mov.*: the file ends before its index"):
        open_source(str(tmp_path / "classic.mov"))
    (tmp_path / "segment.mp4").write_bytes(b"\x00\x00\x00\x18stypmsdh\x00\x00\x00\x00msdh" + b"\x00\x00\x00\x10moof"
                                           + bytes(8) + b"\x00\x10\x00\x00mdat" + bytes(5000))
    with pytest.raises(SourceError, match="segment.mp4.*not a video or the file is corrupt"):
        open_source(str(tmp_path / "segment.mp4"))
    boxes = tmp_path / "boxes.mp4"
    boxes.write_bytes(b"\x00\x00\x00\x10free" + bytes(8) + np.random.default_rng(0).bytes(3000))
    with pytest.raises(SourceError, match="boxes.mp4.*not a video or the file is corrupt"):
        open_source(str(boxes))
    assert capfd.readouterr().err == ""


def test_a_picture_name_on_something_else_says_what_it_holds(video, tmp_path, caplog):
    """A video or a HEIC photo under a .jpg name says what it holds; a multi-page TIFF is read, and the pages
    after its first are said to be left out."""
    for name, data, words in (("clip.jpg", video.read_bytes(), "it holds a video (AVI), not a picture: name it .avi"),
                              ("phone.jpg", b"\x00\x00\x00\x18ftypheic" + bytes(100), "it is a HEIC or AVIF picture"),
                              # a HEIF whose major brand says little, its compatible brands the rest
                              ("iphone.jpg", b"\x00\x00\x00\x18ftypMiHE\x00\x00\x00\x00mif1heic" + bytes(100),
                               "it is a HEIC or AVIF picture"),
                              ("song.jpg", b"\x00\x00\x00\x14ftypM4A \x00\x00\x00\x00isom" + bytes(100),
                               "it holds sound (M4A), not a picture"),
                              ("noise.jpg", np.random.default_rng(0).bytes(500), "not an image or the file is corrupt")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SourceError, match=re.escape(f"cannot read image '{tmp_path / name}': {words}")):
            open_source(str(tmp_path / name))
    pages = tmp_path / "pages.tif"
    assert cv2.imwritemulti(str(pages), [np.full((40, 30, 3), 60 * k, np.uint8) for k in range(1, 4)])
    with caplog.at_level(logging.WARNING, logger="tracker.sources"):
        frames, _ = _read_all(pages)
    assert len(frames) == 1 and frames[0].image.shape == (40, 30, 3) and frames[0].image.mean() == 60
    assert [r.getMessage() for r in caplog.records] == [
        f"'{pages}' holds 3 images (a multi-page TIFF): only the first is tracked"]
    from tracker.sources import _tiff_pages

    # A BigTIFF's chain of two (empty) image directories: 8-byte offsets and counts.
    big = b"II+\x00\x08\x00\x00\x00" + struct.pack("<QQQQQ", 16, 0, 32, 0, 0)
    assert _tiff_pages(np.frombuffer(big, np.uint8)) == 2
    looped = b"II*\x00" + struct.pack("<IHI", 8, 0, 8)  # a directory that names itself next
    assert _tiff_pages(np.frombuffer(looped, np.uint8)) == 1
    single = tmp_path / "single.tif"
    cv2.imwrite(str(single), np.zeros((8, 8), np.uint8))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tracker.sources"):
        _read_all(single)
    assert not caplog.records


def test_close_during_iteration_stops(video):
    src = open_source(str(video))
    it = iter(src)
    next(it)
    src.close()
    assert list(it) == []


# --- live mode ---------------------------------------------------------------------------------------


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tracker.sources reader")]


def test_live_file_drops_stale_frames(video):
    src = open_source(str(video), live=True)
    assert src.is_live and src.fps == pytest.approx(FPS)
    assert len(_reader_threads()) == 1
    frames = []
    t0 = time.perf_counter()
    for frame in src:
        frames.append(frame)
        time.sleep(3 / FPS)  # a consumer three times slower than the source
    elapsed = time.perf_counter() - t0
    indices = [f.index for f in frames]
    assert 3 <= len(frames) < N_FRAMES
    assert src.dropped > 0
    assert len(frames) + src.dropped == N_FRAMES  # every frame read was either delivered or dropped
    assert all(b > a for a, b in itertools.pairwise(indices))
    assert indices[-1] == N_FRAMES - 1  # the newest frame at the end of the file is delivered
    assert elapsed >= (N_FRAMES - 1) / FPS * 0.9  # paced at the file's rate, not as fast as possible
    assert src.error is None
    src.close()
    assert _reader_threads() == []


def test_live_close_early_joins_thread(video):
    with open_source(str(video), live=True) as src:
        next(iter(src))
    assert _reader_threads() == []
    assert list(src) == []


class _FakeCamera:
    """Stands in for cv2.VideoCapture(index): 5 grey frames, then the device 'disappears'."""

    instances: ClassVar[list["_FakeCamera"]] = []

    def __init__(self, index, *args):
        self.props: dict[int, float] = {}
        self.n = 0
        self.released = False
        _FakeCamera.instances.append(self)

    def isOpened(self):
        return True

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        return self.props.get(prop, 0.0)

    def read(self):
        if self.n < 5:
            self.n += 1
            time.sleep(0.01)
            return True, np.full((48, 64), self.n, np.uint8)
        return False, None

    def release(self):
        self.released = True


def test_camera_that_disappears_ends_with_error(monkeypatch):
    monkeypatch.setattr("tracker.sources.cv2.VideoCapture", _FakeCamera)
    monkeypatch.setattr("tracker.sources._STALL_S", 0.2)
    _FakeCamera.instances.clear()
    src = open_source(3, camera_size=(320, 240), camera_fps=15)
    cam = _FakeCamera.instances[0]
    assert cam.props == {cv2.CAP_PROP_FRAME_WIDTH: 320, cv2.CAP_PROP_FRAME_HEIGHT: 240, cv2.CAP_PROP_FPS: 15}
    assert src.is_live and src.total_frames is None and src.name == "camera 3"
    frames = list(src)  # a fast consumer: ends when the device stops, instead of waiting forever
    assert 1 <= len(frames) <= 5 and len(frames) + src.dropped == 5
    assert all(f.source == "3" and f.image.shape == (48, 64, 3) for f in frames)
    assert [int(f.image[0, 0, 0]) for f in frames] == [f.index + 1 for f in frames]
    times = [f.time_s for f in frames]
    assert times == sorted(times) and times[0] >= 0
    assert src.error == "camera 3 stopped delivering frames"
    src.close()
    assert cam.released and _reader_threads() == []


def test_the_readme_python_example_runs(capsys):
    """README's "From Python" block, run as written on a shared clip in place of clip.mp4."""
    clip = REPO.parent / "shared" / "data" / "video" / "talking_d0.mp4"
    if not clip.is_file():
        pytest.skip(f"shared clip {clip} is absent")
    readme = (REPO / "README.md").read_text()
    section = readme.split("## From Python", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert code.count('"clip.mp4"') == 1
    exec(code.replace('"clip.mp4"', repr(str(clip))), {})  # noqa: S102 -- the README's own example
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 70  # one face in (nearly) every one of the clip's 78 frames
    index, face_id, yaw, jaw = lines[-1].split()
    assert int(index) == 77
    assert int(face_id) == 1 and abs(float(yaw)) < 60 and 0.0 <= float(jaw) <= 1.0
    # The second block: the same clip pipelined, every frame in order.
    code = section.split("```python\n")[2].split("```", 1)[0]
    assert code.count('"clip.mp4"') == 1 and "process_stream" in code
    exec(code.replace('"clip.mp4"', repr(str(clip))), {})  # noqa: S102 -- the README's own example
    lines = capsys.readouterr().out.splitlines()
    assert [int(line.split()[0]) for line in lines] == list(range(78))


def test_a_stop_ends_the_wait_for_a_stream_that_never_answers(silent_host):
    url, accepted = silent_host
    if not cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG):
        pytest.skip("this OpenCV build has no FFmpeg backend, which is what waits on a stream")
    stop_at = time.monotonic() + 0.5
    with pytest.raises(SourceError, match="stopped while opening stream"):
        open_source(url, cancelled=lambda: time.monotonic() > stop_at)
    assert time.monotonic() - stop_at < 1.0  # not FFmpeg's 10 s open timeout
    assert accepted.is_set()  # it was waiting on the server, not failing at once


@pytest.mark.parametrize("url, shown", [
    ("rtsp://admin:secret@10.0.0.2/live", "rtsp://admin:***@10.0.0.2/live"),
    ("http://admin:p@ss@127.0.0.1:9/x", "http://admin:***@127.0.0.1:9/x"),  # '@' inside the password
    ("http://user@host/path@x", "http://user@host/path@x"),  # no password; '@' in the path is not one
    ("http://host/a:b@c", "http://host/a:b@c"),
])
def test_stream_passwords_are_never_shown(url, shown):
    from tracker.sources import _redact_url

    assert _redact_url(url) == shown


def _exif_orientation(value: int) -> bytes:
    """A big-endian TIFF block with one IFD entry: Orientation (0x0112, SHORT) = value."""
    return (b"MM\x00*" + (8).to_bytes(4, "big") + (1).to_bytes(2, "big") + (0x0112).to_bytes(2, "big")
            + (3).to_bytes(2, "big") + (1).to_bytes(4, "big") + value.to_bytes(2, "big") + b"\x00\x00"
            + bytes(4))


def _webp_with_exif(image: np.ndarray, orientation: int) -> bytes:
    """The extended WebP layout: VP8X (EXIF flag, canvas size), the picture's chunk, then the EXIF chunk."""
    simple = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 100])[1].tobytes()
    picture = simple[12:]  # the 'VP8 ' or 'VP8L' chunk
    h, w = image.shape[:2]
    vp8x = b"VP8X" + (10).to_bytes(4, "little") + bytes([0x08, 0, 0, 0]) + (w - 1).to_bytes(3, "little") \
        + (h - 1).to_bytes(3, "little")
    exif = _exif_orientation(orientation)
    chunk = b"EXIF" + len(exif).to_bytes(4, "little") + exif + (b"\x00" if len(exif) % 2 else b"")
    body = b"WEBP" + vp8x + picture + chunk
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def _jpeg_with_exif(image: np.ndarray, orientation: int) -> bytes:
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()
    app1 = b"Exif\x00\x00" + _exif_orientation(orientation)
    return jpeg[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + jpeg[2:]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_webp_is_turned_upright_by_its_exif_as_jpeg_is(tmp_path, orientation):
    """OpenCV turns a JPEG upright by its EXIF orientation but not a WebP: the WebP with the same orientation
    tag reads as the JPEG does (all eight tags; a picture that no turn or flip leaves alike)."""
    image = np.zeros((48, 80, 3), np.uint8)
    image[:24, :40] = (0, 0, 255)
    image[:24, 40:] = (0, 255, 0)
    image[24:, :20] = (255, 0, 0)
    image[24:, 20:] = (255, 255, 255)
    (tmp_path / "a.webp").write_bytes(_webp_with_exif(image, orientation))
    (tmp_path / "a.jpg").write_bytes(_jpeg_with_exif(image, orientation))
    frames = {name: next(iter(open_source(str(tmp_path / name)))).image for name in ("a.webp", "a.jpg")}
    assert frames["a.webp"].shape == frames["a.jpg"].shape
    assert np.abs(frames["a.webp"].astype(int) - frames["a.jpg"].astype(int)).mean() < 4
    assert (frames["a.webp"].shape[0] == 48) == (orientation <= 4)
