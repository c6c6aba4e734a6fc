"""Write the NDArray-file fixtures of tests/test_ndarray_io.py with real MXNet 1.9.1.

Run it under a throwaway virtualenv outside the repository, never under ember's:

    python3 -m venv /tmp/mxvenv
    /tmp/mxvenv/bin/pip install mxnet==1.9.1 'numpy<1.24'
    /tmp/mxvenv/bin/python tests/data/make_mxnet_fixtures.py

The values are deterministic (``np.arange``); tests/test_ndarray_io.py states them again
independently and compares. Every file is a few hundred bytes.
"""
import os

import mxnet as mx
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def dict_values():
    """The arrays of ``mxnet_dict.params``, in insertion (= file) order."""
    return {
        "f32_2d": np.arange(6, dtype=np.float32).reshape(2, 3) / 4,
        "f64_1d": np.arange(5, dtype=np.float64) * 0.1 - 0.2,
        "i32_3d": np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 7,
        "u8_1d": np.arange(10, dtype=np.uint8) * 25,
        "i64_4d": np.arange(16, dtype=np.int64).reshape(1, 2, 2, 4) * -3 + (1 << 40),
        "f16_2d": np.arange(4, dtype=np.float16).reshape(2, 2) / 8,
        "i8_1d": np.arange(-3, 3, dtype=np.int8),
        "empty_f32": np.zeros((0, 3), dtype=np.float32),
    }


def list_values():
    """The arrays of ``mxnet_list.nd``."""
    return [np.arange(3, dtype=np.float32) + 0.5, np.arange(4, dtype=np.int32).reshape(2, 2)]


def main():
    """Write every fixture next to this script and check MXNet reads each back."""
    d = {k: mx.nd.array(v, dtype=v.dtype.name) for k, v in dict_values().items()}
    out = os.path.join(HERE, "mxnet_dict.params")
    mx.nd.save(out, d)
    assert all(np.array_equal(mx.nd.load(out)[k].asnumpy(), v)
               for k, v in dict_values().items())

    out = os.path.join(HERE, "mxnet_list.nd")
    mx.nd.save(out, [mx.nd.array(v, dtype=v.dtype.name) for v in list_values()])

    out = os.path.join(HERE, "mxnet_single.nd")  # one NDArray: saved as a list of one
    mx.nd.save(out, mx.nd.array(np.arange(4, dtype=np.float64).reshape(2, 2), dtype="float64"))

    with mx.util.np_shape(True):  # NDArray V3: a 0-d array and a 0-size one
        out = os.path.join(HERE, "mxnet_npshape.nd")
        mx.nd.save(out, [mx.nd.array(np.float32(2.5).reshape(()), dtype="float32"),
                         mx.nd.zeros((0, 2), dtype="float32")])

    dense = np.array([[0, 1.5, 0], [0, 0, 0], [2, 0, -3]], dtype=np.float32)
    out = os.path.join(HERE, "mxnet_sparse.nd")  # ember reads sparse storage as dense
    mx.nd.save(out, {"csr": mx.nd.array(dense).tostype("csr"),
                     "rsp": mx.nd.array(dense).tostype("row_sparse")})
    for name in sorted(os.listdir(HERE)):
        if not name.endswith(".py"):
            print(name, os.path.getsize(os.path.join(HERE, name)), "bytes")


if __name__ == "__main__":
    main()
