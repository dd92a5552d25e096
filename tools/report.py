"""Keeping BENCHMARKS.md true to the code: each tool rewrites its own marked section."""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "BENCHMARKS.md"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from tracker.cli import positive_float, positive_int  # the command line's own argparse types

__all__ = ["file_to_write", "folder_to_write", "import_mediapipe", "invocation", "machine", "non_negative_float",
           "non_negative_int", "positive_float", "positive_int", "publish", "update_section"]


def non_negative_int(text: str) -> int:
    """argparse type: a whole number of at least 0 (seeds, and counts where 0 means none)."""
    return _at_least_zero(text, int, "integer")


def non_negative_float(text: str) -> float:
    """argparse type: a finite number of at least 0 (a weight, where 0 turns a term off)."""
    return _at_least_zero(text, float, "number")


def _at_least_zero(text: str, convert: Callable[[str], float], kind: str) -> Any:
    try:
        value = convert(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value < math.inf:  # NaN is neither
        raise argparse.ArgumentTypeError(f"expected a non-negative {kind}, got '{text}'")
    return value


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"


def file_to_write(text: str) -> Path:
    """argparse type: a file path whose folder exists (checked before the work, not after it)."""
    path = Path(text)
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"no folder {str(path.parent)!r} to write {path.name!r} into")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    return path


def folder_to_write(text: str) -> Path:
    """argparse type: a folder to write into (made by the tool when it writes), checked before the work: a file
    in the way, or a nearest existing folder that cannot be written to, is an error now, not after it. Nothing
    is made here, so a run refused for another argument leaves no folder behind."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder")
    existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"cannot make the folder {text!r}: '{existing}' is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"no permission to write into '{existing}'")
    return path


def import_mediapipe():
    """The mediapipe module, imported before a tool's work: where it is missing, a one-line error saying it
    is a tool-time dependency, not a traceback after minutes of work."""
    try:
        import mediapipe
    except ImportError as exc:
        raise SystemExit(f"error: cannot import mediapipe ({exc}), a tool-time dependency: "
                         "pip install -e '.[test]'") from None
    return mediapipe


def invocation() -> str:
    """How this tool was run, for its section's "Command:" line: the script and every option given, but
    --no-write (a run that writes the section was not given it)."""
    import shlex
    import sys

    script = Path(sys.argv[0])
    shown = f"tools/{script.name}" if script.resolve().parent == Path(__file__).resolve().parent else str(script)
    return shlex.join(["python", shown, *(arg for arg in sys.argv[1:] if arg != "--no-write")])


def update_section(name: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the block between ``<!-- name -->`` and ``<!-- /name -->``."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n_Measured {date.today().isoformat()} on {machine()}._\n\n{body.strip()}\n{end}"
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def publish(name: str, body: str, write: bool) -> None:
    """Print a section's body, and put it into BENCHMARKS.md as section ``name`` when ``write`` (a tool's run
    without --no-write)."""
    print(body)
    if write:
        update_section(name, body)
