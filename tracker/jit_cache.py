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
import types
from pathlib import Path

from numba.core import config
from numba.misc.appdirs import AppDirs

_PACKAGE_CACHE = Path(__file__).parent / "__pycache__"  # Numba's in-tree cache for the kernels' modules


class JitCacheError(RuntimeError):
    """No folder Numba could cache the tracker's compiled kernels in, or a cache it cannot read or write."""


def ensure_writable_cache() -> None:
    """Leave Numba's choice alone where it has a writable folder; else point it at one of its own in the system's
    temporary directory. JitCacheError where there is none."""
    if any(_writable(folder) for folder in _numba_folders()):
        return
    try:
        fallback = Path(tempfile.gettempdir()) / f"face-tracker-numba-{_user()}"
        fallback.mkdir(mode=0o700, exist_ok=True)
        info = fallback.lstat()
    except OSError as exc:
        raise JitCacheError(f"Numba, which compiles the 3D fit, has no writable folder to cache it in ({exc}); "
                            "set NUMBA_CACHE_DIR to one") from exc
    # Cached kernels are pickles, which run code as they load: only a folder of this user's that no one else
    # can write to is used.
    owned = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    if not stat.S_ISDIR(info.st_mode) or not owned or info.st_mode & 0o022:
        fallback = Path(tempfile.mkdtemp(prefix="face-tracker-numba-"))
    config.CACHE_DIR = str(fallback)


def cache_folder() -> Path:
    """The folder Numba caches the tracker's kernels in (or in a subfolder of)."""
    return next((folder for folder in _numba_folders() if _writable(folder)), _PACKAGE_CACHE)


def cache_failure(exc: BaseException) -> JitCacheError | None:
    """A JitCacheError saying what to do, when ``exc`` was raised while Numba read or wrote its cache (a file of
    it damaged, its disk full); else None."""
    frames = _traceback_files(exc.__traceback__)
    if not any(Path(name).parts[-3:] == ("numba", "core", "caching.py") for name in frames):
        return None
    return JitCacheError(f"Numba's cache of the tracker's compiled code cannot be read or written "
                         f"({type(exc).__name__}: {exc}); delete the folder {cache_folder()} (or point "
                         "NUMBA_CACHE_DIR at another) and run again")


def _traceback_files(tb: types.TracebackType | None) -> list[str]:
    """The source files of a traceback's frames, outermost first."""
    files = []
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    return files


def _numba_folders() -> list[Path]:
    # In the order Numba tries them (numba.core.caching's locators).
    folders = [Path(config.CACHE_DIR)] if config.CACHE_DIR else []
    return [*folders, _PACKAGE_CACHE, Path(AppDirs(appname="numba", appauthor=False).user_cache_dir)]


def _writable(folder: Path) -> bool:
    """Whether a file can be made in ``folder`` (made first if missing), as Numba checks a cache folder."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def _user() -> str:
    return str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
