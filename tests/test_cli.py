"""The command line end to end, on real faces and on every kind of bad input.

Each run is a real subprocess: the promise is a one-line message and a sensible
exit code, never a traceback, and JSON Lines that stay valid when cut short.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_without_root_rights, shared_path, write_variable_rate_mkv

REPO = Path(__file__).resolve().parent.parent
FACE_IMAGE = "1051618982_1.jpg"


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "run_tracker.py"), *args], capture_output=True, text=True, check=False,
                          cwd=REPO, timeout=timeout, env=env)


def assert_clean_failure(proc: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, proc.stderr
    for word in words:
        assert word in errors[0]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for_lines(proc: subprocess.Popen, path: Path, lines: int, timeout: float = 120) -> None:
    """Until a running command has written ``lines`` lines to ``path``; a failure (with its stderr) if it has
    not within ``timeout`` s (a fresh clone compiles the 3D fit's kernels first, about 25 s)."""
    deadline = time.time() + timeout
    while time.time() < deadline and (not path.exists() or path.read_text().count("\n") < lines):
        time.sleep(0.05)
    if not path.exists() or path.read_text().count("\n") < lines:
        proc.kill()
        pytest.fail(f"the tracker did not write {lines} lines in {timeout:.0f} s: {proc.communicate()[1][-2000:]}")


def frames_played(video: Path) -> int:
    cap = cv2.VideoCapture(str(video))
    played = 0
    while cap.read()[0]:
        played += 1
    return played


def test_help_and_readme_document_every_option():
    from tracker.cli import build_parser

    options = [o for action in build_parser()._actions for o in action.option_strings
               if o.startswith("--") and o != "--help"]
    assert len(options) > 20
    proc = run_cli("--help")
    assert proc.returncode == 0
    readme = (REPO / "README.md").read_text()
    for option in options:
        assert option in proc.stdout, option
        assert f"`{option}" in readme, f"README's option table lacks {option}"
    assert "(default: None)" not in proc.stdout and "(default: False)" not in proc.stdout


def test_image_gives_schema_landmarks(afw_dir, tmp_path):
    out = tmp_path / "faces.jsonl"
    proc = run_cli("--source", str(afw_dir / FACE_IMAGE), "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    (record,) = read_jsonl(out)
    assert record["frame"] == 0 and record["source"] == str(afw_dir / FACE_IMAGE)
    (face,) = record["faces"]
    assert face["id"] == 1 and 0.5 <= face["score"] <= 1.0
    lm = np.array(face["landmarks"])
    assert lm.shape == (68, 2)
    x0, y0, x1, y1 = face["bbox"]
    assert x0 <= lm[:, 0].min() and lm[:, 0].max() <= x1 and y0 <= lm[:, 1].min() and lm[:, 1].max() <= y1
    assert (x1 - x0) < 1.5 * np.ptp(lm[:, 0])
    # The 3D fit: a near-frontal face, 52 ARKit weights in [0, 1], a unit quaternion.
    pose = face["pose"]
    assert abs(pose["yaw"]) < 45 and abs(pose["roll"]) < 30
    assert abs(np.linalg.norm(pose["quaternion"]) - 1) < 1e-3 and pose["translation_mm"][2] > 0
    assert len(face["blendshapes"]) == 52 and all(0 <= v <= 1 for v in face["blendshapes"].values())
    assert len(face["occluded"]) == 68
    # The mirror check's confidence; --no-mirror leaves it out.
    conf = np.array(face["landmark_confidence"])
    assert conf.shape == (68,) and conf.min() >= 0 and conf.max() <= 1


def test_no_fit_no_mirror_leaves_those_fields_out(afw_dir, tmp_path):
    out = tmp_path / "faces.jsonl"
    proc = run_cli("--source", str(afw_dir / FACE_IMAGE), "--json", str(out), "--quiet", "--no-fit", "--no-mirror")
    assert proc.returncode == 0, proc.stderr
    (face,) = read_jsonl(out)[0]["faces"]
    assert "pose" not in face and "blendshapes" not in face
    assert "landmark_confidence" not in face
    # The refiner still rates visibility, and flags points below 0.5 as occluded.
    visibility = np.array(face["landmark_visibility"])
    assert visibility.shape == (68,) and visibility.min() >= 0 and visibility.max() <= 1
    assert face["occluded"] == (visibility < 0.5).tolist()
    proc = run_cli("--source", str(afw_dir / FACE_IMAGE), "--json", str(out), "--quiet", "--no-fit", "--no-mirror",
                   "--refiner", "none")
    assert proc.returncode == 0, proc.stderr
    (face,) = read_jsonl(out)[0]["faces"]
    assert "occluded" not in face and "landmark_visibility" not in face


def test_csv_rows_hold_the_same_values_as_the_json(talking_clip, tmp_path):
    """One run writes both: every CSV cell is the JSON's value for that face, in its column."""
    out, ref = tmp_path / "faces.csv", tmp_path / "faces.jsonl"
    proc = run_cli("--source", str(talking_clip), "--csv", str(out), "--json", str(ref), "--max-frames", "5",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    rows, records = list(csv.DictReader(out.open())), read_jsonl(ref)
    assert len(rows) == 5 and [int(r["frame"]) for r in rows] == list(range(5))
    for row, record in zip(rows, records):
        (face,) = record["faces"]
        assert float(row["time_s"]) == pytest.approx(record["time_s"], abs=1e-4) and row["source"] == record["source"]
        assert int(row["id"]) == face["id"] and float(row["score"]) == pytest.approx(face["score"], abs=1e-4)
        assert [float(row[k]) for k in ("x0", "y0", "x1", "y1")] == pytest.approx(face["bbox"], abs=0.006)
        assert row["fit_ok"] == str(int(face.get("fit_ok", True)))
        pose = face["pose"]
        assert [float(row[k]) for k in ("yaw", "pitch", "roll")] == pytest.approx(
            [pose["yaw"], pose["pitch"], pose["roll"]], abs=0.006)
        assert [float(row[k]) for k in ("qw", "qx", "qy", "qz")] == pytest.approx(pose["quaternion"], abs=1e-5)
        assert [float(row[k]) for k in ("tx_mm", "ty_mm", "tz_mm")] == pytest.approx(pose["translation_mm"], abs=0.06)
        assert [float(row[k]) for k in ("gaze_yaw", "gaze_pitch")] == pytest.approx(
            [face["gaze"]["yaw"], face["gaze"]["pitch"]], abs=0.006)
        landmarks = [[float(row[f"lm{i}_x"]), float(row[f"lm{i}_y"])] for i in range(68)]
        assert np.abs(np.array(landmarks) - np.array(face["landmarks"])).max() < 0.006
        assert [int(row[f"occluded{i}"]) for i in range(68)] == [int(v) for v in face["occluded"]]
        assert len(face["blendshapes"]) == 52
        for name, value in face["blendshapes"].items():
            assert float(row[name]) == pytest.approx(value, abs=1e-4), name
        assert float(row["tongueOut"]) == 0.0
        assert float(row["blendshapes_error"]) == pytest.approx(face["blendshapes_error"], abs=1e-3)
    # The faces move between these frames, so a column filled from the wrong field would not pass.
    assert len({row["lm30_x"] for row in rows}) > 1 and len({row["yaw"] for row in rows}) > 1


def test_missing_source(tmp_path):
    assert_clean_failure(run_cli("--source", str(tmp_path / "nope.mp4")), 2, "not found")


def test_a_source_given_without_the_option_name(afw_dir, tmp_path):
    out = tmp_path / "out.jsonl"
    proc = run_cli(str(afw_dir / FACE_IMAGE), "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    [record] = read_jsonl(out)
    assert record["source"] == str(afw_dir / FACE_IMAGE) and len(record["faces"]) >= 1
    both = run_cli(str(afw_dir / FACE_IMAGE), "--source", "0")
    assert both.returncode == 2 and "two sources given" in both.stderr and "Traceback" not in both.stderr


def test_several_sources_are_tracked_one_after_another(talking_clip, afw_dir, tmp_path):
    """Each source is tracked as it would be alone (its own frame numbers and times, its faces new tracks), into
    the same outputs, with face IDs counting on; one that cannot be read is skipped with a warning, the others'
    records are all written, and the exit code says one was skipped."""
    cap = cv2.VideoCapture(str(talking_clip))
    frames = [cap.read()[1] for _ in range(14)]
    clips = []
    for name, part in (("a.mp4", frames[:8]), ("b.mp4", frames[8:])):
        writer = cv2.VideoWriter(str(tmp_path / name), cv2.VideoWriter_fourcc(*"mp4v"), 25, part[0].shape[1::-1])
        for frame in part:
            writer.write(frame)
        writer.release()
        clips.append(str(tmp_path / name))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    photo = str(afw_dir / FACE_IMAGE)
    out = tmp_path / "all.jsonl"
    proc = run_cli(clips[0], str(junk), "--json", str(out), photo, clips[1], clips[0])  # options among them too
    assert_clean_failure(proc, 2, "1 of 5 sources could not be read", "junk.mp4")
    assert "skipped source 2 of 5" in proc.stderr and "4 of 5 sources, 23 frames" in proc.stderr, proc.stderr
    records = read_jsonl(out)
    assert [(Path(r["source"]).name, r["frame"]) for r in records] == (
        [("a.mp4", i) for i in range(8)] + [(FACE_IMAGE, 0)] + [("b.mp4", i) for i in range(6)]
        + [("a.mp4", i) for i in range(8)])
    assert [r["time_s"] for r in records[9:15]] == pytest.approx([i / 25 for i in range(6)], abs=1e-3)
    ids = [[face["id"] for face in r["faces"]] for r in records]
    assert ids[0] == [1] and ids[9] == [3] and ids[15] == [4], ids  # a new track in each source
    assert len({face_id for row in ids[:8] for face_id in row}) == 1

    def without_ids(record: dict) -> dict:
        return {**record, "faces": [{k: v for k, v in face.items() if k != "id"} for face in record["faces"]]}

    alone = tmp_path / "alone.jsonl"
    assert run_cli(clips[0], "--json", str(alone), "--quiet").returncode == 0
    first = read_jsonl(alone)
    assert [without_ids(r) for r in records[:8]] == [without_ids(r) for r in first]
    assert [without_ids(r) for r in records[15:]] == [without_ids(r) for r in first]  # no memory of the run before


def test_several_sources_are_checked_first(talking_clip, afw_dir, tmp_path):
    """A mistyped name (or a link to nothing), a camera among several sources, a source in the overlay folder
    and --source twice are refused before any output is touched."""
    out = tmp_path / "out.jsonl"
    out.write_text("earlier\n")
    assert_clean_failure(run_cli(str(talking_clip), str(tmp_path / "typo.mp4"), "--json", str(out)), 2,
                         "typo.mp4", "not found")
    (tmp_path / "gone.mp4").symlink_to(tmp_path / "moved.mp4")
    assert_clean_failure(run_cli(str(talking_clip), str(tmp_path / "gone.mp4"), "--json", str(out)), 2,
                         "gone.mp4", "not found (a link to nothing)")
    overlays = tmp_path / "overlays"
    overlays.mkdir()
    (overlays / f"000000_{Path(FACE_IMAGE).stem}.png").write_bytes((afw_dir / FACE_IMAGE).read_bytes())
    for args, words in (((str(talking_clip), "0"), "camera 0 cannot be one of several sources"),
                        ((str(afw_dir / FACE_IMAGE), str(overlays / f"000000_{Path(FACE_IMAGE).stem}.png"),
                          "--output", str(overlays)), "is in the overlay folder"),
                        (("--source", str(talking_clip), "--source", str(afw_dir / FACE_IMAGE)),
                         "--source given twice")):
        proc = run_cli(*args, "--json", str(out))
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert out.read_text() == "earlier\n"


def test_sources_of_one_name_keep_their_own_overlay_frames(afw_dir, tmp_path):
    """Two pictures of one name from two folders, a folder holding a third and a fourth of that name (.jpg,
    .png), the first again, and a picture whose name is too long to carry whole: each overlay frame has a name of its
    own (the later sources' "-2", "-3"...; the long one cut to fit a file name), none overwritten, and each PNG shows
    its own picture."""
    stem, other = Path(FACE_IMAGE).stem, "111076519_1.jpg"
    firsts = []
    for folder, picture in (("a", FACE_IMAGE), ("b", other)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"{stem}.jpg").write_bytes((afw_dir / picture).read_bytes())
        firsts.append(tmp_path / folder / f"{stem}.jpg")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / f"{stem}.jpg").write_bytes((afw_dir / FACE_IMAGE).read_bytes())
    cv2.imwrite(str(tmp_path / "c" / f"{stem}.png"), cv2.imread(str(afw_dir / other)))
    long_name = tmp_path / ("é" * 124 + ".jpg")  # 248 bytes: with the frame number and ".png" over 255
    long_name.write_bytes((afw_dir / other).read_bytes())
    overlays = tmp_path / "overlays"
    proc = run_cli(*map(str, firsts), str(tmp_path / "c"), str(firsts[0]), str(long_name), "--output",
                   str(overlays))
    assert proc.returncode == 0, proc.stderr
    assert (f"overlay frames of '{firsts[1]}' are named NNNNNN_{stem}-2.png, as a source before in this run took "
            f"'{stem}'") in proc.stderr
    # in the order of the sources; the folder's two pictures of one name differ in frame number
    names = [f"000000_{stem}{suffix}.png" for suffix in ("", "-2", "-3")] + [f"000001_{stem}-3.png"] + [
        f"000000_{stem}-4.png", f"000000_{'é' * 100}.png"]
    assert sorted(p.name for p in overlays.iterdir()) == sorted(names), list(overlays.iterdir())
    shapes = [cv2.imread(str(overlays / name)).shape for name in names]
    pictures = [cv2.imread(str(afw_dir / picture)).shape for picture in (FACE_IMAGE, other, FACE_IMAGE, other,
                                                                         FACE_IMAGE, other)]
    assert [s[0] for s in shapes] == [p[0] for p in pictures], (shapes, pictures)
    (overlays / "000009_notes.PNG").write_bytes(b"")  # named like a frame too: PNG in any case
    (overlays / "notes.png").write_bytes(b"")
    proc = run_cli(str(firsts[0]), "--output", str(overlays), "--quiet")
    assert proc.returncode == 0 and "already holds 7 frames of an earlier run" in proc.stderr, proc.stderr


def test_a_source_named_like_an_option_comes_after_a_double_dash(talking_clip, tmp_path):
    clip = tmp_path / "-b.mp4"
    clip.write_bytes(talking_clip.read_bytes())
    out = tmp_path / "out.jsonl"
    proc = subprocess.run([sys.executable, str(REPO / "run_tracker.py"), str(talking_clip), "--json", str(out),
                           "--max-frames", "450", "--quiet", "--", "-b.mp4"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    sources = [r["source"] for r in read_jsonl(out)]
    assert sources.count(str(talking_clip)) == 448 and sources[448:] == ["-b.mp4"] * 2


def test_a_stop_as_a_source_ends_begins_no_other(tmp_path, monkeypatch):
    """A stop that comes while a source closes is noted, not lost, and the next source is not opened; after the
    last source, the run has ended all the same."""
    from tracker import cli
    from tracker.sources import open_source

    handlers = [signal.getsignal(sig) for sig in cli.STOP_SIGNALS]
    stop = cli.StopRequest()
    stop.install()
    try:
        stop.hold()
        os.kill(os.getpid(), signal.SIGINT)  # while held: noted, never raised
        stop.release()
        assert stop.requested
    finally:
        for sig, handler in zip(cli.STOP_SIGNALS, handlers):
            signal.signal(sig, handler)
    stop, opened = cli.StopRequest(), []

    def open_and_stop_at_close(spec, **kwargs):
        source = open_source(spec, **kwargs)
        opened.append(spec)
        close = source.close
        source.close = lambda: (close(), setattr(stop, "requested", True))[0]
        return source

    monkeypatch.setattr(cli, "open_source", open_and_stop_at_close)
    clip = str(shared_path("video", "talking_d0.mp4"))  # 78 frames
    out = tmp_path / "out.jsonl"
    args = cli.build_parser().parse_args([clip, clip, "--json", str(out), "--quiet"])
    assert cli.run(args, stop) == cli.EXIT_INTERRUPTED
    assert opened == [clip] and len(read_jsonl(out)) == 78
    stop, opened = cli.StopRequest(), []
    assert cli.run(cli.build_parser().parse_args([clip, "--json", str(out), "--quiet"]), stop) == cli.EXIT_OK
    assert stop.requested and len(read_jsonl(out)) == 78


def test_a_sound_file_is_named_as_one(tmp_path):
    import wave

    sound = tmp_path / "voice.wav"
    with wave.open(str(sound), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(16000))
    assert_clean_failure(run_cli(str(sound)), 2, "voice.wav", "no pictures to track", ".wav file is usually sound")


def test_camera_that_does_not_exist():
    assert_clean_failure(run_cli("--source", "7"), 2, "camera 7")


def test_corrupt_video(tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    assert_clean_failure(run_cli("--source", str(bad)), 2, "corrupt.mp4")


def test_variable_rate_video_ends_whole(talking_clip, tmp_path):
    """A variable-rate MKV for which FFmpeg counts more frames than it holds: every frame is tracked, no
    'truncated' warning, and the progress bar ends at its last frame, not part way."""
    cap = cv2.VideoCapture(str(talking_clip))
    frames = [cv2.resize(cap.read()[1], (256, 256)) for _ in range(12)]
    clip, out = tmp_path / "vfr.mkv", tmp_path / "vfr.jsonl"
    write_variable_rate_mkv(clip, frames, 10, 30)
    proc = run_cli("--source", str(clip), "--json", str(out))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "truncated" not in proc.stderr, proc.stderr
    assert len(read_jsonl(out)) == 12
    bar = proc.stderr.replace("\r", "\n").splitlines()
    assert any(line.startswith("100%") and "12/12" in line for line in bar), proc.stderr


def test_truncated_video_keeps_what_was_read(talking_clip, tmp_path):
    """A video cut halfway through its frame data (an AVI keeps its header, so it still opens): the frames
    before the cut are tracked and written, and the run ends with a warning, not an error."""
    whole, cut = tmp_path / "whole.avi", tmp_path / "cut.avi"
    cap = cv2.VideoCapture(str(talking_clip))
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 25, (256, 256))
    for _ in range(30):
        writer.write(cv2.resize(cap.read()[1], (256, 256)))
    writer.release()
    data = whole.read_bytes()
    cut.write_bytes(data[: (data.index(b"movi") + data.index(b"idx1")) // 2])
    out = tmp_path / "cut.jsonl"
    proc = run_cli("--source", str(cut), "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "truncated" in proc.stderr, proc.stderr
    # The warning comes while the progress bar is drawn: on a line of its own, not glued to the bar's end.
    lines = proc.stderr.replace("\r", "\n").splitlines()
    assert any(line.startswith("WARNING") and "truncated" in line for line in lines), proc.stderr
    records = read_jsonl(out)
    assert 5 < len(records) < 30
    assert [r["frame"] for r in records] == list(range(len(records)))
    assert all(len(r["faces"]) == 1 for r in records)


def test_folder_with_junk_zero_byte_and_odd_images(afw_dir, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    face = cv2.imread(str(afw_dir / FACE_IMAGE))
    cv2.imwrite(str(folder / "a_colour.jpg"), face)
    cv2.imwrite(str(folder / "b_gray.png"), cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "c_16bit.png"), face.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "d_tiny.png"), np.full((32, 32, 3), 128, np.uint8))
    cv2.imwrite(str(folder / "e_blank.jpg"), np.zeros((240, 320, 3), np.uint8))
    (folder / "f_empty.jpg").write_bytes(b"")
    (folder / "g_notes.txt").write_text("not an image")
    out = tmp_path / "folder.jsonl"
    proc = run_cli("--source", str(folder), "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "f_empty.jpg" in proc.stderr and "g_notes.txt" in proc.stderr
    records = read_jsonl(out)
    assert [Path(r["source"]).name for r in records] == ["a_colour.jpg", "b_gray.png", "c_16bit.png", "d_tiny.png",
                                                        "e_blank.jpg"]
    faces = [len(r["faces"]) for r in records]
    assert faces == [1, 1, 1, 0, 0]
    # Grayscale and 16-bit versions of the same face give nearly the same landmarks.
    ref = np.array(records[0]["faces"][0]["landmarks"])
    for r in records[1:3]:
        assert np.abs(np.array(r["faces"][0]["landmarks"]) - ref).max() < 0.1 * np.ptp(ref[:, 0])


def test_huge_frame(afw_dir, tmp_path):
    face = cv2.imread(str(afw_dir / FACE_IMAGE))
    huge = cv2.resize(face, (4000, 3000))
    path = tmp_path / "huge.jpg"
    cv2.imwrite(str(path), huge)
    out = tmp_path / "huge.jsonl"
    proc = run_cli("--source", str(path), "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    (record,) = read_jsonl(out)
    assert len(record["faces"]) == 1


def test_ctrl_c_mid_file_leaves_valid_jsonl(talking_clip, tmp_path):
    out = tmp_path / "partial.jsonl"
    proc = subprocess.Popen([sys.executable, str(REPO / "run_tracker.py"), "--source", str(talking_clip), "--json",
                             str(out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_lines(proc, out, 20)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    text = out.read_text()
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    assert 20 <= len(records) < 448
    assert [r["frame"] for r in records] == list(range(len(records)))


def test_a_reader_that_stops_reading_ends_the_run_quietly(talking_clip, tmp_path):
    """`--json - | head -1`: once the reader has gone, the run ends with no error line and exit 0, and the
    other outputs are closed whole (the overlay video plays), with a line saying they end there."""
    video = tmp_path / "overlay.mp4"
    proc = subprocess.Popen([sys.executable, str(REPO / "run_tracker.py"), "--source", str(talking_clip), "--json", "-",
                             "--output", str(video), "--quiet"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert json.loads(proc.stdout.readline())["frame"] == 0
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "ERROR" not in stderr and "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert f"stopped reading, which ended the run: --output '{video}' holds the frames" in stderr, stderr
    cap = cv2.VideoCapture(str(video))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    assert 1 <= frames < 448 and cap.read()[0]


def test_overlay_video_and_progress_summary(talking_clip, tmp_path):
    video = tmp_path / "overlay.mp4"
    proc = run_cli("--source", str(talking_clip), "--output", str(video), "--max-frames", "15")
    assert proc.returncode == 0, proc.stderr
    assert "15 frames, 15 with faces" in proc.stderr
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 15


def test_show_without_display_is_a_clean_error(afw_dir):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = run_cli("--source", str(afw_dir / FACE_IMAGE), "--show", env=env)
    assert_clean_failure(proc, 1, "display")


def test_bad_option_values_are_usage_errors():
    """Exit 2 and one line that says what is wrong (no usage block: the options are --help's to list)."""
    for args, words in ((("--max-faces", "0"), "positive integer"), (("--steady", "--no-smooth"), "not allowed with"),
                        (("--no-such-option",), "unrecognized arguments"), (("--json", "a", "--csv", "a"), "both write")):
        proc = run_cli(*args)
        assert proc.returncode == 2 and words in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1 and "--help" in proc.stderr, (args, proc.stderr)


def test_usage_errors_name_the_command_as_it_was_run():
    """`face-tracker` (the installed command), `run_tracker.py` and `python -m tracker` each name themselves in a
    usage error."""
    script = Path(sys.executable).parent / "face-tracker"
    if not script.exists():
        pytest.skip("the face-tracker command is not installed here (pip install -e . installs it)")
    installed = subprocess.run([str(script), "--no-such-option"], capture_output=True, text=True, check=False,
                               cwd=REPO, timeout=120)
    assert installed.returncode == 2 and installed.stderr.startswith("face-tracker: error:"), installed.stderr
    assert run_cli("--no-such-option").stderr.startswith("run_tracker.py: error:")
    module = subprocess.run([sys.executable, "-m", "tracker", "--no-such-option"], capture_output=True, text=True,
                            check=False, cwd=REPO, timeout=120)
    assert module.returncode == 2 and module.stderr.startswith("python -m tracker: error:"), module.stderr


def test_a_name_with_a_line_break_still_makes_one_line_of_error(tmp_path):
    for args in (("--source", str(tmp_path / "no\nsuch.jpg")), ("--json", "a\nb", "--csv", "a\nb")):
        proc = run_cli(*args)
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert "no\\nsuch.jpg" in proc.stderr or "a\\nb" in proc.stderr, proc.stderr


def test_numbers_that_cannot_be_a_focal_length_or_frame_rate_are_usage_errors():
    for option, value in (("--focal", "nan"), ("--focal", "-500"), ("--focal", "0"), ("--focal", "inf"),
                          ("--camera-fps", "-5")):
        proc = run_cli(option, value)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (option, value, proc.stderr)
        assert "positive number" in proc.stderr, (option, value, proc.stderr)


def test_outputs_that_clash_with_each_other_or_the_source_are_usage_errors(talking_clip, tmp_path):
    """Caught before anything is opened: the source is never overwritten, and no output is mixed into another."""
    source = tmp_path / "clip.mp4"
    source.write_bytes(talking_clip.read_bytes())
    os.link(source, tmp_path / "hard.mp4")  # the same file under another name
    (tmp_path / "earlier.jsonl").write_text("{}\n")
    os.symlink(tmp_path / "earlier.jsonl", tmp_path / "link.jsonl")
    os.symlink(tmp_path / "frames" / "000001_clip.png", tmp_path / "to_a_frame.jsonl")  # the file written is the frame
    cases = {
        ("--json", str(source)): "source itself",
        ("--output", str(source)): "source itself",
        ("--output", str(tmp_path / "hard.mp4")): "source itself",
        ("--json", str(tmp_path / "earlier.jsonl"), "--csv", str(tmp_path / "link.jsonl")): "both write to",
        ("--json", str(tmp_path / "a.out"), "--csv", str(tmp_path / "a.out")): "both write to",
        ("--json", "-", "--csv", "-"): "both write to stdout",
        ("--output", "-"): "stdout ('-') is for --json and --csv",
        # A frame of the overlay folder would replace it, or be written through it while it is open.
        ("--output", str(tmp_path / "frames"), "--json", str(tmp_path / "frames" / "000001_clip.png")): "named like",
        ("--output", str(tmp_path / "frames"), "--csv", str(tmp_path / "frames" / "000001_clip.png.part")):
            "named like",
        ("--output", str(tmp_path / "frames"), "--json", str(tmp_path / "to_a_frame.jsonl")): "named like",
        ("--json", ""): "empty",
        ("--vmc", ""): "empty",
        ("--vmc-mirror",): "give --vmc",
        ("--vmc-eye-bones",): "give --vmc",
        ("--vmc-presets",): "give --vmc",
        ("--vmc-pascal-case",): "give --vmc",
        # Options that would do nothing here: said, not ignored.
        ("--wireframe",): "give --output or --show",
        ("--wireframe", "--output", str(tmp_path / "o.mp4"), "--no-fit"): "--no-fit leaves it out",
        ("--camera-size", "640x480"): "is not a webcam",
        ("--camera-fps", "30"): "is not a webcam",
    }
    for args, words in cases.items():
        proc = run_cli("--source", str(source), *args, "--max-frames", "2", "--quiet")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert words in proc.stderr, (args, proc.stderr)
    # The source named by a file: URL (FFmpeg opens the path after 'file:'), alone or after another source.
    other = tmp_path / "other.mp4"
    other.write_bytes(talking_clip.read_bytes())
    for sources in ((f"file://{source}",), (str(other), f"file://{source}")):
        for option in ("--json", "--output"):
            proc = run_cli(*sources, option, str(source), "--max-frames", "2", "--quiet")
            assert proc.returncode == 2 and "source itself" in proc.stderr, (sources, option, proc.stderr)
    assert source.read_bytes() == talking_clip.read_bytes()
    assert not (tmp_path / "a.out").exists() and (tmp_path / "earlier.jsonl").read_text() == "{}\n"
    # An output on one of a source folder's images (which would be emptied before it is read).
    folder = tmp_path / "photos"
    folder.mkdir()
    image = cv2.imencode(".png", np.full((40, 40, 3), 128, np.uint8))[1].tobytes()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(image)
    for option in ("--json", "--csv", "--output"):
        proc = run_cli("--source", str(folder), option, str(folder / "b.png"), "--quiet")
        assert proc.returncode == 2 and "file in the source folder" in proc.stderr, (option, proc.stderr)
    assert (folder / "b.png").read_bytes() == image


def test_vmc_mirror_sends_the_mirror_image_of_the_same_face(afw_dir):
    """One face, sent plain and mirrored: the blendshapes change sides and the head turns the other way."""
    from pythonosc.osc_bundle import OscBundle

    def sent(*extra: str) -> dict[str, list]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(5.0)
            proc = run_cli("--source", str(afw_dir / FACE_IMAGE), "--vmc", f"127.0.0.1:{sock.getsockname()[1]}",
                           "--quiet", *extra)
            assert proc.returncode == 0, proc.stderr
            messages = [(m.address, list(m.params)) for m in OscBundle(sock.recvfrom(65536)[0])]
        values = {p[0]: p[1] for address, p in messages if address == "/VMC/Ext/Blend/Val"}
        (head,) = [p[1:] for address, p in messages if address == "/VMC/Ext/Bone/Pos" and p[0] == "Head"]
        return {"shapes": values, "rotation": head[3:]}

    plain, mirrored = sent(), sent("--vmc-mirror")
    uneven = 0
    for name, value in plain["shapes"].items():
        twin = name.replace("Left", "Right") if "Left" in name else name.replace("Right", "Left")
        assert mirrored["shapes"][twin] == pytest.approx(value, abs=1e-6), name
        uneven += abs(value - plain["shapes"][twin]) > 1e-3
    assert uneven >= 2  # the face is uneven enough for the check to tell the sides apart
    x, y, z, w = plain["rotation"]
    assert mirrored["rotation"] == pytest.approx([x, -y, -z, w], abs=1e-6)
    assert abs(y) > 1e-3  # and the head is turned enough to tell


def test_vmc_eye_bones_reach_the_receiver_turned_with_the_gaze(afw_dir, tmp_path):
    """--vmc-eye-bones sends both eye bones after the head's, turned as the face's gaze in the JSON says; the
    CSV's gaze cells say the same, in their columns."""
    from pythonosc.osc_bundle import OscBundle

    from tracker.avatar import camera_to_unity_quaternion, eye_rotation
    from tracker.types import Gaze

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5.0)
        proc = run_cli("--source", str(afw_dir / FACE_IMAGE), "--vmc", f"127.0.0.1:{sock.getsockname()[1]}",
                       "--vmc-eye-bones", "--json", "-", "--csv", str(tmp_path / "faces.csv"), "--quiet")
        assert proc.returncode == 0, proc.stderr
        bones = {p[0]: p[4:] for m in OscBundle(sock.recvfrom(65536)[0]) if m.address == "/VMC/Ext/Bone/Pos"
                 for p in [list(m.params)]}
    gaze = json.loads(proc.stdout.splitlines()[0])["faces"][0]["gaze"]
    assert list(bones) == ["Head", "LeftEye", "RightEye"]
    expected = camera_to_unity_quaternion(eye_rotation(Gaze(gaze["yaw"], gaze["pitch"])))
    assert bones["LeftEye"] == pytest.approx(expected, abs=1e-3) and abs(expected[3]) < 0.99999
    with open(tmp_path / "faces.csv", newline="") as f:
        header, row = list(csv.reader(f))
    assert len(row) == len(header)
    at = header.index("gaze_yaw")
    assert header[at - 2:at + 3] == ["tz_mm", "pose_error_deg", "gaze_yaw", "gaze_pitch", "lm0_x"]
    assert [float(v) for v in row[at:at + 2]] == pytest.approx([gaze["yaw"], gaze["pitch"]], abs=0.011)
    face = json.loads(proc.stdout.splitlines()[0])["faces"][0]
    assert float(row[at - 1]) == pytest.approx(face["pose"]["expected_error_deg"], abs=0.011)
    at = header.index("blendshapes_error")
    assert header[at - 1:at + 2] == ["occluded67", "blendshapes_error", "eyeBlinkLeft"]
    assert float(row[at]) == pytest.approx(face["blendshapes_error"], abs=0.0011) and face["blendshapes_error"] > 0


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a device that is always full)")
def test_a_full_disk_is_a_one_line_output_error(afw_dir):
    for option in ("--json", "--csv"):
        proc = run_cli("--source", str(afw_dir / FACE_IMAGE), option, "/dev/full", "--quiet")
        assert_clean_failure(proc, 1, "cannot write", "/dev/full")
        assert "unexpected" not in proc.stderr


def test_an_overlay_frame_that_cannot_be_written_is_an_output_error(afw_dir, tmp_path):
    folder = tmp_path / "overlay"
    (folder / f"000000_{Path(FACE_IMAGE).stem}.png").mkdir(parents=True)  # a folder where the PNG must go
    proc = run_cli("--source", str(afw_dir / FACE_IMAGE), "--output", str(folder), "--quiet")
    assert_clean_failure(proc, 1, "cannot write overlay frame")


def test_an_overlay_that_cannot_be_written_stops_before_the_earlier_outputs_are_emptied(afw_dir, tmp_path):
    """An overlay folder that takes no files, or an earlier overlay video that may not be overwritten: refused
    at the start, before the JSON and CSV are emptied, in one line that says why."""
    folder, video = tmp_path / "frames", tmp_path / "earlier.mp4"
    folder.mkdir()
    video.write_bytes(b"an earlier run's video")
    earlier_json, earlier_csv = tmp_path / "faces.jsonl", tmp_path / "faces.csv"
    earlier_json.write_text(EARLIER)
    earlier_csv.write_text("frame,id\n0,1\n")
    folder.chmod(0o555)
    video.chmod(0o444)
    try:
        for output in (folder, video):
            proc = run_without_root_rights([sys.executable, str(REPO / "run_tracker.py"), "--source",
                                            str(afw_dir / FACE_IMAGE), "--json", str(earlier_json), "--csv",
                                            str(earlier_csv), "--output", str(output), "--quiet"], cwd=REPO,
                                           timeout=120)
            assert_clean_failure(proc, 1, "cannot write", str(output), "ermission denied")
            assert earlier_json.read_text() == EARLIER and earlier_csv.read_text() == "frame,id\n0,1\n"
    finally:
        folder.chmod(0o755)
    assert video.read_bytes() == b"an earlier run's video"
    notes = tmp_path / "notes.txt"  # a file where the frames' folder would go
    notes.write_text("mine\n")
    proc = run_cli("--source", str(afw_dir / FACE_IMAGE), "--json", str(earlier_json), "--output", str(notes),
                   "--quiet")
    assert_clean_failure(proc, 1, f"cannot write overlay frames into '{notes}': it is a file, not a folder")
    assert "WARNING" not in proc.stderr and earlier_json.read_text() == EARLIER and notes.read_text() == "mine\n"
    for too_long in (tmp_path / ("a" * 300 + ".mp4"), tmp_path / ("a" * 300)):  # a look at the name fails
        proc = run_cli("--source", str(afw_dir / FACE_IMAGE), "--json", str(earlier_json), "--output", str(too_long),
                       "--quiet")
        assert_clean_failure(proc, 1, "cannot write", "File name too long")
        assert earlier_json.read_text() == EARLIER


def test_an_overlay_video_too_large_for_its_encoder_says_so_in_one_line(afw_dir, tmp_path):
    wide = tmp_path / "wide.jpg"
    cv2.imwrite(str(wide), cv2.resize(cv2.imread(str(afw_dir / FACE_IMAGE)), (9000, 300)))
    proc = run_cli("--source", str(wide), "--output", str(tmp_path / "overlay.mp4"), "--quiet")
    assert_clean_failure(proc, 1, "cannot write video", "9000x300", "8191 px", ".avi")
    assert len(proc.stderr.splitlines()) == 1, proc.stderr  # OpenCV's own error lines silenced
    assert "from before" not in proc.stderr
    # An overlay of an earlier run at that path stays as it was, and the error says so: beside this run's JSON it
    # is not this run's overlay.
    earlier = tmp_path / "earlier.mp4"
    earlier.write_bytes(b"an earlier run's overlay")
    proc = run_cli("--source", str(wide), "--json", str(tmp_path / "out.jsonl"), "--output", str(earlier), "--quiet")
    assert_clean_failure(proc, 1, "refused frames of 9000x300", "the video there from before is left as it was")
    assert earlier.read_bytes() == b"an earlier run's overlay"
    proc = run_cli("--source", str(wide), "--output", str(tmp_path / "overlay.avi"), "--quiet")
    assert proc.returncode == 0, proc.stderr


def test_a_folder_of_images_of_several_sizes_makes_one_overlay_video(afw_dir, tmp_path):
    """A video has one frame size: later images are scaled to fit the first's, their shape kept, each frame drawn
    on its own image, and the run says so once."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    face = cv2.imread(str(afw_dir / FACE_IMAGE))
    h, w = face.shape[:2]
    cv2.imwrite(str(folder / "a.png"), face)
    cv2.imwrite(str(folder / "b.png"), cv2.resize(face, (w // 2, h // 2)))
    cv2.imwrite(str(folder / "c.png"), cv2.resize(face, (w * 3 // 2, h)))
    video = tmp_path / "overlay.avi"
    proc = run_cli("--source", str(folder), "--output", str(video), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count(f"overlay video '{video}' is {w}x{h}, the size its first frame set: frames of other "
                             "sizes are scaled to fit, with black bars") == 1, proc.stderr
    cap = cv2.VideoCapture(str(video))
    frames = []
    while (ok_frame := cap.read())[0]:
        frames.append(ok_frame[1])
    assert len(frames) == 3 and all(f.shape == (h, w, 3) for f in frames)
    # The half-size image's overlay, scaled back up, shows the same picture as the first.
    assert np.abs(frames[1].astype(float) - frames[0].astype(float)).mean() < 12
    # The wider image fills the width, at 2/3 of its height: black bars above and below, the picture between.
    bar = (h - round(h * 2 / 3)) // 2
    assert frames[2][:bar - 2].max() < 40 and frames[2][h - bar + 2:].max() < 40
    squeezed = cv2.resize(cv2.resize(face, (w * 3 // 2, h)), (w, h - 2 * bar), interpolation=cv2.INTER_AREA)
    assert np.abs(frames[2][bar + 20:h - bar - 20].astype(float) - squeezed[20:-20].astype(float)).mean() < 12


def test_tiny_frames_make_a_readable_overlay_video(tmp_path):
    for w, h in ((1, 1), (2, 600)):
        image = tmp_path / f"tiny_{w}x{h}.png"
        cv2.imwrite(str(image), np.full((h, w, 3), 128, np.uint8))
        video = tmp_path / f"tiny_{w}x{h}.mp4"
        proc = run_cli("--source", str(image), "--output", str(video), "--quiet")
        assert proc.returncode == 0, proc.stderr
        ok, frame = cv2.VideoCapture(str(video)).read()
        assert ok and frame.shape[0] >= h and frame.shape[1] >= w


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_an_odd_sized_overlay_video_keeps_the_last_row_and_column(tmp_path, suffix):
    """The encoders drop an odd last row and column: the frame is padded to even instead, black."""
    image, video = tmp_path / "odd.png", tmp_path / f"odd{suffix}"
    cv2.imwrite(str(image), np.full((143, 255, 3), 200, np.uint8))
    proc = run_cli("--source", str(image), "--output", str(video), "--quiet")
    assert proc.returncode == 0, proc.stderr
    ok, frame = cv2.VideoCapture(str(video)).read()
    assert ok and frame.shape == (144, 256, 3)
    assert frame[140:143, 250:255].mean() > 150 and frame[143, :240].mean() < 60 and frame[:130, 255].mean() < 60


def test_a_camera_index_beyond_opencv_and_a_file_named_by_digits(talking_clip, tmp_path):
    assert_clean_failure(run_cli("--source", "2147483648"), 2, "camera 2147483648 could not be opened")
    (tmp_path / "2024").write_bytes(talking_clip.read_bytes())
    proc = subprocess.run([sys.executable, str(REPO / "run_tracker.py"), "--source", "2024"], capture_output=True,
                          text=True, check=False, cwd=tmp_path, timeout=120)
    assert_clean_failure(proc, 2, "camera 2024", "./2024")


def test_csv_keeps_the_occlusion_flags_without_the_fit(afw_dir, tmp_path):
    out, ref = tmp_path / "faces.csv", tmp_path / "faces.jsonl"
    proc = run_cli("--source", str(afw_dir / FACE_IMAGE), "--csv", str(out), "--json", str(ref), "--quiet",
                   "--no-fit")
    assert proc.returncode == 0, proc.stderr
    (row,) = list(csv.DictReader(out.open()))
    assert "occluded67" in row and "yaw" not in row and "jawOpen" not in row and "blendshapes_error" not in row
    (face,) = read_jsonl(ref)[0]["faces"]
    assert [int(row[f"occluded{i}"]) for i in range(68)] == [int(v) for v in face["occluded"]]
    landmarks = [[float(row[f"lm{i}_x"]), float(row[f"lm{i}_y"])] for i in range(68)]
    assert np.abs(np.array(landmarks) - np.array(face["landmarks"])).max() < 0.006
    proc = run_cli("--source", str(afw_dir / FACE_IMAGE), "--csv", str(out), "--quiet", "--no-fit", "--refiner", "none")
    assert proc.returncode == 0, proc.stderr
    (row,) = list(csv.DictReader(out.open()))
    assert "occluded67" not in row


def _wait_until_catching(pid: int, signum: int, timeout: float = 30.0) -> None:
    """Block until process `pid` has a handler for `signum` (Linux: the SigCgt mask in /proc/PID/status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:") and int(line.split()[1], 16) >> (signum - 1) & 1:
                return
        time.sleep(0.002)
    raise AssertionError(f"process {pid} never installed a handler for signal {signum}")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to see when our code starts")
def test_ctrl_c_while_starting_up_is_quiet(talking_clip):
    """SIGINT while the libraries load, or just after: exit 130, no traceback, whichever moment it lands.

    The clock starts when tracker.launcher has installed its handlers (it is the only code that catches
    SIGTERM): a signal before that lands in Python's own start-up (site imports), which no program can
    catch, so CI's slower start made a fixed delay from spawn flaky.
    """
    for delay in (0.0, 0.3, 0.8):
        proc = subprocess.Popen([sys.executable, str(REPO / "run_tracker.py"), "--source", str(talking_clip),
                                 "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        _wait_until_catching(proc.pid, signal.SIGTERM)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, (delay, err)
        assert "Traceback" not in err and "Error" not in err, (delay, err)


def test_steady_smooths_more_than_the_default(talking_clip, tmp_path):
    """--steady reaches the tracks' smoothers: on the same frames its landmarks move less from frame to frame."""
    moves = {}
    for flags in ((), ("--steady",)):
        out = tmp_path / f"out{len(flags)}.jsonl"
        proc = run_cli("--source", str(talking_clip), "--json", str(out), "--max-frames", "40", "--quiet", *flags)
        assert proc.returncode == 0, proc.stderr
        points = np.array([json.loads(line)["faces"][0]["landmarks"] for line in out.open()])
        moves[flags] = np.abs(np.diff(points, 2, axis=0)).mean()
    assert moves[("--steady",)] < 0.9 * moves[()]


@pytest.mark.parametrize("backend", ["tensorrt"])
def test_unavailable_backend_is_one_line(afw_dir, backend):
    proc = run_cli("--source", str(afw_dir / FACE_IMAGE), "--backend", backend)
    if proc.returncode == 0:
        pytest.skip("TensorRT is installed and usable here")
    assert_clean_failure(proc, 1, "TensorRT")


def test_a_slow_start_says_why_unless_quiet(caplog):
    # The first start after installing compiles the 3D fit's kernels for half a minute; past the notice time
    # the command says so (here the notice time is 0 s, so any start is "slow"), and a quiet run stays quiet.
    from tracker.cli import load_tracker
    from tracker.pipeline import FaceTracker, TrackerConfig

    config = TrackerConfig(backend="onnxruntime", refiner=False, mirror_check=False)
    with caplog.at_level("INFO", logger="tracker"):
        tracker = load_tracker(config, notice_after_s=0.0)
        for _ in range(200):  # the notice comes from a timer thread: give it a moment if the load beat it
            if caplog.records:
                break
            time.sleep(0.01)
    assert isinstance(tracker, FaceTracker)
    assert [r.getMessage() for r in caplog.records if "first start after installing" in r.getMessage()], caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="tracker"):
        load_tracker(config, quiet=True, notice_after_s=0.0)
        time.sleep(0.2)
    assert not caplog.records, caplog.text


def test_a_live_source_is_tracked_pipelined_to_the_end(monkeypatch, tmp_path):
    """A live source (here a clip paced at its frame rate by the newest-frame reader, as a camera delivers)
    goes through the command line's loop to its end: every frame tracked is written once, in order, and the
    run ends when the source does."""
    from tracker import cli
    from tracker.sources import open_source

    clip = shared_path("video", "talking_d0.mp4")  # 78 frames at 25 fps: about three seconds
    opened = []

    def open_live(spec, **_):
        opened.append(open_source(spec, live=True))
        return opened[-1]

    monkeypatch.setattr(cli, "open_source", open_live)
    out = tmp_path / "live.jsonl"
    args = cli.build_parser().parse_args(["--source", str(clip), "--json", str(out), "--quiet"])
    assert cli.run(args, cli.StopRequest()) == 0
    (source,) = opened
    records = read_jsonl(out)
    frames = [r["frame"] for r in records]
    assert frames == sorted(set(frames)) and frames[-1] == 77
    assert len(records) + source.dropped == 78
    assert sum(len(r["faces"]) == 1 for r in records) >= 0.9 * len(records)


def _serve_paced(folder: Path, name: str, frames: int):
    """A local HTTP server giving ``folder/name`` a frame's worth of bytes every 50 ms, as a camera would;
    yields its URL."""
    import functools
    import http.server
    import threading

    path = folder / name

    class PacedHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def copyfile(self, source, outputfile) -> None:
            chunk = path.stat().st_size // frames + 1
            while data := source.read(chunk):
                outputfile.write(data)
                time.sleep(0.05)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(PacedHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{name}"
    try:
        probe = cv2.VideoCapture(url)
        readable = probe.isOpened() and probe.read()[0]
        probe.release()
        if not readable:
            pytest.skip("this OpenCV build cannot read http:// streams")
        yield url
    finally:
        server.shutdown()
        server.server_close()


def _talking_d0_frames() -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(shared_path("video", "talking_d0.mp4")))
    frames = []
    while (read := cap.read())[0]:
        frames.append(read[1])
    cap.release()
    return frames


def _write_avi(path: Path, frames: list[np.ndarray], length: bool = True) -> None:
    """MJPEG in AVI, which reads without seeking; without ``length`` its headers give no frame count, as a
    live stream's do not (FFmpeg's raw MJPEG reader would buffer the whole short clip while probing it)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(frame)
    writer.release()
    if not length:
        data = bytearray(path.read_bytes())
        for chunk, offset in ((b"avih", 16), (b"strh", 32)):  # dwTotalFrames, the stream's dwLength
            at = data.index(chunk) + 8 + offset
            data[at:at + 4] = bytes(4)
        path.write_bytes(bytes(data))


def test_a_stream_url_is_tracked_to_its_end(tmp_path):
    """An http:// URL to a live stream (no length, served at about 20 frames a second, as a camera) is a live
    source: read on the newest-frame thread as it arrives, tracked pipelined. The run ends cleanly when the
    stream does, the stream's last frame tracked, with a warning that it stopped."""
    frames = _talking_d0_frames()
    _write_avi(tmp_path / "live.avi", frames, length=False)
    out = tmp_path / "stream.jsonl"
    for url in _serve_paced(tmp_path, "live.avi", len(frames)):
        proc = run_cli("--source", url, "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "stopped delivering frames" in proc.stderr
    records = read_jsonl(out)
    indices = [r["frame"] for r in records]
    assert len(indices) >= 5 and indices == sorted(set(indices)) and indices[-1] == len(frames) - 1  # the last
    assert all(r["source"] == url for r in records)
    assert sum(len(r["faces"]) == 1 for r in records) >= 0.9 * len(records)


def test_a_live_stream_among_several_sources_says_the_next_begin_when_it_ends(afw_dir, tmp_path):
    """A live stream before other sources does not end by itself as a file does: the run says so, and the
    source after it is tracked once the stream ends."""
    frames = _talking_d0_frames()
    _write_avi(tmp_path / "live.avi", frames, length=False)
    out = tmp_path / "both.jsonl"
    for url in _serve_paced(tmp_path, "live.avi", len(frames)):
        proc = run_cli(url, str(afw_dir / FACE_IMAGE), "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert f"stream '{url}' is live: the source after it begins when it ends" in proc.stderr, proc.stderr
    sources = [r["source"] for r in read_jsonl(out)]
    assert len(sources) >= 6 and sources[-1] == str(afw_dir / FACE_IMAGE) and set(sources[:-1]) == {url}


def test_a_video_file_served_over_http_is_read_whole(tmp_path):
    """A video file behind an http:// URL knows its length: every frame is read and tracked, as from a local
    file, however slowly the server sends it, and its end is no warning."""
    frames = _talking_d0_frames()
    _write_avi(tmp_path / "clip.avi", frames)
    out = tmp_path / "file.jsonl"
    for url in _serve_paced(tmp_path, "clip.avi", len(frames)):
        proc = run_cli("--source", url, "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    records = read_jsonl(out)
    assert [r["frame"] for r in records] == list(range(len(frames)))
    assert [r["time_s"] for r in records] == pytest.approx([i / 25.0 for i in range(len(frames))], abs=1e-3)


# ------------------------------------------------------------------ a failed start leaves earlier files alone

EARLIER = '{"frame": 0, "note": "an earlier run\'s output"}\n' * 3


@pytest.mark.parametrize("options, code, words", [
    (["--vmc", "127.0.0.1:abc"], 2, ["--vmc", "not a number"]),
    (["--udp-json", "127.0.0.1:\u00b9\u00b2"], 2, ["--udp-json", "not a number"]),
    (["--vmc", "no-such-host.invalid"], 2, ["cannot resolve VMC host"]),
    (["--vmc", "127.0.0.1", "--udp-json", "localhost:39539"], 2, ["both send to 127.0.0.1:39539"]),
    (["--output", "/nonexistent-folder/overlay.mp4"], 1, ["cannot write video", "does not exist"]),
    (["--output", __file__ + "/overlay.mp4"], 1, ["cannot write video", "is not a folder"]),
    (["--csv", "/nonexistent-folder/faces.csv"], 1, ["cannot write CSV", "No such file"]),
])
def test_an_option_that_cannot_be_honoured_leaves_the_earlier_json_alone(afw_dir, tmp_path, options, code, words):
    """Addresses and the overlay video's folder are checked before the JSON and CSV files are opened (which
    empties them): the user's earlier results survive a typo."""
    earlier = tmp_path / "faces.jsonl"
    earlier.write_text(EARLIER)
    proc = run_cli("--source", str(afw_dir / FACE_IMAGE), "--json", str(earlier), *options, "--quiet")
    if code == 2:
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and all(w in proc.stderr for w in words)
    else:
        assert_clean_failure(proc, code, *words)
    assert earlier.read_text() == EARLIER


def test_an_overlay_video_onto_a_fifo_is_refused_before_anything_waits(afw_dir, tmp_path):
    """A FIFO as the overlay video: the encoder would wait for a reader at the first frame, deaf to Ctrl-C,
    and could not write a video's index into a pipe anyway. Refused at once, the earlier JSON untouched."""
    fifo, earlier = tmp_path / "overlay.mp4", tmp_path / "faces.jsonl"
    os.mkfifo(fifo)
    earlier.write_text(EARLIER)
    proc = run_cli("--source", str(afw_dir / FACE_IMAGE), "--json", str(earlier), "--output", str(fifo), "--quiet",
                   timeout=60)
    assert_clean_failure(proc, 1, "cannot write video", "not a regular file")
    assert earlier.read_text() == EARLIER


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the X display check is Linux's")
def test_show_on_a_display_that_cannot_be_used_is_one_line_and_touches_nothing(afw_dir, tmp_path):
    """A DISPLAY that names no X server: OpenCV's Qt would abort the whole process at the first frame; the
    window is tried first, in a child process."""
    earlier = tmp_path / "faces.jsonl"
    earlier.write_text(EARLIER)
    env = {**os.environ, "DISPLAY": ":97"}
    proc = run_cli("--source", str(afw_dir / FACE_IMAGE), "--show", "--json", str(earlier), env=env)
    assert_clean_failure(proc, 1, "cannot open a window", ":97")
    assert earlier.read_text() == EARLIER


def test_a_stop_while_the_tracker_loads_writes_nothing(afw_dir, tmp_path):
    """Ctrl-C while the models load (half a minute on a first start): the run ends there, before any output
    is opened, so the earlier files are as they were."""
    from tracker.cli import EXIT_INTERRUPTED, StopRequest, build_parser, run

    earlier, table = tmp_path / "faces.jsonl", tmp_path / "faces.csv"
    earlier.write_text(EARLIER)
    table.write_text("frame,id\n0,1\n")
    args = build_parser().parse_args(["--source", str(afw_dir / FACE_IMAGE), "--json", str(earlier),
                                      "--csv", str(table), "--quiet"])
    handlers = [signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]
    stop = StopRequest()
    stop.requested = True  # as the handler sets it
    assert run(args, stop) == EXIT_INTERRUPTED
    assert earlier.read_text() == EARLIER and table.read_text() == "frame,id\n0,1\n"
    # The stops ignored while the outputs closed are honoured again afterwards.
    assert [signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)] == handlers


def test_a_second_stop_among_a_frames_writes_leaves_it_out_of_the_count(talking_clip, tmp_path, monkeypatch, capsys):
    """A second stop interrupts at once, so it may fall between one output's write and the next (QA: the JSON
    held 22 frames, the overlay 21, and the summary said 22). The summary counts the frames written in full."""
    import tracker.cli
    from tracker.cli import EXIT_INTERRUPTED, StopRequest, build_parser, run

    written = tracker.cli.OverlayWriter.write
    calls = []

    def interrupted_on_the_third(self, image, result):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a second Ctrl-C raises it
        return written(self, image, result)

    monkeypatch.setattr(tracker.cli.OverlayWriter, "write", interrupted_on_the_third)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        args = build_parser().parse_args([str(talking_clip), "--json", str(tmp_path / "f.jsonl"),
                                          "--output", str(tmp_path / "o.mp4"), "--max-frames", "10"])
        assert run(args, StopRequest()) == EXIT_INTERRUPTED
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert len((tmp_path / "f.jsonl").read_text().splitlines()) == 3
    assert "interrupted; 2 frames" in capsys.readouterr().err


def test_a_second_stop_as_the_hold_begins_is_held_not_raised():
    """A second stop raises at once, but not when its handler runs at hold()'s first instruction, before the hold
    is marked: raised there, it escaped the `finally` that called hold (main's, the frame loop's) as a traceback.
    The stop is simulated where Python runs a signal's handler on entering a function: at its "call" event."""
    from tracker.cli import StopRequest

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    previous_trace = sys.gettrace()
    try:
        stop = StopRequest()
        stop.install()
        os.kill(os.getpid(), signal.SIGINT)  # the first stop: noted
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):  # a second one, elsewhere: raised at once
            os.kill(os.getpid(), signal.SIGINT)
        handled_in_hold = []

        def second_stop_entering_hold(frame, event, arg):
            if event == "call" and frame.f_code is StopRequest.hold.__code__:
                handled_in_hold.append(True)
                signal.getsignal(signal.SIGINT)(signal.SIGINT, frame)

        sys.settrace(second_stop_entering_hold)
        try:
            stop.hold()
        finally:
            sys.settrace(previous_trace)
        assert handled_in_hold and stop.requested
        os.kill(os.getpid(), signal.SIGINT)  # held now: noted, never raised
        stop.release()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def test_a_first_stop_while_loading_says_the_run_ends_when_loading_does(caplog):
    """A first start compiles for half a minute, deaf to a first Ctrl-C: the stop says so, and a second one
    interrupts. Outside the block a first stop says nothing."""
    from tracker.cli import StopRequest

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        stop = StopRequest()
        stop.install()
        with caplog.at_level("INFO", logger="tracker"):
            with stop.noting_a_first_stop("stopping once loading ends"):
                os.kill(os.getpid(), signal.SIGTERM)
                assert stop.requested and [r.getMessage() for r in caplog.records] == ["stopping once loading ends"]
                with pytest.raises(KeyboardInterrupt):
                    os.kill(os.getpid(), signal.SIGTERM)
            quiet = StopRequest()
            quiet.install()
            os.kill(os.getpid(), signal.SIGTERM)
            assert quiet.requested and len(caplog.records) == 1
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def test_a_first_stop_while_the_run_loads_its_models_says_so(afw_dir, tmp_path, monkeypatch, caplog):
    """The run's loading is the block that notes a first stop: the run then ends, 130, before any output opens."""
    import tracker.cli
    from tracker.cli import EXIT_INTERRUPTED, StopRequest, build_parser, run

    loading = tracker.cli.load_tracker

    def stopped_while_loading(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return loading(*args, **kwargs)

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        monkeypatch.setattr(tracker.cli, "load_tracker", stopped_while_loading)
        stop = StopRequest()
        stop.install()
        args = build_parser().parse_args(["--source", str(afw_dir / FACE_IMAGE), "--json", str(tmp_path / "f.jsonl")])
        with caplog.at_level("INFO", logger="tracker"):
            assert run(args, stop) == EXIT_INTERRUPTED
        assert "stopping once loading ends" in caplog.text and not (tmp_path / "f.jsonl").exists()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def test_stops_after_the_run_leave_its_exit_code_alone(monkeypatch):
    """A stop between the run's end and the hold on stops is the run's interruption, not a traceback; once the
    command's main returns, stops are ignored, or Python's default handlers, put back while the interpreter
    ends, would turn the exit code into the signal's (143 for SIGTERM)."""
    import tracker.cli
    from tracker import launcher

    def stopped_as_it_ends(args, stop):
        raise KeyboardInterrupt

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        monkeypatch.setattr(tracker.cli, "_run_reporting", stopped_as_it_ends)
        assert tracker.cli.main(["--source", "x.mp4"]) == tracker.cli.EXIT_INTERRUPTED
        monkeypatch.setattr(tracker.cli, "main", lambda: 0)
        # A tracker thread an earlier test left would make the launcher end this very process (os._exit).
        monkeypatch.setattr(launcher.threading, "enumerate", list)
        assert launcher.main() == 0
        assert all(signal.getsignal(sig) == signal.SIG_IGN for sig in launcher.STOP_SIGNALS)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def test_threads_beyond_the_cpu_count_are_refused():
    from tracker.pipeline import usable_cpus

    proc = run_cli("--threads", str(usable_cpus() + 1))
    assert proc.returncode == 2 and "at most" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------ names that are not UTF-8, a full disk

def _bytes_name(folder: Path, name: bytes) -> Path:
    return Path(os.fsdecode(os.path.join(os.fsencode(folder), name)))


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes in a name")
def test_file_names_that_are_not_utf8(afw_dir, tmp_path, talking_clip):
    """OpenCV's file functions crash the process on such names: images are decoded from their bytes, their
    overlays encoded and written by Python, and a video in or out is refused in one line. The outputs write
    the name readably (\\xff), as strict JSON and CSV readers take it."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    odd = _bytes_name(folder, b"a_\xff.jpg")
    odd.write_bytes((afw_dir / FACE_IMAGE).read_bytes())
    (folder / "b_ok.jpg").write_bytes((afw_dir / FACE_IMAGE).read_bytes())
    out, table, overlays = tmp_path / "faces.jsonl", tmp_path / "faces.csv", tmp_path / "overlays"
    proc = run_cli("--source", str(folder), "--json", str(out), "--csv", str(table), "--output", str(overlays),
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    raw = out.read_bytes()
    raw.decode("utf-8")  # valid UTF-8 throughout
    records = [json.loads(line) for line in raw.decode().splitlines()]
    assert [Path(r["source"]).name for r in records] == ["a_\\xff.jpg", "b_ok.jpg"]
    assert all(len(r["faces"]) == 1 for r in records)
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    assert [Path(r["source"]).name for r in rows] == ["a_\\xff.jpg", "b_ok.jpg"]
    assert len(list(overlays.glob("*.png"))) == 2
    video = _bytes_name(tmp_path, b"v_\xff.mp4")
    video.write_bytes(talking_clip.read_bytes())
    assert_clean_failure(run_cli("--source", str(video), "--quiet"), 2, "not UTF-8")
    proc = run_cli("--source", str(afw_dir / FACE_IMAGE), "--output", str(_bytes_name(tmp_path, b"w_\xff.mp4")))
    assert_clean_failure(proc, 1, "not UTF-8")


def _file_size_limit(limit: int):
    def apply() -> None:  # in the child: writes past `limit` bytes fail (EFBIG), as on a full disk
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_FSIZE to make writes fail")
def test_a_write_that_fails_part_way_leaves_whole_records_and_says_so(talking_clip, tmp_path):
    """A full disk (here: a file size limit) mid-run: exit 1 with one line; the JSON Lines and CSV are cut
    back to their last whole record, and an overlay video that could not be finished is reported, not left
    silently unplayable."""
    out, table, video = tmp_path / "faces.jsonl", tmp_path / "faces.csv", tmp_path / "overlay.mp4"
    args = [sys.executable, str(REPO / "run_tracker.py"), "--source", str(talking_clip), "--quiet"]
    # The limit holds for every file the process writes, Numba's cache of the fit's kernels too (about 0.8 MB
    # each): a first start must not hit it, so the cache is filled first.
    assert run_cli("--source", str(talking_clip), "--max-frames", "1", "--quiet").returncode == 0
    proc = subprocess.run([*args, "--json", str(out), "--csv", str(table)], capture_output=True, text=True,
                          cwd=REPO, timeout=120, preexec_fn=_file_size_limit(200_000), check=False)
    assert_clean_failure(proc, 1, "cannot write")
    text = out.read_text()
    assert text.endswith("\n") and 10 < len(text.splitlines()) < 448
    assert all(json.loads(line)["frame"] == i for i, line in enumerate(text.splitlines()))
    rows = list(csv.reader(table.open()))
    assert len(rows) > 10 and len({len(row) for row in rows}) == 1
    proc = subprocess.run([*args, "--output", str(video)], capture_output=True, text=True, cwd=REPO, timeout=120,
                          preexec_fn=_file_size_limit(200_000), check=False)
    assert_clean_failure(proc, 1, "could not be completed")


def test_sighup_mid_file_closes_every_output_whole(talking_clip, tmp_path):
    """The terminal closing (SIGHUP) ends the run as Ctrl-C does: the overlay video plays."""
    out, video = tmp_path / "faces.jsonl", tmp_path / "overlay.mp4"
    proc = subprocess.Popen([sys.executable, str(REPO / "run_tracker.py"), "--source", str(talking_clip), "--json",
                             str(out), "--output", str(video), "--quiet"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    wait_for_lines(proc, out, 10)
    proc.send_signal(signal.SIGHUP)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    n = len(read_jsonl(out))
    assert 10 <= n < 448 and frames_played(video) == n


@pytest.mark.skipif(sys.platform != "linux", reason="uses a pseudo-terminal")
def test_the_terminal_closing_mid_file_ends_as_a_stop(talking_clip, tmp_path):
    """A run with its progress bar on a terminal that goes away (a closed window, a dropped SSH link): SIGHUP,
    and every later write to the terminal fails. Exit 130, the outputs whole."""
    import fcntl
    import pty
    import select
    import termios

    def own_terminal() -> None:  # in the child: a session of its own, with the pty as controlling terminal
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    out, video = tmp_path / "faces.jsonl", tmp_path / "overlay.mp4"
    try:
        controller, terminal = pty.openpty()
    except OSError as exc:
        pytest.skip(f"no pseudo-terminals here: {exc}")
    proc = subprocess.Popen([sys.executable, str(REPO / "run_tracker.py"), "--source", str(talking_clip), "--json",
                             str(out), "--output", str(video)], cwd=REPO, stdin=terminal, stdout=terminal,
                            stderr=terminal, preexec_fn=own_terminal)  # noqa: PLW1509 -- two system calls, no locks
    os.close(terminal)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 10):
            if select.select([controller], [], [], 0.05)[0]:
                os.read(controller, 65536)  # the progress bar; unread, it would fill the terminal and block
    finally:
        os.close(controller)  # the terminal goes away: SIGHUP to its session, EIO on every write
    assert proc.wait(timeout=60) == 130
    records = read_jsonl(out)
    assert 10 <= len(records) < 448 and frames_played(video) == len(records)
    assert [r["frame"] for r in records] == list(range(len(records)))


def test_json_to_stdout_read_by_head_ends_quietly_and_cut_back_when_redirected(talking_clip, tmp_path):
    """`--json /dev/stdout | head -1` ends with exit 0 as `--json -` does; `--json - > file` on a full disk
    (here a file size limit) is cut back to whole lines like a named file."""
    proc = subprocess.Popen(f"{sys.executable} run_tracker.py --source {talking_clip} --json /dev/stdout --quiet "
                            "| head -1", shell=True, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, executable="/bin/bash")
    stdout, stderr = proc.communicate(timeout=120)
    assert json.loads(stdout)["frame"] == 0 and "ERROR" not in stderr and "Traceback" not in stderr, stderr
    assert run_cli("--source", str(talking_clip), "--max-frames", "1", "--quiet").returncode == 0  # cache filled
    out = tmp_path / "redirected.jsonl"
    with out.open("wb") as target:
        done = subprocess.run([sys.executable, str(REPO / "run_tracker.py"), "--source", str(talking_clip),
                               "--json", "-", "--quiet"], stdout=target, stderr=subprocess.PIPE, text=True, cwd=REPO,
                              timeout=120, preexec_fn=_file_size_limit(150_000), check=False)
    assert_clean_failure(done, 1, "cannot write JSON Lines")
    text = out.read_text()
    assert text.endswith("\n") and 10 < len(text.splitlines()) < 448
    assert all(json.loads(line)["frame"] == i for i, line in enumerate(text.splitlines()))


def test_a_disk_too_full_to_start_on_leaves_the_earlier_json_and_csv_whole(monkeypatch, tmp_path):
    """Under 1 MB free where they are written, the writers refuse to start, before emptying anything: the run
    would stop at its first frames and the earlier files would be lost for nothing. (The disk's free space is
    stood in for; on a real full disk the header's write would fail after the CSV was emptied.)"""
    import shutil

    from tracker import outputs

    earlier_json, earlier_csv = tmp_path / "faces.jsonl", tmp_path / "faces.csv"
    earlier_json.write_text(EARLIER)
    earlier_csv.write_text("frame,id\n0,1\n")
    real = shutil.disk_usage
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda path: real(path)._replace(free=300_000))
    for writer in (outputs.CsvWriter(str(earlier_csv), [], occlusion=False, start=False),
                   outputs.JsonlWriter(str(earlier_json), start=False)):
        with pytest.raises(outputs.OutputError, match=r"disk is too full \(0.30 MB free\); the earlier file"):
            writer.start()
        writer.close()
    assert earlier_json.read_text() == EARLIER and earlier_csv.read_text() == "frame,id\n0,1\n"
    monkeypatch.setattr(outputs.shutil, "disk_usage", real)
    writer = outputs.JsonlWriter(str(earlier_json), start=False)
    writer.start()  # room enough: emptied as before
    writer.close()
    assert earlier_json.read_text() == ""


@pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_FSIZE and shell redirections")
def test_appending_to_stdout_and_a_full_disk_at_the_start_keep_earlier_contents(talking_clip, tmp_path):
    """`--json - >> log` on a full disk is cut back to where the log stood, never to its start; a CSV that
    cannot take its header on a full disk leaves the JSON of an earlier run as it was (the CSV is started
    first)."""
    assert run_cli("--source", str(talking_clip), "--max-frames", "1", "--quiet").returncode == 0  # cache filled
    log = tmp_path / "log.jsonl"
    earlier = '{"earlier": 1}\n' * 5000
    log.write_text(earlier)
    with log.open("ab") as target:
        proc = subprocess.run([sys.executable, str(REPO / "run_tracker.py"), "--source", str(talking_clip), "--json",
                               "-", "--quiet"], stdout=target, stderr=subprocess.PIPE, text=True, cwd=REPO,
                              timeout=120, preexec_fn=_file_size_limit(len(earlier) + 30_000), check=False)
    assert_clean_failure(proc, 1, "cannot write JSON Lines")
    text = log.read_text()
    assert text.startswith(earlier) and text.endswith("\n") and len(text) > len(earlier)
    added = text[len(earlier):].splitlines()
    assert [json.loads(line)["frame"] for line in added] == list(range(len(added)))
    json_file = tmp_path / "faces.jsonl"
    json_file.write_text(EARLIER)
    proc = subprocess.run([sys.executable, str(REPO / "run_tracker.py"), "--source", str(talking_clip), "--json",
                           str(json_file), "--csv", str(tmp_path / "faces.csv"), "--quiet"], capture_output=True,
                          text=True, cwd=REPO, timeout=120, preexec_fn=_file_size_limit(0), check=False)
    assert_clean_failure(proc, 1, "cannot write CSV")
    assert json_file.read_text() == EARLIER


@pytest.mark.skipif(sys.platform != "linux", reason="uses shell redirections and /dev/stdout")
def test_stdout_and_stderr_that_are_closed_gone_or_shared(talking_clip, tmp_path):
    """A reader of the log that goes away (`2>&1 | head -c 20`) stops the progress bar, not the run; `--json -`
    with stdout closed is one line; two outputs reaching one file through /dev/stdout are refused."""
    out = tmp_path / "faces.jsonl"
    shell = f"{sys.executable} run_tracker.py --source {talking_clip} --max-frames 60 --json {out}"
    proc = subprocess.run(f"{shell} 2>&1 | head -c 20 >/dev/null; exit ${{PIPESTATUS[0]}}", shell=True, cwd=REPO,
                          executable="/bin/bash", timeout=120, check=False)
    assert proc.returncode == 0 and len(read_jsonl(out)) == 60
    proc = subprocess.run(f"{sys.executable} run_tracker.py --source {talking_clip} --json - >&-", shell=True,
                          cwd=REPO, executable="/bin/bash", capture_output=True, text=True, timeout=120, check=False)
    assert_clean_failure(proc, 1, "standard output is closed")
    proc = subprocess.run(f"{sys.executable} run_tracker.py --source {talking_clip} --json /dev/stdout --csv - "
                          f"> {tmp_path / 'both.txt'}", shell=True, cwd=REPO, executable="/bin/bash",
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "both write to stdout" in proc.stderr
    # stdout a pipe, reached under two names; and the null device, which any number of outputs may share.
    base = [sys.executable, "run_tracker.py", "--source", str(talking_clip), "--max-frames", "2", "--quiet"]
    proc = subprocess.run([*base, "--json", "-", "--csv", "/dev/stdout"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2 and "both write to '/dev/stdout'" in proc.stderr and not proc.stdout, proc.stderr
    proc = subprocess.run([*base, "--json", "/dev/null", "--csv", "/dev/null"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="an X display is a Unix socket here")
def test_a_stop_during_the_display_probe_ends_at_once(afw_dir, tmp_path):
    """A display that accepts and never answers (a hung X server) holds the window probe; SIGTERM to the run
    alone still ends it within a second, 130, the earlier JSON untouched."""
    import socket

    number = 90 + os.getpid() % 9
    sockets = Path("/tmp/.X11-unix")
    sockets.mkdir(exist_ok=True)
    path = sockets / f"X{number}"
    if path.exists():
        pytest.skip(f"display :{number} is in use")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(8)
    earlier = tmp_path / "faces.jsonl"
    earlier.write_text(EARLIER)
    try:
        proc = subprocess.Popen([sys.executable, str(REPO / "run_tracker.py"), "--source", str(afw_dir / FACE_IMAGE),
                                 "--show", "--json", str(earlier)], cwd=REPO, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "DISPLAY": f":{number}"})
        deadline = time.time() + 60
        while time.time() < deadline and not any(  # the probe's child is connecting
                "_WINDOW_PROBE" in c or "namedWindow" in c for c in _children_command_lines(proc.pid)):
            time.sleep(0.05)
        time.sleep(0.5)
        _assert_stops_at_once(proc, signal.SIGTERM, earlier)  # not after the probe's 10 s timeout
    finally:
        server.close()
        path.unlink(missing_ok=True)


def test_ctrl_c_while_a_stream_takes_its_time_to_open_ends_at_once(silent_host, tmp_path):
    """A stream host that accepts and never answers holds the open for FFmpeg's 10 s timeout; Ctrl-C ends
    the run within a second or two, 130, no traceback, the earlier JSON untouched."""
    if not cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG):
        pytest.skip("this OpenCV build has no FFmpeg backend, which is what waits on a stream")
    url, accepted = silent_host
    earlier = tmp_path / "faces.jsonl"
    earlier.write_text(EARLIER)
    proc = subprocess.Popen([sys.executable, str(REPO / "run_tracker.py"), "--source", url, "--json", str(earlier)],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        assert accepted.wait(60), "the run never connected"
        time.sleep(0.3)
        _assert_stops_at_once(proc, signal.SIGINT, earlier)  # not after FFmpeg's 10 s open timeout
    finally:
        proc.kill()


def test_ctrl_c_while_a_later_stream_opens_ends_at_once_with_the_overlay_whole(silent_host, talking_clip,
                                                                               tmp_path):
    """Several sources, the second a stream that never answers: a stop while it opens ends the run at once (the
    overlay video's check that it plays would wait out FFmpeg's open timeout behind the abandoned open), with the
    first source's records, an overlay that plays them and the summary."""
    if not cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG):
        pytest.skip("this OpenCV build has no FFmpeg backend, which is what waits on a stream")
    url, accepted = silent_host
    cap = cv2.VideoCapture(str(talking_clip))
    clip = tmp_path / "first.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 25, (512, 512))
    for _ in range(8):
        writer.write(cap.read()[1])
    writer.release()
    out, overlay = tmp_path / "out.jsonl", tmp_path / "overlay.mp4"
    proc = subprocess.Popen([sys.executable, str(REPO / "run_tracker.py"), str(clip), url, "--json", str(out),
                             "--output", str(overlay)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        assert accepted.wait(60), "the run never connected"
        time.sleep(0.3)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - sent < 5.0 and proc.returncode == 130 and "Traceback" not in stderr, stderr
    finally:
        proc.kill()
    assert "interrupted; 1 of 2 sources, 8 frames" in stderr, stderr
    assert len(read_jsonl(out)) == 8 and frames_played(overlay) == 8


def _wchan_shows_waits() -> bool:
    """Whether /proc/PID/wchan names where a process waits (some kernels and sandboxes always read "0")."""
    if not Path("/proc/self/wchan").exists():
        return False
    sleeper = subprocess.Popen(["sleep", "5"])
    try:
        time.sleep(0.2)
        return Path(f"/proc/{sleeper.pid}/wchan").read_text() not in ("", "0")
    finally:
        sleeper.kill()
        sleeper.wait()


def _wait_in(proc: subprocess.Popen, wchan: str, timeout: float = 60.0) -> None:
    where = Path(f"/proc/{proc.pid}/wchan")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and where.read_text() != wchan:
        time.sleep(0.05)
    assert where.read_text() == wchan, f"the run never waited in {wchan}"


def test_a_second_stop_ends_a_run_held_up_by_a_json_pipe_nobody_reads(talking_clip):
    """--json - into a pipe whose reader stopped reading: the write blocks, and a stop cannot be looked at;
    a second one ends the run, 130, and the exit does not wait on the pipe (stdout is written unbuffered, also
    when PYTHONUNBUFFERED is not set)."""
    if not _wchan_shows_waits():
        pytest.skip("/proc/PID/wchan does not show where a process waits here")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen([sys.executable, str(REPO / "run_tracker.py"), "--source", str(talking_clip), "--json", "-",
                             "--quiet"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        _wait_in(proc, "anon_pipe_write")  # the pipe's 64 kB are full: nobody reads stdout here
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None  # the first stop waits for the write, which waits for the reader
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 130
    finally:
        proc.kill()
        proc.stdout.close()


def test_a_stop_while_the_json_fifo_waits_for_its_reader_ends_at_once(afw_dir, tmp_path):
    """--json to a FIFO that nobody reads yet: opening it waits for a reader, and SIGTERM (a `kill`) still ends
    the run at once, 130, the CSV (opened after the JSON) untouched."""
    if not _wchan_shows_waits():
        pytest.skip("/proc/PID/wchan does not show where a process waits here")
    fifo, earlier = tmp_path / "faces.fifo", tmp_path / "faces.csv"
    os.mkfifo(fifo)
    earlier.write_text(EARLIER)
    proc = subprocess.Popen([sys.executable, str(REPO / "run_tracker.py"), "--source", str(afw_dir / FACE_IMAGE),
                             "--json", str(fifo), "--csv", str(earlier), "--quiet"], cwd=REPO, stderr=subprocess.PIPE,
                            text=True)
    try:
        _wait_in(proc, "wait_for_partner")
        _assert_stops_at_once(proc, signal.SIGTERM, earlier)
    finally:
        proc.kill()


def _assert_stops_at_once(proc: subprocess.Popen, signum: int, earlier: Path) -> None:
    """`signum` to the run ends it within 5 s, 130, no traceback, the earlier JSON file `earlier` untouched."""
    sent = time.monotonic()
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert time.monotonic() - sent < 5.0
    assert earlier.read_text() == EARLIER


def _children_command_lines(pid: int) -> list[str]:
    lines = []
    for child in Path("/proc").glob("[0-9]*"):
        try:
            if int((child / "stat").read_text().split(") ")[1].split()[1]) == pid:
                lines.append((child / "cmdline").read_text().replace("\0", " "))
        except (OSError, ValueError, IndexError):
            continue
    return lines
