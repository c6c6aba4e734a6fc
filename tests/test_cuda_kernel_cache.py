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


@pytest.mark.gpu
def test_gpu_compiled_kernels_are_cached_sealed_and_reused(tmp_path):
    """On a device, running a program leaves numba-cuda's sealed index and data files next
    to the kernel modules; a second loader over the same directory finds them."""
    import numpy as np

    from ember.backends import codegen, cuda, cuda_kernels
    from ember.backends import cuda_device as cd
    from ember.ir.graph import GraphBuilder
    from ember.ir.types import TensorType
    cache = KernelCache(tmp_path)
    saved = codegen._loader
    codegen.set_module_loader(cache.load)
    cuda_kernels._KERNELS.clear()
    try:
        b = GraphBuilder("cached")
        x = b.input(TensorType((1000,), "float32"), "x")
        (y,) = b.emit("sigmoid", [x])
        (y,) = b.emit("mul_scalar", [y], scalar=3.0)
        out = cuda.compile(b.build([y]))([cd.to_device(np.ones(1000, np.float32))], [])
        np.testing.assert_allclose(cd.to_host(out[0]), 3 / (1 + np.exp(-1.0)), rtol=1e-6)
        index = list((tmp_path / "__pycache__").glob("cuda_*.nbi"))
        assert index and all(p.read_bytes().startswith(b"EMBERNB1") for p in index)
        assert all(KernelCache._compiled(p) for p in tmp_path.glob("cuda_*.py"))
    finally:
        codegen.set_module_loader(saved)
        cuda_kernels._KERNELS.clear()
