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

EXIT_INTERRUPTED = 130  # as tracker.cli exits on Ctrl-C


def main() -> int:
    stops: list[int] = []
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda signum, _frame: stops.append(signum))
    from tracker.cli import main as cli_main

    if stops:
        return EXIT_INTERRUPTED
    code = cli_main()
    if threading.active_count() > 1:
        # A run stopped by Ctrl-C or an error may leave the pipeline's worker (a daemon thread) inside ONNX
        # Runtime; tearing the interpreter down under it can abort the process ("terminate called without an
        # active exception"). Every output is closed by now, so the process ends here, its streams flushed.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    return code
