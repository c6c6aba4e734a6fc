"""Files from elsewhere: crafted, truncated or bit-flipped NDArray/parameter files and trainer
states give MXNetError naming the file, never another exception, a huge allocation, code
execution or a half-loaded block; a failed save leaves the old file."""
import errno
import io
import os
import pickle
import random
import struct
import tracemalloc

import numpy as np
import pytest

import ember as mx
from ember import gluon
from ember.base import MXNetError
from ember.ndarray.utils import DENSIFY_RATIO, _context

DATA = os.path.join(os.path.dirname(__file__), "data")


def u64(n):
    return struct.pack("<Q", n)


def shape(*dims):
    return struct.pack("<i", len(dims)) + b"".join(struct.pack("<q", d) for d in dims)


def sparse_bomb(name: bytes | None = None) -> bytes:
    """A row_sparse record holding no rows of a (5e9, 5) float32 array: 93 GiB dense."""
    rec = (struct.pack("<Ii", 0xF993FAC9, 1) + shape(0, 5) + shape(5_000_000_000, 5)
           + struct.pack("<iii", 1, 0, 0) + struct.pack("<i", 6) + shape(0))
    names = u64(0) if name is None else u64(1) + u64(len(name)) + name
    return u64(0x112) + u64(0) + u64(1) + rec + names


class Peak:
    """Largest traced allocation total (NumPy reports its buffers) inside the block."""

    def __enter__(self):
        tracemalloc.start()
        self.base = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(self, *exc):
        self.bytes = tracemalloc.get_traced_memory()[1] - self.base
        tracemalloc.stop()


def test_crafted_sparse_file_is_refused_before_allocating(tmp_path):
    path = tmp_path / "bomb.nd"
    path.write_bytes(sparse_bomb())
    assert len(path.read_bytes()) < 110
    with Peak() as peak, pytest.raises(MXNetError, match="bomb.nd.*93|bomb.nd.*dense"):
        mx.nd.load(str(path))
    assert peak.bytes < 1 << 20


def test_crafted_parameter_file_is_refused_by_load_parameters(tmp_path):
    net = gluon.nn.Dense(5, in_units=3)
    net.initialize()
    path = tmp_path / "bomb.params"
    path.write_bytes(sparse_bomb(b"weight"))
    before = net.weight.data().asnumpy()
    with Peak() as peak, pytest.raises(MXNetError, match="bomb.params"):
        net.load_parameters(str(path))
    assert peak.bytes < 1 << 20
    np.testing.assert_array_equal(net.weight.data().asnumpy(), before)


def valid_files(tmp_path) -> dict[str, bytes]:
    files = {n: open(os.path.join(DATA, n), "rb").read()
             for n in ("mxnet_dict.params", "mxnet_list.nd", "mxnet_npshape.nd",
                       "mxnet_single.nd", "mxnet_sparse.nd")}
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(4, in_units=3), gluon.nn.Dense(2, in_units=4))
    net.initialize()
    net.save_parameters(str(tmp_path / "net.params"))
    files["net.params"] = (tmp_path / "net.params").read_bytes()
    return files


def mutate(data: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.4:
        return data[:rng.randrange(len(data))]
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    return bytes(buf)


def test_fuzzed_files_raise_only_mxnet_errors_and_allocate_little(tmp_path):
    rng = random.Random(2024)
    files = valid_files(tmp_path)
    outcomes = {"loaded": 0, "refused": 0}
    for name, data in files.items():  # first-time imports and caches happen outside the count
        with mx.np_shape(name == "mxnet_npshape.nd"):  # V3 records load only in np shape
            mx.nd.load_frombuffer(data)
    _context(2, 0)  # a record saved on a GPU asks whether this machine has one
    tracemalloc.start()
    try:
        for trial in range(3000):
            name, data = rng.choice(list(files.items()))
            bad = mutate(data, rng)
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            try:
                with mx.np_shape(name == "mxnet_npshape.nd"):
                    mx.nd.load_frombuffer(bad)
                outcomes["loaded"] += 1
            except MXNetError as e:
                assert "<buffer>" in str(e)
                outcomes["refused"] += 1
            peak = tracemalloc.get_traced_memory()[1] - base
            # what the bytes can hold, read as dense arrays (a sparse one may densify up to
            # its cap) and its index temporaries
            assert peak <= 2 * (DENSIFY_RATIO * len(bad) + (1 << 20)), (trial, name)
    finally:
        tracemalloc.stop()
    assert outcomes["loaded"] > 0 and outcomes["refused"] > 1000


def test_fuzzed_parameter_files_never_half_load_a_block(tmp_path):
    rng = random.Random(7)
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(4, in_units=3), gluon.nn.Dense(2, in_units=4))
    net.initialize()
    path = tmp_path / "net.params"
    net.save_parameters(str(path))
    good = path.read_bytes()
    before = {k: p.data().asnumpy().copy() for k, p in net.collect_params().items()}
    errors = 0
    for _ in range(300):
        path.write_bytes(mutate(good, rng))
        try:
            net.load_parameters(str(path))
        except MXNetError as e:
            errors += 1
            assert "net.params" in str(e)
            for k, p in net.collect_params().items():  # all or nothing
                np.testing.assert_array_equal(p.data().asnumpy(), before[k])
        else:
            before = {k: p.data().asnumpy().copy() for k, p in net.collect_params().items()}
    assert errors > 100


def test_load_parameters_checks_everything_before_assigning(tmp_path):
    net = gluon.nn.HybridSequential()
    with net.name_scope():
        net.add(gluon.nn.Dense(4, in_units=3), gluon.nn.Dense(2, in_units=4))
    net.initialize()
    first = net[0].weight.data().asnumpy().copy()
    # the first parameter fits, the last does not: nothing may be assigned
    mx.nd.save(str(tmp_path / "p.params"), {"0.weight": mx.nd.ones((4, 3)),
                                            "0.bias": mx.nd.ones(4),
                                            "1.weight": mx.nd.ones((2, 5)),
                                            "1.bias": mx.nd.ones(2)})
    with pytest.raises(MXNetError, match="1.weight.*nothing was loaded"):
        net.load_parameters(str(tmp_path / "p.params"))
    np.testing.assert_array_equal(net[0].weight.data().asnumpy(), first)
    names = {p.name[len(net.prefix):]: mx.nd.ones(p.shape)
             for p in net.collect_params().values()}
    names["extra_weight"] = mx.nd.ones(1)
    mx.nd.save(str(tmp_path / "q.params"), names)  # MXNet's full names, one extra at the end
    with pytest.raises(MXNetError, match="extra_weight"):
        net.load_parameters(str(tmp_path / "q.params"))
    np.testing.assert_array_equal(net[0].weight.data().asnumpy(), first)


# ---- trainer states ------------------------------------------------------------------------
def trainer(tmp_path):
    net = gluon.nn.Dense(2, in_units=3)
    net.initialize()
    tr = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 0.1})
    with mx.autograd.record():
        loss = net(mx.nd.ones((1, 3))).sum()
    loss.backward()
    tr.step(1)
    return tr


class Planted:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_states_files_that_are_not_states_give_mxnet_errors(tmp_path):
    tr = trainer(tmp_path)
    path = tmp_path / "t.states"
    tr.save_states(str(path))
    good = path.read_bytes()
    marker = tmp_path / "pwned"
    cases = {"empty": b"", "truncated": good[:len(good) // 2], "garbage": b"\x80\x05junk",
             "code": pickle.dumps(Planted(marker)),
             "os.system": b"cos\nsystem\n(S'true'\ntR."}
    for what, data in cases.items():
        path.write_bytes(data)
        with pytest.raises(MXNetError, match="t.states"):
            tr.load_states(str(path))
        assert not marker.exists(), what
    with pytest.raises(MXNetError, match="nowhere.states"):
        tr.load_states(str(tmp_path / "nowhere.states"))
    path.write_bytes(good)
    tr.load_states(str(path))  # the real thing still loads


def test_save_states_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    tr = trainer(tmp_path)
    path = tmp_path / "t.states"
    tr.save_states(str(path))
    old = path.read_bytes()

    class Full(io.FileIO):
        def write(self, b):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    real_open = open

    def full_open(file, mode="r", *args, **kwargs):
        return Full(file, mode.replace("b", "")) if "x" in mode else \
            real_open(file, mode, *args, **kwargs)
    monkeypatch.setattr("builtins.open", full_open)
    with pytest.raises(MXNetError, match="t.states.*No space left"):
        tr.save_states(str(path))
    monkeypatch.undo()
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["t.states"]


MXNET_PYTHON = os.environ.get("EMBER_TEST_MXNET_PYTHON", "")
MXNET_STATES = """
import sys
import mxnet as mx
from mxnet import autograd, gluon
net = gluon.nn.Dense(2, in_units=3)
net.initialize(mx.init.One())
tr = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 0.1})
with autograd.record():
    loss = net(mx.nd.ones((1, 3))).sum()
loss.backward()
tr.step(1)
tr.save_states(sys.argv[1])
"""


@pytest.mark.skipif(not os.path.exists(MXNET_PYTHON),
                    reason="no MXNet 1.9.1 interpreter (EMBER_TEST_MXNET_PYTHON)")
def test_states_written_by_mxnet_still_load(tmp_path):
    import subprocess
    path = tmp_path / "mx.states"
    subprocess.run([MXNET_PYTHON, "-c", MXNET_STATES, str(path)], check=True, timeout=120)
    tr = trainer(tmp_path)
    tr.load_states(str(path))
    assert type(tr._optimizer).__name__ == "Adam" and tr.learning_rate == 0.1
    states = tr._updaters[0].states
    assert sorted(s[0].shape for s in states.values()) == [(2,), (2, 3)]
    for mean, var in states.values():  # one Adam step, gradients of ones: m = 0.1, v = 0.001
        np.testing.assert_allclose(mean.asnumpy(), 0.1, rtol=1e-6)
        np.testing.assert_allclose(var.asnumpy(), 0.001, rtol=1e-4)  # (1 - 0.999) in f32
