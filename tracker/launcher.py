"""The command's entry point: stops asked for while the libraries load end quietly.

Importing tracker.cli loads NumPy, OpenCV and ONNX Runtime, which takes a second or two. Ctrl-C in
that time would surface as a traceback from deep inside an import (or as an ImportError), so until
tracker.cli.main installs its own handlers, SIGINT and SIGTERM only note that a stop was asked for.
"""

from __future__ import annotations

import signal

EXIT_INTERRUPTED = 130  # as tracker.cli exits on Ctrl-C


def main() -> int:
    stops: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stops.append(signum))
    from tracker.cli import main as cli_main

    if stops:
        return EXIT_INTERRUPTED
    return cli_main()
