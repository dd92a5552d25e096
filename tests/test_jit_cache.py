"""Numba's cache folder for the tracker's kernels: a fallback where no folder of Numba's is writable, and a damaged
cache named with what to do about it."""

import importlib.util
import os
import stat
import tempfile

import pytest
from numba.core import config

from tracker import jit_cache


@pytest.fixture
def nowhere_writable(tmp_path, monkeypatch):
    """Numba's own folders all unwritable (a file stands where each would be), the system's temporary directory
    in tmp_path."""
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    monkeypatch.setattr(jit_cache, "_numba_folders", lambda: [blocked / "cache", blocked / "pycache"])
    monkeypatch.setattr(config, "CACHE_DIR", "")
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return temp


def test_with_no_folder_of_numbas_writable_the_kernels_are_cached_in_a_private_temporary_one(nowhere_writable):
    jit_cache.ensure_writable_cache()
    folder = nowhere_writable / f"face-tracker-numba-{os.getuid()}"
    assert config.CACHE_DIR == str(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_temporary_folder_others_can_write_to_is_not_used(nowhere_writable):
    shared = nowhere_writable / f"face-tracker-numba-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could have put pickles there
    jit_cache.ensure_writable_cache()
    assert config.CACHE_DIR and config.CACHE_DIR != str(shared)
    assert os.path.dirname(config.CACHE_DIR) == str(nowhere_writable)
    assert stat.S_IMODE(os.stat(config.CACHE_DIR).st_mode) == 0o700


def test_a_file_in_the_temporary_folders_place_is_not_used_either(nowhere_writable):
    squatter = nowhere_writable / f"face-tracker-numba-{os.getuid()}"
    squatter.write_text("anyone can make this file")
    jit_cache.ensure_writable_cache()
    assert config.CACHE_DIR and config.CACHE_DIR != str(squatter) and os.path.isdir(config.CACHE_DIR)
    assert squatter.read_text() == "anyone can make this file"


def test_with_no_writable_folder_at_all_it_says_what_to_set(nowhere_writable, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(nowhere_writable / "missing" / "deeper"))
    (nowhere_writable / "missing").write_text("a file, not a folder")
    with pytest.raises(jit_cache.JitCacheError, match="NUMBA_CACHE_DIR"):
        jit_cache.ensure_writable_cache()


def test_a_writable_folder_of_numbas_is_left_as_numba_chooses(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "mine"))
    jit_cache.ensure_writable_cache()
    assert config.CACHE_DIR == str(tmp_path / "mine")


def load_kernel_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_damaged_cache_is_told_apart_and_named_with_its_folder(tmp_path, monkeypatch):
    source = tmp_path / "kernel_module.py"
    source.write_text("from numba import njit\n\n@njit(cache=True)\ndef add_one(x):\n    return x + 1\n")
    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "cache"))
    assert load_kernel_module(source, "kernel_module_a").add_one(1) == 2  # compiled and cached
    (index,) = (tmp_path / "cache").rglob("*.nbi")
    index.write_bytes(index.read_bytes()[:10])  # cut short, as by a full disk or a killed process
    with pytest.raises(Exception) as caught:
        load_kernel_module(source, "kernel_module_b").add_one(1)
    advice = jit_cache.cache_failure_message(caught.value)
    assert advice is not None and str(tmp_path / "cache") in advice and "delete the folder" in advice
    # An error of anything else is not put down to the cache.
    try:
        raise ValueError("not the cache")
    except ValueError as exc:
        assert jit_cache.cache_failure_message(exc) is None


def test_the_command_says_in_one_line_when_numba_has_no_folder(monkeypatch, capsys):
    import signal

    from tracker import launcher

    def nowhere() -> None:
        raise jit_cache.JitCacheError("Numba, which compiles the 3D fit, has no writable folder to cache it in")

    monkeypatch.setattr(jit_cache, "ensure_writable_cache", nowhere)
    handlers = {sig: signal.getsignal(sig) for sig in launcher.STOP_SIGNALS}  # the launcher installs its own
    try:
        assert launcher.main() == launcher.EXIT_FAILURE
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert capsys.readouterr().err == ("ERROR: Numba, which compiles the 3D fit, has no writable folder to cache it "
                                       "in\n")
