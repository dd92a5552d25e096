"""Where Numba caches the tracker's compiled kernels (the 3D fit's and the gaze's, ``njit(cache=True)``).

Numba caches in the first writable one of NUMBA_CACHE_DIR, the package's ``__pycache__`` and the user's cache
folder (``~/.cache/numba``). Where none is writable (a read-only install run by a user without a writable home, as
in a container), decorating a kernel raises at import. :func:`ensure_writable_cache` then points Numba at a folder
of the system's temporary directory, where the kernels compile once and are cached until it is cleared.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from numba.core import config

from tracker.engines import writable_folder

_PACKAGE_CACHE = Path(__file__).parent / "__pycache__"  # Numba's in-tree cache for the kernels' modules


class JitCacheError(RuntimeError):
    """No folder Numba could cache the tracker's compiled kernels in."""


def ensure_writable_cache() -> None:
    """Leave Numba's choice alone where it has a writable folder; else point it at one of this user's in the system's
    temporary directory. JitCacheError where there is none."""
    if any(writable_folder(folder) for folder in _numba_folders()):
        return
    try:
        fallback = Path(tempfile.gettempdir()) / f"face-tracker-numba-{_user()}"
        if not _private(fallback):
            # Someone else's, or not a folder: cached kernels are pickles, which run code as they load. A folder
            # of its own instead, this run only (the kernels compile again next time).
            fallback = Path(tempfile.mkdtemp(prefix="face-tracker-numba-"))
    except OSError as exc:
        raise JitCacheError(f"Numba, which compiles the 3D fit, has no writable folder to cache it in ({exc}); "
                            "set NUMBA_CACHE_DIR to one") from exc
    config.CACHE_DIR = str(fallback)


def cache_folder() -> Path:
    """The folder Numba caches the tracker's kernels in (or in a subfolder of)."""
    return next((folder for folder in _numba_folders() if writable_folder(folder)), _PACKAGE_CACHE)


def cache_failure_message(exc: BaseException) -> str | None:
    """What to do, when ``exc`` was raised while Numba read or wrote its cache (a file of it damaged, its disk
    full); else None."""
    if not any(Path(name).parts[-3:] == ("numba", "core", "caching.py") for name in _traceback_files(exc)):
        return None
    return (f"Numba's cache of the tracker's compiled code cannot be read or written ({type(exc).__name__}: {exc}); "
            f"delete the folder {cache_folder()} (or point NUMBA_CACHE_DIR at another) and run again")


def _traceback_files(exc: BaseException) -> list[str]:
    """The source files of the frames ``exc`` passed through, outermost first."""
    files, tb = [], exc.__traceback__
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    return files


def _private(folder: Path) -> bool:
    """Whether ``folder`` is (now) a folder of this user's that others cannot write to, and writable: made if
    missing. On Windows the temporary directory is the user's own, and its modes tell nothing."""
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode):
        return False
    if os.name != "nt" and (info.st_uid != os.getuid() or info.st_mode & 0o022):
        return False
    return writable_folder(folder)


def _numba_folders() -> list[Path]:
    # In the order Numba tries them (numba.core.caching's locators): NUMBA_CACHE_DIR, the package's __pycache__,
    # the user's cache folder.
    folders = [Path(config.CACHE_DIR)] if config.CACHE_DIR else []
    return [*folders, _PACKAGE_CACHE, _user_cache()]


def _user_cache() -> Path:
    # Where Numba itself looks; should a Numba move its helper, the XDG default it gives on Linux.
    try:
        from numba.misc.appdirs import AppDirs
    except ImportError:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "numba"
    return Path(AppDirs(appname="numba", appauthor=False).user_cache_dir)


def _user() -> str:
    return str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
