"""ember turns NumPy's huge-page advice off where the kernel would compact memory at the
first touch of an advised page (runtime/arena.no_hugepage_stalls)."""
import numpy as np
import pytest

from ember.runtime import arena

_set = np._core.multiarray._set_madvise_hugepage


@pytest.fixture
def advice():
    """NumPy's advice switch, restored after the test."""
    before = _set(True)
    yield
    _set(before)


def _advising() -> bool:
    now = _set(True)
    _set(now)
    return bool(now)


def _defrag(tmp_path, text):
    p = tmp_path / "defrag"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("text,mode", [
    ("always defer defer+madvise [madvise] never\n", "madvise"),
    ("[always] defer defer+madvise madvise never\n", "always"),
    ("always defer [defer+madvise] madvise never\n", "defer+madvise"),
    ("always [defer] defer+madvise madvise never\n", "defer"),
    ("garbage\n", None)])
def test_defrag_mode_reads_the_bracketed_word(tmp_path, text, mode):
    assert arena.defrag_mode(_defrag(tmp_path, text)) == mode


def test_defrag_mode_without_the_file(tmp_path):
    assert arena.defrag_mode(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("text,off", [
    ("always defer defer+madvise [madvise] never\n", True),
    ("always defer [defer+madvise] madvise never\n", True),
    ("always [defer] defer+madvise madvise never\n", False),
    ("always defer defer+madvise madvise [never]\n", False)])
def test_advice_off_only_where_advised_faults_compact(tmp_path, monkeypatch, advice, text, off):
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    assert arena.no_hugepage_stalls(_defrag(tmp_path, text)) is off
    assert _advising() is not off


def test_numpys_own_switch_decides(tmp_path, monkeypatch, advice):
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    assert arena.no_hugepage_stalls(_defrag(tmp_path, "[madvise] never\n")) is False
    assert _advising()


def test_import_applied_it_on_this_machine():
    """ember's import made the decision for this machine (the module-level call)."""
    import os
    stalls = arena.defrag_mode() in arena.STALLING_MODES
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ or not stalls:
        pytest.skip("this machine keeps NumPy's advice")
    assert not _advising()
