"""CUDA kernels in the on-disk kernel cache: their modules load from verified files and
numba-cuda's own cache files (its copy of numba's ``IndexDataCacheFile``) are sealed like
the CPU kernels' (runtime/numba_seal). Pure file IO: no GPU, no simulator."""
import os

import pytest

pytest.importorskip("numba.cuda")

from ember.runtime import numba_seal  # noqa: E402
from ember.runtime.cache import KernelCache  # noqa: E402


def _index_file(tmp_path):
    from numba.cuda.core.caching import IndexDataCacheFile
    numba_seal.install_cuda()
    return IndexDataCacheFile(str(tmp_path), "cuda_" + "ab" * 12 + ".kernel-9.py311", "stamp")


def test_numba_cuda_index_and_data_files_are_sealed(tmp_path):
    f = _index_file(tmp_path)
    f.save(("sig", "cc90"), {"cubin": b"\x00\x01"})
    files = sorted(os.listdir(tmp_path))
    assert any(n.endswith(".nbi") for n in files) and any(n.endswith(".nbc") for n in files)
    for n in files:
        assert (tmp_path / n).read_bytes().startswith(b"EMBERNB1"), n
    assert _index_file(tmp_path).load(("sig", "cc90")) == {"cubin": b"\x00\x01"}


def test_a_tampered_numba_cuda_cache_file_is_discarded_not_unpickled(tmp_path):
    f = _index_file(tmp_path)
    f.save(("sig", "cc90"), [1, 2, 3])
    data = next(p for p in tmp_path.iterdir() if p.suffix == ".nbc")
    data.write_bytes(data.read_bytes()[:-1] + b"X")  # one flipped byte
    before = numba_seal.discarded
    assert _index_file(tmp_path).load(("sig", "cc90")) is None
    assert numba_seal.discarded == before + 1 and not data.exists()


def test_device_kernel_modules_load_through_the_disk_cache(tmp_path):
    """A device kernel's source (``cache=True``) is written to the cache and executed from
    the verified text with ``__file__`` set, so numba-cuda can cache its compiled code."""
    from ember.backends import cuda_kernels
    src = cuda_kernels.fill_source()  # a device kernel: @cuda.jit(cache=True)
    assert cuda_kernels.CACHED in src
    cache = KernelCache(tmp_path)
    mod = cache.load(src, "cuda")
    assert mod.__file__.startswith(str(tmp_path)) and callable(mod.kernel.py_func)
    assert os.path.basename(mod.__file__).startswith("cuda_")
    assert numba_seal._cuda_installed
