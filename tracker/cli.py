"""Command line: read a source, track faces, write JSON Lines / overlay / window."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import stat
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn, TextIO

from tracker.avatar import (
    VMC_DEFAULT_PORT,
    AddressError,
    UdpJsonSender,
    VmcSender,
    parse_host_port,
    shown_address,
)
from tracker.backends import BACKENDS, BackendError
from tracker.detector import DETECTOR_MODELS
from tracker.jit_cache import cache_failure_message
from tracker.outputs import (
    CsvWriter,
    JsonlWriter,
    OutputError,
    OverlayWriter,
    Window,
    named_like_an_overlay_frame,
    overlay_is_video,
    probe_display,
)
from tracker.pipeline import FaceTracker, TrackerConfig, usable_cpus
from tracker.sources import FrameSource, SourceError, absent_source_error, open_source
from tracker.types import readable_path

UDP_JSON_PORT = 40000  # default for --udp-json when only a host is given

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
# Loading the tracker takes about a second once Numba's cache holds its kernels. Slower than this, it is the
# first start after installing, which compiles them (20-30 s on a 2-core machine): the user is told so.
SLOW_START_S = 3.0

log = logging.getLogger("tracker")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH such as 1280x720, got '{text}'") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got '{text}'")
    return w, h


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (the tools' counts use it too)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def _thread_count(text: str) -> int:
    value = positive_int(text)
    if value > (cpus := usable_cpus()):
        raise argparse.ArgumentTypeError(f"at most the {cpus} CPUs this process may use, got '{text}'")
    return value


def _focal_length(text: str) -> float:
    value = positive_float(text)
    if not 1.0 <= value <= 1e6:  # 1 px is a 180° view, 1e6 px a telescope's: outside, a typo
        raise argparse.ArgumentTypeError(f"expected a focal length of 1 to 1000000 pixels, got '{text}'")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
    return value


def _output_clashes(args: argparse.Namespace) -> str | None:
    """Why the output options cannot all be honoured, or None: an empty value, a --vmc-... option without
    --vmc, an address that is not one, two outputs on one file (or both on stdout), or an output on the
    source itself (it would be overwritten before it is read)."""
    named = {"--json": args.json, "--csv": args.csv, "--output": args.output, "--vmc": args.vmc,
             "--udp-json": args.udp_json}
    for option, value in named.items():
        if value is not None and not value.strip():
            return f"{option} needs a value, got an empty one"
    for option, given, does in (("--vmc-mirror", args.vmc_mirror, "mirrors"),
                                ("--vmc-eye-bones", args.vmc_eye_bones, "adds to"),
                                ("--vmc-presets", args.vmc_presets, "adds to"),
                                ("--vmc-pascal-case", args.vmc_pascal_case, "spells")):
        if given and not args.vmc:
            return f"{option} {does} what --vmc sends; give --vmc HOST[:PORT] too"
    if args.wireframe and not (args.output or args.show):
        return "--wireframe draws on the overlay; give --output or --show too"
    if args.wireframe and args.no_fit:
        return "--wireframe draws the face mesh's triangles, which come with the 3D fit's model; --no-fit leaves it out"
    for option, value, port in (("--vmc", args.vmc, VMC_DEFAULT_PORT), ("--udp-json", args.udp_json, UDP_JSON_PORT)):
        if value:
            try:
                parse_host_port(value, port)
            except ValueError as exc:
                return f"{option}: {exc}"
    files = {option: value for option, value in named.items() if option in ("--json", "--csv", "--output") and value}
    seen: dict[object, str] = {}
    inputs = set().union(*(_folder_files(source) for source in args.sources))
    sources = {_written_file(path) for path in map(_local_path, args.sources) if os.path.exists(path)}
    for option, value in files.items():
        key = _written_file(value)
        if key in seen:
            return f"{seen[key]} and {option} both write to " + ("stdout" if value == "-" else f"'{value}'")
        seen[key] = option
        if value != "-" and key in sources:
            return f"{option} '{value}' is the source itself; it would be overwritten"
        if value != "-" and key in inputs:
            return f"{option} '{value}' is a file in the source folder; it would be overwritten before it is read"
    if args.output == "-":
        return "--output writes a video file or a folder of PNG frames; stdout ('-') is for --json and --csv"
    if args.output and not overlay_is_video(args.output):
        folder = os.path.realpath(args.output)

        def among_its_frames(path: str) -> bool:  # in the overlay folder, named as a frame is (or while written)
            real = os.path.realpath(path)  # a link's target is the file written
            name = os.path.basename(real)
            name = name[:-len(".part")] if name.lower().endswith(".part") else name
            return os.path.dirname(real) == folder and named_like_an_overlay_frame(name)

        for option in ("--json", "--csv"):
            value = files.get(option)
            if value and value != "-" and among_its_frames(value):
                return (f"{option} '{value}' is in the overlay folder '{args.output}' and named like its frames; "
                        "an overlay frame could overwrite it")
        # With several sources, a source named so could be overwritten by an earlier source's frame before it is read.
        for source in args.sources if len(args.sources) > 1 else ():
            if os.path.isfile(path := _local_path(source)) and among_its_frames(path):
                return (f"source '{source}' is in the overlay folder '{args.output}' and named like its frames; "
                        "an earlier source's overlay frame could overwrite it before it is read")
    return None


def _local_path(source: str) -> str:
    """The file a source names on this machine: a `file:` URL (file:///home/me/clip.mp4) is opened by FFmpeg as
    the text after `file:`; any other source, a file named `file:clip.mp4` among them, names itself."""
    return source.removeprefix("file:") if "://" in source else source


def _folder_files(path: str) -> set[object]:
    """The _written_file keys of the files directly in folder `path` (none when it is not a folder)."""
    keys = set()
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                try:
                    if entry.is_file():
                        keys.add(_written_file(entry.path))
                except OSError:  # a link in a loop, a file gone meanwhile: nothing to protect
                    continue
    except OSError:
        pass
    return keys


def _written_file(path: str) -> object:
    """What an output path (``-``: stdout) writes to, the same for every name of one file: the device and inode
    of what exists (so a link, a hard link, `/dev/stdout` or a redirect to it are told, a pipe or a terminal
    too), else the real path; stdout that cannot be looked at is "stdout". The null device is a new object each
    time: any number of outputs may be thrown away there."""
    try:
        info = os.fstat(sys.stdout.fileno()) if path == "-" else os.stat(path)
    except (OSError, ValueError, AttributeError):
        return "stdout" if path == "-" else os.path.realpath(path)
    if stat.S_ISCHR(info.st_mode) and info.st_rdev == _null_device():
        return object()
    return info.st_dev, info.st_ino


def _null_device() -> int | None:
    try:
        return os.stat(os.devnull).st_rdev
    except OSError:
        return None


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default where it has one; "None" and "False" say nothing the help text does not."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def _one_line(text: str) -> str:
    """`text` with its line breaks written out: a file name may hold one, and a message is one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _one_line(super().format(record))


class _GivenOnce(argparse.Action):
    """An option that may be given once: a second value would silently replace the first."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        if getattr(namespace, self.dest) is not None:
            parser.error(f"{option_string} given twice ({getattr(namespace, self.dest)!r} and {values!r}); for "
                         "several sources, give them all without --source")
        setattr(namespace, self.dest, values)


class _Parser(argparse.ArgumentParser):
    """A bad option is one line, as every other bad input is: argparse would print the whole usage block
    (ten lines of options) above it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (--help lists the options)\n")

    def parse_args(self, args: list[str] | None = None,
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """argparse's, with the sources resolved into ``sources``: one given as --source, or one or more alone
        (not both), the first camera if none. A camera cannot be one of several: it does not end."""
        given = sys.argv[1:] if args is None else list(args)
        # Sources may sit among the options (`a.mp4 --json out.jsonl b.mp4`). Python 3.11's intermixed parsing
        # does not take `--`, after which every word is a source (names that start with '-'): those are added here.
        cut = given.index("--") if "--" in given else len(given)
        parsed = super().parse_intermixed_args(given[:cut], namespace)
        parsed.source_positional = [*parsed.source_positional, *given[cut + 1:]]
        if parsed.source_positional:
            if parsed.source is not None:
                self.error(f"two sources given: --source {parsed.source!r} and "
                           f"{' '.join(map(repr, parsed.source_positional))}; give them all without --source")
            parsed.sources = parsed.source_positional
        else:
            parsed.sources = ["0" if parsed.source is None else parsed.source]
        cameras = [s for s in parsed.sources if s.isascii() and s.isdigit()]
        if len(parsed.sources) > 1 and cameras:
            self.error(f"camera {cameras[0]} cannot be one of several sources (a camera does not end); track it "
                       f"alone, or name a file called '{cameras[0]}' as './{cameras[0]}'")
        if not cameras:  # a file, folder or stream has no camera to ask: the options would do nothing
            for option, value in (("--camera-size", parsed.camera_size), ("--camera-fps", parsed.camera_fps)):
                if value is not None:
                    self.error(f"{option} asks a webcam for what it delivers; {parsed.sources[0]!r} is not a webcam "
                               "(a webcam is a number: 0, 1, ...)")
        del parsed.source, parsed.source_positional
        return parsed


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        description="Track faces in a webcam, video file, image, image folder or stream: 68 landmarks per face, "
                    "with confidence and occlusion, head pose and 52 ARKit blendshapes.",
        formatter_class=_HelpFormatter,
    )
    io = p.add_argument_group("input and output")
    io.add_argument("--source", default=None, action=_GivenOnce,
                    help="webcam index, video file, image file, image folder, or stream URL (rtsp://, http://) "
                         "(default: 0, the first webcam)")
    # `run_tracker.py clip.mp4` is what most people type first; it means --source clip.mp4. Several
    # (`run_tracker.py clips/*.mp4`) are tracked one after another into the same outputs.
    io.add_argument("source_positional", nargs="*", metavar="SOURCE",
                    help="the same as --source SOURCE; several are tracked one after another, each from its own "
                         "first frame, into the same outputs")
    io.add_argument("--json", metavar="PATH", help="write one JSON object per frame (JSON Lines); '-' for stdout")
    io.add_argument("--csv", metavar="PATH", help="write one row per face per frame (CSV); '-' for stdout")
    io.add_argument("--output", metavar="PATH",
                    help="overlay: a video file (.mp4 .avi .mkv .mov) or a folder for PNG frames")
    io.add_argument("--wireframe", action="store_true",
                    help="with --output or --show: draw the face mesh's wireframe (its triangles come with the 3D "
                         "fit's model: not with --no-fit)")
    io.add_argument("--show", action="store_true", help="show a live window with the overlay (q or Esc quits)")
    io.add_argument("--vmc", metavar="HOST[:PORT]",
                    help="send blendshapes and head rotation to a VMC receiver over OSC/UDP (default port 39539)")
    io.add_argument("--vmc-mirror", action="store_true",
                    help="with --vmc: the avatar moves as your mirror image (your left is its right)")
    io.add_argument("--vmc-eye-bones", action="store_true",
                    help="with --vmc: also turn the avatar's LeftEye and RightEye bones with your gaze "
                         "(for avatars without eyeLook blendshapes)")
    io.add_argument("--vmc-pascal-case", action="store_true",
                    help="with --vmc: spell the ARKit names as VRM perfect-sync clips are named (EyeBlinkLeft), for "
                         "receivers that match names case by case (VMagicMirror)")
    io.add_argument("--vmc-presets", action="store_true",
                    help="with --vmc: also send VRM presets made from the ARKit weights (Blink_L/R, A, LookUp/Down/"
                         "Left/Right), for avatars without the 52 perfect-sync clips")
    io.add_argument("--udp-json", metavar="HOST[:PORT]",
                    help=f"send each frame's JSON record as one UDP datagram (default port {UDP_JSON_PORT})")
    io.add_argument("--max-frames", type=positive_int, metavar="N", help="stop after N frames")
    io.add_argument("--camera-size", type=_size, metavar="WxH", help="ask the camera for this resolution")
    io.add_argument("--camera-fps", type=positive_float, metavar="FPS", help="ask the camera for this frame rate")
    model = p.add_argument_group("tracking")
    model.add_argument("--backend", choices=BACKENDS, default="auto",
                       help="inference runtime; auto = TensorRT when usable, else ONNX Runtime")
    model.add_argument("--detector", choices=sorted(DETECTOR_MODELS), default="short",
                       help="BlazeFace model: short (faces within ~2 m) or full range (small, distant faces)")
    model.add_argument("--max-faces", type=positive_int, default=1, metavar="N", help="track at most this many faces")
    model.add_argument("--redetect-interval", type=positive_int, default=10, metavar="N",
                       help="while fewer than --max-faces are tracked, look for new faces every N frames (and search "
                            "a new shot in full at most once in N frames)")
    model.add_argument("--refiner", choices=("rdr", "none"), default="rdr",
                       help="68-point refinement: rdr = the trained refiner; none = the plain mesh mapping")
    model.add_argument("--no-fit", action="store_true",
                       help="skip the 3D face model fit (no pose, blendshapes or gaze; occlusion flags only from the "
                            "refiner, none with --refiner none)")
    model.add_argument("--no-mirror", action="store_true",
                       help="skip the mirror-image pass (no landmark confidence; about 4-7 ms faster per face on a 2-core CPU)")
    smoothing = model.add_mutually_exclusive_group()
    smoothing.add_argument("--no-smooth", action="store_true",
                           help="no temporal smoothing of landmarks, pose, blendshapes and gaze (raw per-frame values)")
    smoothing.add_argument("--steady", action="store_true",
                           help="stronger smoothing, for avatars: less jitter, up to about 2 frames of lag (under 1 without it)")
    model.add_argument("--focal", type=_focal_length, metavar="PX",
                       help="camera focal length in pixels (1 to 1,000,000), for the 3D fit's pose and translation_mm "
                            "(the image width if not given)")
    model.add_argument("--threads", type=_thread_count, metavar="N",
                       help="CPU threads per model for ONNX Runtime, at most the CPU count (1 if not given: fastest "
                            "for one or two faces)")
    misc = p.add_argument_group("misc")
    misc.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    misc.add_argument("--debug", action="store_true", help="show full tracebacks of unexpected errors")
    return p


# The stops a run honours: Ctrl-C, `kill`, and the terminal going away (a closed window, a dropped SSH link).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class StopRequest:
    """Ctrl-C, SIGTERM and SIGHUP ask the frame loop to stop after the current frame.

    Raising KeyboardInterrupt inside native code (ONNX Runtime, a Numba kernel) can surface
    as another error; a flag checked between frames always ends the run cleanly, with every
    output flushed. A second stop interrupts at once (KeyboardInterrupt), and so does the first
    while the run waits in :meth:`interruptible` (opening a FIFO that has no reader yet), where the
    flag would not be looked at. Once the outputs are being closed, further stops are ignored,
    so that they are closed whole.
    """

    def __init__(self) -> None:
        self.requested = False
        self._interrupt_now = False  # inside interruptible(): a stop raises at once
        self._holding = False  # hold() has begun: a stop is noted, never raised
        self._held: dict[int, object] = {}  # while the outputs close: each stop signal's handler before
        self._first_stop_note: str | None = None  # said at a first stop inside noting_a_first_stop()

    def install(self) -> None:
        def handler(signum, frame):
            # A write to a pipe whose reader has stopped reading blocks, and the system call is retried after
            # the handler; a second stop raises, so that it ends the run all the same.
            again = self.requested
            self.requested = True
            # A stop whose handler runs as hold() begins (at its first instruction, before it is marked) is held
            # too: raised there, it would escape the `finally` that called hold, as a traceback.
            holding = self._holding or (frame is not None and frame.f_code is StopRequest.hold.__code__)
            if (again or self._interrupt_now) and not holding:
                raise KeyboardInterrupt
            if self._first_stop_note and not again:
                log.info(self._first_stop_note)

        for sig in STOP_SIGNALS:
            signal.signal(sig, handler)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A stop during the block raises KeyboardInterrupt at once: for calls that may wait without end and
        leave nothing half done when cut short."""
        self._interrupt_now = True
        try:
            if self.requested:  # a stop that came just before the block: the block would not see it
                raise KeyboardInterrupt
            yield
        finally:
            self._interrupt_now = False

    @contextmanager
    def noting_a_first_stop(self, note: str | None) -> Iterator[None]:
        """A first stop during the block says ``note`` (None: nothing): for work that goes on to its end, so long
        that a stop that seems to do nothing would look like a hang."""
        self._first_stop_note = note
        try:
            yield
        finally:
            self._first_stop_note = None

    def hold(self) -> None:
        """Stops are noted, never raised, until :meth:`release`: a source or the outputs are being closed (and
        with several sources, a stop noted here ends the run before the next one)."""
        self._holding = True  # first: a stop while the handlers are swapped must not raise out of here
        if not self._held:
            self._held = {sig: signal.signal(sig, self._note) for sig in STOP_SIGNALS}

    def _note(self, signum: int, frame: object) -> None:
        self.requested = True

    def release(self) -> None:
        """The handlers :meth:`hold` replaced are back."""
        for sig, handler in self._held.items():
            signal.signal(sig, handler)
        self._held = {}
        self._holding = False


def load_tracker(config: TrackerConfig, quiet: bool = False, notice_after_s: float = SLOW_START_S) -> FaceTracker:
    """FaceTracker(config), with a note on stderr when it takes longer than ``notice_after_s``: the first start
    after installing compiles the 3D fit's kernels, and a silent half minute looks like a hang."""
    message = ("still loading: the first start after installing compiles the 3D fit's kernels (about half a "
               "minute); later starts load them from Numba's cache")
    notice = threading.Timer(notice_after_s, log.info, (message,))
    notice.daemon = True
    if not quiet:
        notice.start()
    try:
        tracker = FaceTracker(config)
        # Every stage loaded and every network run once now, so that a damaged file stops the run before any
        # output is opened, not at the first face, and the first face is not slowed by first-call allocations.
        tracker.warm_up()
        return tracker
    finally:
        notice.cancel()


def run(args: argparse.Namespace, stop: StopRequest) -> int:
    config = TrackerConfig(
        backend=args.backend,
        detector=args.detector,
        max_faces=args.max_faces,
        redetect_interval=args.redetect_interval,
        threads=args.threads,
        refiner=args.refiner == "rdr",
        fit_3d=not args.no_fit,
        mirror_check=not args.no_mirror,
        smooth=not args.no_smooth,
        steady=args.steady,
        focal_px=args.focal,
    )
    names = args.sources
    several = len(names) > 1
    for name in names:  # a mistyped name among several is refused now, not after the others' hours of work
        if several and "://" not in name and not os.path.exists(name):
            raise absent_source_error(name)
    skipped: list[str] = []

    def opened_in_turn() -> Iterator[tuple[int, FrameSource]]:
        """Each source opened when its turn comes. One of several that cannot be read is skipped with a warning
        (the others' work is worth more than a stop); a single source's error is raised."""
        for number, name in enumerate(names, 1):
            try:
                yield number, open_source(name, camera_size=args.camera_size, camera_fps=args.camera_fps,
                                          cancelled=lambda: stop.requested)
            except SourceError as exc:
                if not several:
                    raise
                if stop.requested:  # stopped while it opened (a stream URL): the run ends, with its summary
                    return
                log.warning("skipped source %d of %d: %s", number, len(names), exc)
                skipped.append(name)

    sources = opened_in_turn()
    number, source = next(sources, (0, None))  # the first readable one, before any output is opened
    if source is None:
        raise SourceError(f"none of the {len(names)} sources could be read")
    outputs: list = []
    total = _Tally()
    try:
        # Whatever could refuse to run is opened first (senders, the overlay's folder, the display, the models)
        # and the JSON and CSV files are emptied last, once everything else has worked: a failed start leaves
        # the user's earlier files as they were.
        vmc = None
        if args.vmc:
            vmc = VmcSender(*parse_host_port(args.vmc, VMC_DEFAULT_PORT), mirror=args.vmc_mirror,
                            eye_bones=args.vmc_eye_bones, presets=args.vmc_presets, pascal_case=args.vmc_pascal_case)
            outputs.append(vmc)
        if args.vmc and args.no_fit:
            log.warning("--vmc with --no-fit sends no head pose or blendshapes (the 3D fit makes them), only "
                        "VMC's status messages")
        if args.udp_json:
            outputs.append(UdpJsonSender(*parse_host_port(args.udp_json, UDP_JSON_PORT)))
            if vmc and vmc.address == outputs[-1].address:  # known once both names are resolved
                raise AddressError(f"--vmc and --udp-json both send to {shown_address(vmc.address)}; a VMC "
                                   "receiver would get JSON among its OSC bundles")
        # An overlay video of several sources plays at the first one's rate, in its frame size.
        overlay = OverlayWriter(args.output, source.fps) if args.output else None
        if overlay:
            outputs.append(overlay)
        if args.show:
            try:
                probe_display(cancelled=lambda: stop.requested)
            except OutputError:
                if not stop.requested:  # Ctrl-C reaches the probe's child too: then a stop, not a display fault
                    raise
            if stop.requested:
                return EXIT_INTERRUPTED
        window = Window() if args.show else None
        if window:
            outputs.append(window)
        if stop.requested:  # asked to stop while the outputs were checked (a slow name look-up): before loading
            return EXIT_INTERRUPTED
        # A first start compiles the 3D fit's kernels for half a minute; cut short, they would be compiled again.
        with stop.noting_a_first_stop(None if args.quiet else "stopping once loading ends; stop again (Ctrl-C) to "
                                      "stop now"):
            tracker = load_tracker(config, quiet=args.quiet)
        if stop.requested:  # asked to stop while loading: nothing is tracked, nothing written
            return EXIT_INTERRUPTED
        wireframe = tracker.fitter.model.mesh468_tris if (args.wireframe and tracker.fitter) else None
        for drawn in (overlay, window):
            if drawn:
                drawn.wireframe = wireframe
        with stop.interruptible():  # opening a FIFO waits for its reader
            jsonl = JsonlWriter(args.json, start=False) if args.json else None
            if jsonl:
                outputs.append(jsonl)
            table = (CsvWriter(args.csv, tracker.fitter.model.names if tracker.fitter else [],
                               occlusion=config.fit_3d or config.refiner, start=False) if args.csv else None)
            if table:
                outputs.append(table)
        # Both opened: now they are emptied. The CSV first: its header is a write, which a full disk can
        # refuse, and then the JSON is still as it was.
        for written in (table, jsonl):
            if written:
                written.start()
        writers = _Writers(jsonl, table, [o for o in outputs if isinstance(o, (VmcSender, UdpJsonSender))],
                           overlay, window)
        while source is not None:
            shown = readable_path(os.path.basename(os.path.normpath(names[number - 1])) or names[number - 1])
            label = f"{number}/{len(names)} {shown}" if several else None
            if source.is_live and number < len(names):  # not refused: a stream can end (its sender stops)
                after = len(names) - number
                log.warning("%s is live: %s after it %s when it ends, and a stop (Ctrl-C) ends the run there",
                            source.name, "the source" if after == 1 else f"the {after} sources",
                            "begins" if after == 1 else "begin")
            ended = _track_source(source, tracker, writers, total, args, stop, label)  # leaves stops held
            if source.error:
                log.warning(source.error)
            if not ended or number == len(names):
                break
            # A stop noted while the source closed, or while the next one opens, begins no other source.
            if not stop.requested:
                stop.release()
                number, source = next(sources, (0, None))
            if stop.requested:
                total.interrupted = True
                break
            if source is not None:
                tracker.reset()  # another recording: its faces are new tracks, their IDs counting on
                if overlay:
                    overlay.next_source()
    finally:
        stop.hold()
        try:
            _close_all(outputs)
            if source is not None:
                source.close()
        finally:
            stop.release()
    if not args.quiet:
        fps = total.frames / total.seconds if total.seconds > 0 else 0.0
        note = "interrupted; " if total.interrupted else ""
        read = f"{total.sources} of {len(names)} sources, " if several else ""
        try:
            print(f"{note}{read}{total.frames} frames, {total.with_faces} with faces, mean {fps:.1f} fps "
                  f"({tracker.backend})", file=sys.stderr)
        except OSError:
            pass  # the terminal has gone (SIGHUP): the outputs are what matters, and they are closed
    if total.interrupted:
        return EXIT_INTERRUPTED
    if skipped:
        log.error("%d of %d sources could not be read (warned above): %s", len(skipped), len(names),
                  ", ".join(f"'{readable_path(name)}'" for name in skipped))
        return EXIT_BAD_INPUT
    if total.frames == 0:
        log.error("no frames were read from '%s'", names[0])
        return EXIT_BAD_INPUT
    return EXIT_OK


@dataclass
class _Tally:
    """What a run has tracked so far, over all its sources."""

    sources: int = 0  # begun
    seconds: float = 0.0  # spent tracking them (not opening them)
    frames: int = 0
    with_faces: int = 0
    interrupted: bool = False


@dataclass
class _Writers:
    """Where each result goes."""

    jsonl: JsonlWriter | None
    table: CsvWriter | None
    senders: list
    overlay: OverlayWriter | None
    window: Window | None


def _track_source(source: FrameSource, tracker: FaceTracker, writers: _Writers, total: _Tally,
                  args: argparse.Namespace, stop: StopRequest, label: str | None) -> bool:
    """Track one source to its end into the writers, counting into ``total``; False when the run is to stop
    (a stop asked for, the window closed, --max-frames reached). Stops are held from the source's closing on:
    the caller releases them (StopRequest.release) before it begins another."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    total.sources += 1
    count = source.total_frames
    if args.max_frames and count:
        count = min(count, args.max_frames - total.frames)
    bar = tqdm(total=count, desc=label, unit="frame", disable=args.quiet, dynamic_ncols=True, file=sys.stderr)
    read: deque = deque()  # frames read and not yet described: the pipeline's worker reads one ahead

    def inputs() -> Iterator[tuple]:  # iterated on the worker thread
        for frame in source:
            read.append(frame)
            yield frame.image, frame.index, frame.time_s, frame.source, source.still_images

    # Pipelined (FaceTracker.process_stream): the next frame is read and its mesh run while this one is
    # described, 1.4-1.95× the frames per second on two cores; a result never waits for the next frame.
    # A stop ends the stream at once while it awaits a frame (a stalled stream URL would hold it for its read timeout).
    results = tracker.process_stream(inputs(), cancelled=lambda: stop.requested)
    began = time.perf_counter()
    # Warnings (a video's reader thread) go above the bar, not onto the end of its line.
    with logging_redirect_tqdm():
        try:
            for result in results:
                frame = read.popleft()
                if writers.jsonl:
                    writers.jsonl.write(result)
                if writers.table:
                    writers.table.write(result)
                for sender in writers.senders:
                    sender.send(result)
                if writers.overlay:
                    writers.overlay.write(frame.image, result)
                # Counted once written: a second stop, which interrupts at once, may fall among the writes.
                total.frames += 1
                total.with_faces += bool(result.faces)
                if writers.window:
                    # Capture to display; a still has no capture time worth showing (its first counts loading).
                    latency_ms = None if source.still_images else 1000.0 * (time.perf_counter() - frame.grabbed_at)
                    if not writers.window.show(frame.image, result, tracker.backend, latency_ms=latency_ms):
                        return False
                    # A still would flash past: it stays until a key asks for the next one (q or Esc quits).
                    if source.still_images and not writers.window.hold(lambda: stop.requested):
                        return False
                bar.update(1)
                if stop.requested:
                    total.interrupted = True
                    return False
                if args.max_frames and total.frames >= args.max_frames:
                    return False
            if stop.requested:  # the stream ended for the stop, while it awaited a frame
                total.interrupted = True
                return False
            bar.total = bar.n  # the source ended: a variable-rate file's frame count was only an estimate
            return True
        except KeyboardInterrupt:
            total.interrupted = True
            return False
        finally:
            stop.hold()
            source.close()  # first: the worker may be waiting for a live source's next frame
            results.close()  # the worker finishes the frame it has begun
            bar.close()
            total.seconds += time.perf_counter() - began


def _close_all(outputs: list) -> None:
    """Close every output, even when one fails to (a full disk); then raise the first failure."""
    failure = None
    for out in outputs:
        try:
            out.close()
        except OutputError as exc:
            failure = failure or exc
    if failure:
        raise failure


class _StderrThatMayGo:
    """sys.stderr for a run whose terminal or log reader may go away (a closed window, `2>&1 | head`, `2>&-`):
    the progress bar and messages stop, the run and its outputs go on. Anything else it passes through."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self.gone = stream is None

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self._stream.write(text)
            except (OSError, ValueError):  # BrokenPipeError, EIO from a hung-up terminal, a closed file
                self.gone = True
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self.gone = True

    def isatty(self) -> bool:
        return not self.gone and self._stream.isatty()

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    if not isinstance(sys.stderr, _StderrThatMayGo):
        sys.stderr = _StderrThatMayGo(sys.stderr)
    parser = build_parser()
    args = parser.parse_args(argv)
    clash = _output_clashes(args)
    if clash:
        parser.error(clash)
    handler = logging.StreamHandler()
    handler.setFormatter(_OneLineFormatter("%(levelname)s: %(message)s"))
    logging.basicConfig(handlers=[handler], level=logging.INFO)
    logging.getLogger("tracker").setLevel(logging.INFO)
    stop = StopRequest()
    stop.install()
    try:
        return _run_reporting(args, stop)
    except KeyboardInterrupt:
        # A second stop in the moment between the run's end (whose outputs are closed) and the hold below.
        return EXIT_INTERRUPTED
    finally:
        stop.hold()  # the run is over: a late Ctrl-C must not turn its exit code into a signal's


def _run_reporting(args: argparse.Namespace, stop: StopRequest) -> int:
    """run(), with each way it can fail as one line and an exit code."""
    try:
        return run(args, stop)
    except (SourceError, AddressError) as exc:
        if stop.requested:  # a stop while a stream took its time to open (or refuse): a stop
            return EXIT_INTERRUPTED
        log.error(str(exc))
        return EXIT_BAD_INPUT
    except (BackendError, OutputError, ValueError) as exc:
        if stop.requested:  # the terminal hung up: writes to it fail, and the hang-up is what happened
            return EXIT_INTERRUPTED
        log.error(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of --json - or --csv - stopped reading (`| head`, a closed socket): an end, not an error.
        # Python would still flush stdout at exit and fail there, so stdout goes to the null device.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        files = [f"{option} '{value}'" for option, value in (("--json", args.json), ("--csv", args.csv),
                                                            ("--output", args.output)) if value and value != "-"]
        if files:  # cut short with the run: said, so that a script reading exit code 0 is not misled
            log.warning("the reader of stdout stopped reading, which ended the run: %s hold%s the frames tracked "
                        "until then", " and ".join(files), "" if len(files) > 1 else "s")
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 -- the promise is one line, never a traceback
        if args.debug:
            traceback.print_exc()
        jit_cache_advice = cache_failure_message(exc)  # a damaged file of Numba's cache, its disk full
        if jit_cache_advice is not None:
            log.error(jit_cache_advice)
        else:
            log.error("unexpected %s: %s (rerun with --debug for details)", type(exc).__name__, exc)
        return EXIT_FAILURE
