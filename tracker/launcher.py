"""The command's entry point: stops asked for while the libraries load end quietly.

Importing tracker.cli loads NumPy, OpenCV and ONNX Runtime, which takes a second or two. Ctrl-C in
that time would surface as a traceback from deep inside an import (or as an ImportError), so until
tracker.cli.main installs its own handlers, SIGINT, SIGTERM and SIGHUP only note that a stop was
asked for.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from tracker.opencv_env import OpenCVSettingError, max_decoded_pixels

EXIT_INTERRUPTED = 130  # as tracker.cli exits on Ctrl-C
EXIT_BAD_INPUT = 2  # as tracker.cli exits on a source it cannot read
EXIT_FAILURE = 1  # as tracker.cli exits when the tracker cannot run here
# Ctrl-C, `kill` and the terminal going away; tracker.cli.STOP_SIGNALS, which cannot be imported yet.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def main() -> int:
    stops: list[int] = []
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, _frame: stops.append(signum))
    try:  # before OpenCV is imported: it aborts the process on a setting it cannot read
        max_decoded_pixels()
    except OpenCVSettingError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # Before the modules with Numba kernels are imported: Numba looks for its cache folder as it compiles them.
    from tracker.jit_cache import JitCacheError, ensure_writable_cache

    try:
        ensure_writable_cache()
    except JitCacheError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    from tracker.cli import main as cli_main

    if stops:
        return EXIT_INTERRUPTED
    code = cli_main()
    # The run is over and its outputs closed. Python puts the default handlers back while the interpreter ends,
    # and a stop then would end the process with the signal's status (143 for SIGTERM) instead of this code.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    # A run stopped by Ctrl-C or an error may leave one of the tracker's own daemon threads (the pipeline's
    # worker, a live source's reader; named "tracker. ...") inside ONNX Runtime or a camera driver. Tearing the
    # interpreter down under it can abort the process ("terminate called without an active exception"), so
    # then the process ends here, its outputs long closed and its streams flushed.
    if any(t.name.startswith("tracker.") and t.is_alive() for t in threading.enumerate()):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    return code
