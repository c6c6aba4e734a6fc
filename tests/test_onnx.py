"""mx.onnx: export (Symbol and block paths) checked by onnx.checker and run by onnxruntime
against ember's own outputs; import round trips; errors; MXNet 1.9.1's signatures."""
import sys

import numpy as np
import pytest

import ember as mx
from ember.base import MXNetError
from ember.demo import build_lenet, build_mlp
from ember.gluon import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

RTOL, ATOL = 1e-4, 1e-4


def _session(path):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _ember(net, *xs):
    return net(*[mx.nd.array(x) for x in xs]).asnumpy()


def _check_block(net, shapes, tmp_path, name="m", opset=None, rtol=RTOL, atol=ATOL):
    """Export ``net`` with a dynamic batch; check the model and compare onnxruntime with
    ember at two batch sizes. Returns the file path."""
    rng = np.random.default_rng(0)
    path = mx.onnx.export_block(net, [tuple(s) for s in shapes], str(tmp_path / f"{name}.onnx"),
                                opset_version=opset)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    sess = _session(path)
    names = [i.name for i in sess.get_inputs()]
    for batch in (shapes[0][0], shapes[0][0] + 3):
        xs = [rng.standard_normal((batch,) + tuple(s[1:])).astype(np.float32) for s in shapes]
        got = sess.run(None, dict(zip(names, xs)))[0]
        np.testing.assert_allclose(got, _ember(net, *xs), rtol=rtol, atol=atol)
    return path


def _init(net, x_shapes):
    net.initialize(mx.init.Xavier())
    net(*[mx.nd.ones(s) for s in x_shapes])
    for p in net.collect_params().values():   # non-trivial running statistics
        if p.name.endswith(("running_mean", "running_var")):
            base = np.random.default_rng(1).uniform(0.5, 1.5, p.shape).astype(np.float32)
            p.set_data(mx.nd.array(base if "var" in p.name else base - 1))
    return net


def test_seed_mlp_and_lenet(tmp_path):
    mlp = _init(build_mlp(), [(2, 784)])
    _check_block(mlp, [(2, 784)], tmp_path, "mlp")
    lenet = _init(build_lenet(), [(2, 1, 28, 28)])
    path = _check_block(lenet, [(2, 1, 28, 28)], tmp_path, "lenet")
    meta = mx.onnx.get_model_metadata(path)
    assert meta["input_tensor_data"] == [("data", (0, 1, 28, 28), onnx.TensorProto.FLOAT)]
    assert meta["output_tensor_data"] == [("lenet_dense2_fwd", (0, 10))]


class _Zooish(nn.HybridBlock):
    """A bit of every model-zoo network: grouped/dilated convs, BN (fix_gamma both ways),
    relu6 (clip), leaky kinds, max/avg/global pools, concat, residual add, dropout."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.c1 = nn.Conv2D(8, 3, padding=1, strides=2, use_bias=False)
            self.bn1 = nn.BatchNorm()
            self.c2 = nn.Conv2D(8, 3, padding=2, dilation=2, groups=4)
            self.bn2 = nn.BatchNorm(scale=False, center=False)
            self.c3 = nn.Conv2D(4, 1)
            self.prelu = nn.PReLU()
            self.elu, self.selu = nn.ELU(0.7), nn.SELU()
            self.lrelu, self.gelu = nn.LeakyReLU(0.1), nn.GELU()
            self.pool = nn.MaxPool2D(3, 2, padding=1, ceil_mode=True)
            self.avg = nn.AvgPool2D(3, 1, padding=1)
            self.avg2 = nn.AvgPool2D(2, 2, ceil_mode=True, count_include_pad=False)
            self.gap = nn.GlobalAvgPool2D()
            self.drop = nn.Dropout(0.5)
            self.fc = nn.Dense(5)

    def hybrid_forward(self, F, x):
        y = self.bn1(self.c1(x))
        y = F.clip(y, 0, 6)
        z = self.bn2(self.c2(y))
        y = F.relu(F.elemwise_add(y, z))
        a = self.prelu(self.c3(y))
        b = self.elu(self.lrelu(self.c3(y))) * self.selu(self.gelu(a))
        y = F.concat(self.avg(y), a, b, dim=1)
        y = self.pool(y) + self.avg2(y)
        return F.softmax(self.fc(self.drop(self.gap(y))), axis=-1)


@pytest.mark.parametrize("opset", [13, 18])
def test_zoo_like_block(tmp_path, opset):
    net = _init(_Zooish(), [(2, 3, 17, 17)])
    _check_block(net, [(2, 3, 17, 17)], tmp_path, opset=opset)


class _Shapes(nn.HybridBlock):
    """The reshape/transpose family, reductions, scalar and unary math, two inputs."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.fc = nn.Dense(6, flatten=False)
            self.ln = nn.LayerNorm()
            self.emb = nn.Embedding(10, 4)

    def hybrid_forward(self, F, x, ids):
        y = self.ln(self.fc(x))                                   # (B, 4, 6)
        y = F.reshape(y, shape=(0, -1, 3))                        # (B, 8, 3)
        y = F.transpose(y, axes=(0, 2, 1)).swapaxes(1, 2)         # (B, 8, 3)
        y = F.expand_dims(y, axis=1).squeeze(axis=1)
        s = F.split(y, num_outputs=2, axis=1)
        y = F.concat(s[1], s[0], dim=1) * 2 - 1
        y = F.sqrt(F.abs(y) + 1) / 3 + F.exp(-F.square(y)) + F.log_softmax(y, axis=1)
        y = F.stack(y, F.tanh(y), axis=1).reshape((-3, -2))   # (2B, 8, 3)
        e = F.sum(self.emb(ids), axis=1, keepdims=True)       # (B, 1, 4)
        m = F.mean(y, axis=(1, 2)) + F.max(y, axis=0, exclude=True)
        t = F.batch_dot(e, e, transpose_b=True).reshape((-1,))
        return F.Flatten(F.slice_axis(y, axis=1, begin=1, end=None)), m, t


def test_shape_family_two_inputs(tmp_path):
    net = _Shapes()
    net.initialize(mx.init.Xavier())
    x, ids = np.random.default_rng(0).standard_normal((2, 4, 5)).astype(np.float32), \
        np.array([[1, 2, 3], [4, 5, 9]], np.float32)
    outs = net(mx.nd.array(x), mx.nd.array(ids))
    path = mx.onnx.export_block(net, [mx.nd.array(x), mx.nd.array(ids)],
                                str(tmp_path / "s.onnx"))
    got = _session(path).run(None, {"data0": x, "data1": ids})
    assert len(got) == 3
    for g, e in zip(got, outs):
        np.testing.assert_allclose(g, e.asnumpy(), rtol=RTOL, atol=ATOL)
    x5, ids5 = np.tile(x, (3, 1, 1))[:5], np.tile(ids, (3, 1))[:5]
    got5 = _session(path).run(None, {"data0": x5, "data1": ids5})
    for g, e in zip(got5, net(mx.nd.array(x5), mx.nd.array(ids5))):
        np.testing.assert_allclose(g, e.asnumpy(), rtol=RTOL, atol=ATOL)


def test_export_model_symbol_and_files(tmp_path):
    """MXNet's export_model: a Symbol + dict, and -symbol.json + .params files; static and
    dynamic shapes; the returned path; the old argument names."""
    net = _init(build_lenet(), [(1, 1, 28, 28)])
    net.hybridize()
    x = np.random.default_rng(2).standard_normal((3, 1, 28, 28)).astype(np.float32)
    want = _ember(net, x)
    sym_file, params_file = net.export(str(tmp_path / "lenet"))
    out = str(tmp_path / "a.onnx")
    assert mx.onnx.export_model(sym_file, params_file, [(3, 1, 28, 28)], np.float32,
                                out) == out
    dims = onnx.load(out).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [3, 1, 28, 28]
    np.testing.assert_allclose(_session(out).run(None, {"data": x})[0], want, rtol=RTOL,
                               atol=ATOL)
    sym = mx.sym.load(sym_file)
    loaded = mx.nd.load(params_file)
    arg = {k[4:]: v for k, v in loaded.items() if k.startswith("arg:")}
    aux = {k[4:]: v for k, v in loaded.items() if k.startswith("aux:")}
    out2 = mx.onnx.export_model(sym, [arg, aux], input_shape=[(1, 1, 28, 28)],
                                onnx_file_path=str(tmp_path / "b.onnx"), dynamic=True,
                                dynamic_input_shapes=[(None, 1, 28, 28)])
    np.testing.assert_allclose(_session(out2).run(None, {"data": x})[0], want, rtol=RTOL,
                               atol=ATOL)
    # mx.contrib.onnx is the same module, as in MXNet 1.x
    assert mx.contrib.onnx.export_model is mx.onnx.export_model


def _shapes_net():
    net = _Shapes()
    net.initialize(mx.init.Xavier())
    return net


_ROUND_TRIP = {"zooish": (lambda: _init(_Zooish(), [(2, 3, 17, 17)]), [(2, 3, 17, 17)]),
               "misc": (lambda: _init(_Misc(), [(2, 3, 4, 4)]), [(2, 3, 4, 4)]),
               "shapes": (_shapes_net, [(2, 4, 5), (2, 3)])}


@pytest.mark.parametrize("which", sorted(_ROUND_TRIP))
def test_import_round_trip(tmp_path, which):
    """ember -> onnx -> ember gives the same outputs (and exports again to the same)."""
    make, shapes = _ROUND_TRIP[which]
    net = make()
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    if which == "shapes":
        xs[1] = rng.integers(0, 10, shapes[1]).astype(np.float32)
    want = net(*[mx.nd.array(x) for x in xs])
    want = [w.asnumpy() for w in (want if isinstance(want, tuple | list) else [want])]
    path = mx.onnx.export_block(net, shapes, str(tmp_path / "z.onnx"))
    sym, arg_params, aux_params = mx.contrib.onnx.import_model(path)
    names = ["data"] if len(xs) == 1 else [f"data{i}" for i in range(len(xs))]
    feeds = {n: mx.nd.array(x) for n, x in zip(names, xs)}
    got = sym.bind(mx.cpu(), {**feeds, **arg_params}, aux_states=aux_params).forward()
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.asnumpy(), w, rtol=RTOL, atol=ATOL)
    if which != "zooish":
        return
    assert any(k.endswith("running_var") for k in aux_params)   # BN statistics are aux
    block = mx.onnx.import_to_gluon(path)
    np.testing.assert_allclose(block(*feeds.values()).asnumpy(), want[0], rtol=RTOL,
                               atol=ATOL)
    again = mx.onnx.export_model(sym, {**arg_params, **aux_params}, shapes,
                                 onnx_file_path=str(tmp_path / "z2.onnx"))
    np.testing.assert_allclose(_session(again).run(None, {"data": xs[0]})[0], want[0],
                               rtol=RTOL, atol=ATOL)


def test_errors(tmp_path, monkeypatch):
    net = _init(build_mlp(), [(1, 784)])
    with pytest.raises(MXNetError, match="opset_version 12"):
        mx.onnx.export_block(net, (1, 784), str(tmp_path / "x.onnx"), opset_version=12)
    x = mx.sym.var("data")
    bad = mx.sym.sort(mx.sym.FullyConnected(x, num_hidden=3, name="fc"), name="mysort")
    params = {"fc_weight": mx.nd.ones((3, 4)), "fc_bias": mx.nd.zeros(3)}
    with pytest.raises(MXNetError, match="sort.*mysort"):
        mx.onnx.export_model(bad, params, [(2, 4)], onnx_file_path=str(tmp_path / "y.onnx"))
    with pytest.raises(MXNetError, match="in_shapes"):
        mx.onnx.export_model(bad, params, [], onnx_file_path=str(tmp_path / "y.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(MXNetError, match="junk.onnx"):
        mx.onnx.import_model(str(tmp_path / "junk.onnx"))
    h = onnx.helper   # an op ember cannot import is named
    g = h.make_graph([h.make_node("NonMaxSuppression", ["b", "s"], ["y"], name="nms1")], "g",
                     [h.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 2, 4])
                      for n in ("b", "s")],
                     [h.make_tensor_value_info("y", onnx.TensorProto.INT64, [1, 3])])
    onnx.save_model(h.make_model(g), str(tmp_path / "nms.onnx"))
    with pytest.raises(MXNetError, match="NonMaxSuppression.*nms1"):
        mx.onnx.import_model(str(tmp_path / "nms.onnx"))
    monkeypatch.setitem(sys.modules, "onnx", None)   # the extra is not installed
    with pytest.raises(MXNetError, match=r"pip install 'ember\[onnx\]'"):
        mx.onnx.export_model(bad, params, [(2, 4)])


def _zoo_rows(names, folder):
    from ember.gluon.model_zoo import vision
    rows = []
    for name in names:
        net = vision.get_model(name, classes=1000)
        size = 299 if name.startswith("inception") else 224
        net = _init(net, [(1, 3, size, size)])
        x = np.random.default_rng(4).standard_normal((2, 3, size, size)).astype(np.float32)
        path = mx.onnx.export_block(net, (1, 3, size, size), str(folder / f"{name}.onnx"))
        onnx.checker.check_model(onnx.load(path), full_check=True)
        got, want = _session(path).run(None, {"data": x})[0], _ember(net, x)
        sym, args, aux = mx.onnx.import_model(path)
        back = sym.bind(mx.cpu(), {"data": mx.nd.array(x), **args}, aux_states=aux).forward()
        rows.append((name, float(np.abs(got - want).max()), float(np.abs(want).max()),
                     float(np.abs(back[0].asnumpy() - want).max())))
        print(f"{name:20s} {rows[-1][1]:<27.3g} {rows[-1][2]:<12.3g} {rows[-1][3]:.3g}",
              flush=True)
    return rows


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_model_zoo_onnxruntime(tmp_path):
    """Every model-zoo network: export (traced at batch 1), onnx.checker, onnxruntime vs
    ember at batch 2, and the import round trip (ember -> onnx -> ember)."""
    from ember.gluon.model_zoo import vision
    print("\nnetwork              max |onnxruntime - ember|   max |ember|  max |import - ember|")
    rows = _zoo_rows(sorted(vision._models), tmp_path)
    bad = [r for r in rows if not max(r[1], r[3]) <= 1e-4 * max(1.0, r[2])]
    assert not bad, bad


class _Misc(nn.HybridBlock):
    """Transposed conv, instance norm, pad, tile, where, comparisons, broadcasting, slices,
    L2 normalisation, softmin, scalar ops."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.up = nn.Conv2DTranspose(4, 3, strides=2, padding=1, output_padding=1)
            self.inorm = nn.InstanceNorm()

    def hybrid_forward(self, F, x):
        y = self.inorm(self.up(x))                                        # (B, 4, 8, 8)
        y = F.pad(y, mode="reflect", pad_width=(0, 0, 0, 0, 1, 1, 2, 2))  # (B, 4, 10, 12)
        y = F.slice(y, begin=(None, 1, 0, None), end=(None, None, 9, None),
                    step=(None, 1, 2, -1))                                # (B, 3, 5, 12)
        g = F.where(y > 0.1, y, F.tile(F.slice_axis(y, axis=3, begin=0, end=1),
                                       reps=(1, 1, 1, 12)))
        m = F.broadcast_like(F.max(g, axis=1, keepdims=True), g) <= g
        z = F.L2Normalization(g * m + 1 / (2 - F.relu(y)), mode="channel")
        return F.softmin(F.clip(z * 3, -2, 2.5) ** 2, axis=2) - F.log_softmax(z, axis=1)


def test_misc_ops(tmp_path):
    net = _init(_Misc(), [(2, 3, 4, 4)])
    _check_block(net, [(2, 3, 4, 4)], tmp_path)


def test_dynamic_all_dims(tmp_path):
    """dynamic=True without dynamic_input_shapes (every dim unknown, as MXNet declares
    it): a fully convolutional net runs at other batch sizes and image sizes."""
    net = nn.HybridSequential()
    net.add(nn.Conv2D(6, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"),
            nn.MaxPool2D(3, 2, ceil_mode=True), nn.Conv2D(5, 1), nn.GlobalAvgPool2D(),
            nn.Flatten())
    net = _init(net, [(1, 3, 16, 16)])
    net.hybridize()
    net(mx.nd.ones((1, 3, 16, 16)))
    sym_file, params_file = net.export(str(tmp_path / "fcn"))
    path = mx.onnx.export_model(sym_file, params_file, [(1, 3, 16, 16)], dynamic=True,
                                onnx_file_path=str(tmp_path / "fcn.onnx"))
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [0, 0, 0, 0]
    sess = _session(path)
    for shape in [(1, 3, 16, 16), (3, 3, 21, 18)]:
        x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(sess.run(None, {"data": x})[0], _ember(net, x), rtol=RTOL,
                                   atol=ATOL)
