"""mx.recordio: MXNet's RecordIO format, byte-identical both ways with real MXNet 1.9.1."""
import json
import os
import pickle
import struct
import subprocess

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ember as mx
from ember import recordio
from ember.base import MXNetError

MAGIC = struct.pack("<I", 0xCED7230A)
MXPY = os.environ.get("EMBER_TEST_MXNET_PYTHON", "")

# payloads that exercise the splitting of records at the magic word
PAYLOADS = [b"", b"a", b"abcd", b"hello world", MAGIC, MAGIC + MAGIC, b"xyz" + MAGIC,
            b"abcd" + MAGIC + b"efgh" + MAGIC + b"ij", b"ab" + MAGIC + b"cd", bytes(range(256))]


def _write(path, payloads):
    w = recordio.MXRecordIO(path, "w")
    for p in payloads:
        w.write(p)
    w.close()


def _read_all(path):
    r = recordio.MXRecordIO(path, "r")
    out = []
    while (rec := r.read()) is not None:
        out.append(rec)
    r.close()
    return out


def test_round_trip_and_layout(tmp_path):
    path = tmp_path / "a.rec"
    _write(path, PAYLOADS)
    assert _read_all(path) == PAYLOADS
    raw = path.read_bytes()
    # whole record: magic, lrec = length, payload padded to 4 bytes
    assert raw[:4] == MAGIC and struct.unpack("<I", raw[4:8])[0] == 0
    assert raw[8:16] == MAGIC + struct.pack("<I", 1)
    assert raw[16:20] == b"a\0\0\0"


def test_split_record_layout(tmp_path):
    path = tmp_path / "s.rec"
    _write(path, [b"abcd" + MAGIC + b"ef"])
    raw = path.read_bytes()
    # first part (cflag 1, 4 bytes), last part (cflag 3, 2 bytes + 2 padding)
    assert raw == (MAGIC + struct.pack("<I", 1 << 29 | 4) + b"abcd"
                   + MAGIC + struct.pack("<I", 3 << 29 | 2) + b"ef\0\0")


@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\x0a", MAGIC[:1])
                                            if len(b) % 3 else b + MAGIC), max_size=6))
def test_round_trip_hypothesis(tmp_path_factory, payloads):
    path = tmp_path_factory.mktemp("h") / "h.rec"
    _write(path, payloads)
    assert _read_all(path) == payloads


def test_indexed(tmp_path):
    rec, idx = tmp_path / "b.rec", tmp_path / "b.idx"
    w = recordio.MXIndexedRecordIO(idx, rec, "w")
    for i in range(5):
        w.write_idx(i, f"record {i}".encode())
    w.close()
    r = recordio.MXIndexedRecordIO(idx, rec, "r")
    assert r.keys == list(range(5))
    assert r.read_idx(3) == b"record 3"
    assert r.read_idx(0) == b"record 0"
    assert r.read() == b"record 1"
    with pytest.raises(MXNetError, match="no record with key 9"):
        r.read_idx(9)
    # picklable for DataLoader workers: the copy reopens the file
    r2 = pickle.loads(pickle.dumps(r))
    assert r2.read_idx(4) == b"record 4"
    r.close()
    r2.close()


def test_pack_unpack():
    h = recordio.IRHeader(0, 3.5, 7, 0)
    hh, s = recordio.unpack(recordio.pack(h, b"payload"))
    assert hh == recordio.IRHeader(0, 3.5, 7, 0) and s == b"payload"
    hv, s = recordio.unpack(recordio.pack(recordio.IRHeader(0, [1, 2.5, 3], 9, 1), b"x"))
    assert hv.flag == 3 and hv.id == 9 and hv.id2 == 1 and s == b"x"
    np.testing.assert_array_equal(hv.label, np.array([1, 2.5, 3], np.float32))


def test_damaged_files_raise_clear_errors(tmp_path):
    path = tmp_path / "c.rec"
    _write(path, [b"hello world!", b"abcd" + MAGIC + b"efgh"])
    raw = path.read_bytes()
    for cut in range(1, len(raw)):
        if cut in (20, len(raw)):
            continue
        bad = tmp_path / f"cut{cut}.rec"
        bad.write_bytes(raw[:cut])
        with pytest.raises(MXNetError, match="RecordIO|truncated|record"):
            _read_all(bad)
    junk = tmp_path / "junk.rec"
    junk.write_bytes(b"not a recordio file")
    with pytest.raises(MXNetError, match="invalid RecordIO magic"):
        _read_all(junk)
    with pytest.raises(MXNetError, match="shorter than an image record header"):
        recordio.unpack(b"short")
    with pytest.raises(MXNetError, match="label of 1000 floats"):
        recordio.unpack(struct.pack("<IfQQ", 1000, 0, 0, 0) + b"abc")


def test_wrong_mode_and_closed(tmp_path):
    path = tmp_path / "d.rec"
    w = recordio.MXRecordIO(path, "w")
    with pytest.raises(MXNetError, match="opened for writing"):
        w.read()
    w.close()
    with pytest.raises(MXNetError, match="closed"):
        w.write(b"x")
    r = recordio.MXRecordIO(path, "r")
    with pytest.raises(MXNetError, match="opened for reading"):
        r.write(b"x")
    assert r.read() is None
    with pytest.raises(ValueError):
        recordio.MXRecordIO(path, "a")
    with pytest.raises(MXNetError, match="cannot open"):
        recordio.MXRecordIO(tmp_path / "missing" / "x.rec", "r")


def test_pack_img_unpack_img():
    pytest.importorskip("PIL")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
    s = recordio.pack_img(recordio.IRHeader(0, 1.0, 2, 0), img, img_fmt=".png")
    h, out = recordio.unpack_img(s)
    assert h.label == 1.0 and h.id == 2
    np.testing.assert_array_equal(out, img)       # PNG is lossless, BGR kept as given
    h, gray = recordio.unpack_img(s, iscolor=0)
    assert gray.shape == (8, 6, 1)
    smooth = np.tile(np.linspace(0, 255, 16, dtype=np.uint8)[None, :, None], (16, 1, 3))
    _, jpg = recordio.unpack_img(recordio.pack_img(recordio.IRHeader(0, 0, 0, 0), smooth))
    assert jpg.shape == smooth.shape and np.abs(jpg.astype(int) - smooth).max() < 12


def test_mx_namespace():
    assert mx.recordio is recordio


_MX_SCRIPT = """
import json, sys
import mxnet as mx
import numpy as np
mode, rec, idx, spec = sys.argv[1:5]
payloads = [bytes.fromhex(h) for h in json.load(open(spec))]
if mode == 'write':
    w = mx.recordio.MXIndexedRecordIO(idx, rec, 'w')
    for i, p in enumerate(payloads):
        w.write_idx(i, p)
    w.close()
    h = mx.recordio.pack(mx.recordio.IRHeader(0, [1.5, 2.0], 3, 4), b'img')
    open(rec + '.pack', 'wb').write(h)
else:
    r = mx.recordio.MXIndexedRecordIO(idx, rec, 'r')
    got = [r.read_idx(i) for i in range(len(payloads))]
    assert got == payloads, 'MXNet read different records'
    h, s = mx.recordio.unpack(open(rec + '.pack', 'rb').read())
    assert h.flag == 2 and list(h.label) == [1.5, 2.0] and h.id == 3 and s == b'img'
print('ok')
"""


@pytest.mark.skipif(not os.path.exists(MXPY), reason="real MXNet venv not present")
def test_files_match_real_mxnet(tmp_path):
    spec = tmp_path / "payloads.json"
    spec.write_text(json.dumps([p.hex() for p in PAYLOADS]))
    script = tmp_path / "mx_rec.py"
    script.write_text(_MX_SCRIPT)
    # MXNet writes, ember reads, and the bytes equal ember's own writing
    mx_rec, mx_idx = tmp_path / "mx.rec", tmp_path / "mx.idx"
    res = subprocess.run([MXPY, str(script), "write", str(mx_rec), str(mx_idx), str(spec)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    ours_rec, ours_idx = tmp_path / "ours.rec", tmp_path / "ours.idx"
    w = recordio.MXIndexedRecordIO(ours_idx, ours_rec, "w")
    for i, p in enumerate(PAYLOADS):
        w.write_idx(i, p)
    w.close()
    assert ours_rec.read_bytes() == mx_rec.read_bytes()
    assert ours_idx.read_text() == mx_idx.read_text()
    r = recordio.MXIndexedRecordIO(mx_idx, mx_rec, "r")
    assert [r.read_idx(i) for i in range(len(PAYLOADS))] == PAYLOADS
    r.close()
    assert (recordio.pack(recordio.IRHeader(0, [1.5, 2.0], 3, 4), b"img")
            == (tmp_path / "mx.rec.pack").read_bytes())
    # ember writes, MXNet reads
    (tmp_path / "ours.rec.pack").write_bytes(
        recordio.pack(recordio.IRHeader(0, [1.5, 2.0], 3, 4), b"img"))
    res = subprocess.run([MXPY, str(script), "read", str(ours_rec), str(ours_idx), str(spec)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
