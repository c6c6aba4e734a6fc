"""Convolution, BatchNorm and pooling on the CUDA backend against the reference backend,
under numba's CUDA simulator (its own pytest subprocess: tests/cuda_sim.py); ``gpu``-marked
tests run the same graphs at realistic sizes with cuBLAS (``pytest -m gpu``)."""
import numpy as np
import pytest
from cuda_check import F32, check
from cuda_check import no_fallback as _no_fallback
from cuda_check import rand as _rand
from cuda_sim import simulator_module

from ember.ir.graph import GraphBuilder
from ember.ir.types import TensorType

CUDA_SIMULATOR_MODULE = True
# the simulator runs kernels as Python: NumPy scalars warn where a device wraps (uint64 hash)
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in scalar:RuntimeWarning")
test_cuda_simulator_subprocess = simulator_module(__file__)


@pytest.mark.parametrize("chunked", [False, True])
def test_convolution_data_and_weight_gradients(chunked, monkeypatch):
    """Strided, padded, dilated 3x3 and 1x1 convolutions with bias and a relu epilogue, the
    deconvolution (data gradient) and the weight gradient; ``chunked``: one sample per
    im2col chunk (the weight gradient then accumulates over chunks)."""
    from ember.backends import cuda_conv
    if chunked:
        monkeypatch.setattr(cuda_conv, "SCRATCH_BYTES", 1)
    b = GraphBuilder("conv")
    x = b.input(TensorType((2, 3, 5, 4), F32), "x")
    w = b.param(TensorType((3, 3, 3, 3), F32), "w")
    bias = b.param(TensorType((3,), F32), "bias")
    w1 = b.param(TensorType((2, 3, 1, 1), F32), "w1")
    geo = dict(kernel=(3, 3), stride=(2, 1), pad=(1, 1), dilate=(1, 2))
    (y,) = b.emit("convolution", [x, w, bias], num_filter=3, **geo)
    (r,) = b.emit("relu", [y])
    (y1,) = b.emit("convolution", [x, w1], kernel=(1, 1), num_filter=2, no_bias=True)
    (dx,) = b.emit("deconvolution", [y, w], num_filter=3, adj=(0, 0), no_bias=True, **geo)
    (dw,) = b.emit("convolution_backward_weight", [y, x], **geo)
    report = check(b.build([r, y1, dx, dw]), [_rand((2, 3, 5, 4))],
                   [_rand((3, 3, 3, 3), 1), _rand((3,), 2), _rand((2, 3, 1, 1), 3)],
                   expect_kinds=("conv[tiled]", "deconv[tiled]", "conv_wgrad[tiled]"),
                   atol=1e-4)
    _no_fallback(report)


def test_depthwise_convolution_and_its_gradients():
    """MobileNet's depthwise convolutions (num_group = channels = filters): forward with bias
    and relu, the data gradient and the weight gradient through autodiff."""
    from ember.passes import run_pipeline
    b = GraphBuilder("dw")
    x = b.input(TensorType((2, 3, 5, 5), F32), "x")
    w = b.param(TensorType((3, 1, 3, 3), F32), "w")
    bias = b.param(TensorType((3,), F32), "bias")
    (h,) = b.emit("convolution", [x, w, bias], kernel=(3, 3), num_filter=3, num_group=3,
                  stride=(2, 1), pad=(1, 1))
    (h,) = b.emit("relu", [h])
    (loss,) = b.emit("sum", [h])
    joint = run_pipeline(b.build([loss]), grad=True, head_grads="ones")
    report = check(joint, [_rand((2, 3, 5, 5))], [_rand((3, 1, 3, 3), 1), _rand((3,), 2)],
                   atol=1e-4, expect_kinds=("conv[depthwise]", "conv_wgrad[depthwise]"))
    _no_fallback(report)
    b = GraphBuilder("dwdata")  # the data gradient alone: deconvolution with the groups
    g = b.input(TensorType((2, 3, 3, 5), F32), "g")
    w = b.param(TensorType((3, 1, 3, 3), F32), "w")
    (dx,) = b.emit("deconvolution", [g, w], kernel=(3, 3), num_filter=3, num_group=3,
                   stride=(2, 1), pad=(1, 1), adj=(0, 0), no_bias=True)
    report = check(b.build([dx]), [_rand((2, 3, 3, 5), 3)], [_rand((3, 1, 3, 3), 4)],
                   atol=1e-4, expect_kinds=("deconv[depthwise]",))
    _no_fallback(report)


def test_fused_convolution_epilogues_forward_and_backward():
    """A conv-relu-conv net's forward+backward through the fuse pass: out_ewise groups with
    convolution and deconvolution masters run as GEMM + epilogue kernels."""
    from ember.passes import run_pipeline
    b = GraphBuilder("convnet")
    x = b.input(TensorType((1, 2, 5, 5), F32), "x")
    w0 = b.param(TensorType((3, 2, 3, 3), F32), "w0")
    b0 = b.param(TensorType((3,), F32), "b0")
    w1 = b.param(TensorType((2, 3, 3, 3), F32), "w1")
    (h,) = b.emit("convolution", [x, w0, b0], kernel=(3, 3), num_filter=3, pad=(1, 1))
    (h,) = b.emit("relu", [h])
    (z,) = b.emit("convolution", [h, w1], kernel=(3, 3), num_filter=2, stride=(2, 2),
                  no_bias=True)
    (loss,) = b.emit("mean", [z])
    joint = run_pipeline(b.build([loss]), grad=True, head_grads="ones")
    params = [_rand((3, 2, 3, 3), 1) * 0.3, _rand((3,), 2), _rand((2, 3, 3, 3), 3) * 0.3]
    report = check(joint, [_rand((1, 2, 5, 5))], params, atol=1e-4)
    assert any(k.startswith(("conv[", "deconv[")) and k.endswith("+epilogue")
               for k in report), report
    _no_fallback(report)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("fix_gamma", [True, False])
def test_batch_norm_forward_backward_and_moving_statistics(train, fix_gamma):
    b = GraphBuilder("bn")
    x = b.input(TensorType((3, 4, 2, 5), F32), "x")
    og = b.input(TensorType((3, 4, 2, 5), F32), "og")
    ps = [b.param(TensorType((4,), F32), n) for n in ("gamma", "beta", "mm", "mv")]
    outs = b.emit("batch_norm", [x, *ps], eps=1e-3, momentum=0.9, fix_gamma=fix_gamma,
                  is_train=train, output_mean_var=True)
    grads = b.emit("batch_norm_backward", [og, x, ps[0], ps[2], ps[3]], eps=1e-3,
                   fix_gamma=fix_gamma, train=train)
    params = [_rand((4,), 1), _rand((4,), 2), _rand((4,), 3), np.abs(_rand((4,), 4)) + 0.5]
    report = check(b.build([*outs, *grads]), [_rand((3, 4, 2, 5)) * 2 + 1,
                                              _rand((3, 4, 2, 5), 5)], params, atol=1e-4,
                   expect_kinds=("batch_norm", "batch_norm_backward"))
    _no_fallback(report)


@pytest.mark.parametrize("kind", ["max", "avg", "sum"])
@pytest.mark.parametrize("geo", [dict(kernel=(3, 3), stride=(2, 2), pad=(1, 1)),
                                 dict(kernel=(2, 3), stride=(1, 2), pad=(0, 1),
                                      pooling_convention="full", count_include_pad=False),
                                 dict(global_pool=True, kernel=(1, 1))])
def test_pooling_and_its_gradient(kind, geo):
    """Overlapping windows (the backward's atomic adds), padding, the 'full' convention's
    overhang and its average divisors, global pooling."""
    b = GraphBuilder("pool")
    x = b.input(TensorType((2, 3, 5, 6), F32), "x")
    (y,) = b.emit("pooling", [x], pool_type=kind, **geo)
    og = b.input(y.type, "og")
    (dx,) = b.emit("pooling_backward", [og, x], pool_type=kind, **geo)
    report = check(b.build([y, dx]), [_rand((2, 3, 5, 6)), _rand(y.type.shape, 1)],
                   expect_kinds=("pooling", "pooling_backward"))
    _no_fallback(report)


def _block(n, c, f, hw):
    """A ResNet-style block's forward+backward (conv, BatchNorm, relu, max pooling)."""
    from ember.passes import run_pipeline
    b = GraphBuilder("block")
    x = b.input(TensorType((n, c, hw, hw), F32), "x")
    w = b.param(TensorType((f, c, 3, 3), F32), "w")
    ps = [b.param(TensorType((f,), F32), name) for name in ("gamma", "beta", "mm", "mv")]
    (h,) = b.emit("convolution", [x, w], kernel=(3, 3), num_filter=f, pad=(1, 1),
                  no_bias=True)
    (h,) = b.emit("batch_norm", [h, *ps], fix_gamma=False, is_train=True)
    (h,) = b.emit("relu", [h])
    (h,) = b.emit("pooling", [h], kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max")
    (loss,) = b.emit("mean", [h])
    joint = run_pipeline(b.build([loss]), grad=True, head_grads="ones")
    params = [_rand((f, c, 3, 3), 1) * 0.1, _rand((f,), 2), _rand((f,), 3), _rand((f,), 4),
              np.abs(_rand((f,), 5)) + 0.5]
    return joint, [_rand((n, c, hw, hw))], params


def test_conv_bn_pool_block_training_graph():
    joint, inputs, params = _block(2, 2, 3, 4)
    report = check(joint, inputs, params, atol=1e-4,
                   expect_kinds=("conv[", "batch_norm", "pooling_backward"))
    _no_fallback(report)


def test_resnet18_training_step_plans_without_a_round_trip():
    """Every node of ResNet-18 v1's whole training step (forward, softmax cross-entropy,
    backward, momentum SGD) gets a CUDA kernel (planned only: the simulator is too slow to
    run it; each kernel family is checked against the reference above)."""
    import ember as mx
    from ember import autograd, gluon, nd
    from ember.backends import cuda
    from ember.gluon.model_zoo import vision
    mx.random.seed(0)
    net = vision.resnet18_v1(classes=4)
    net.initialize(mx.init.Xavier())
    x, y = nd.array(_rand((1, 3, 8, 8))), nd.array([1.0])
    net(x)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1,
                                                          "momentum": 0.9})

    @mx.compile(backend="reference")
    def step(x, y):
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(1)
        return loss
    step(x, y)
    report = cuda.compile(step.graphs[0]).report
    _no_fallback(report)
    assert report["conv[tiled]"] == 20 and report["batch_norm_backward"] == 20, report


@pytest.mark.gpu
def test_gpu_conv_bn_pool_training_graph_larger_shapes():
    """The same block at realistic channel counts: cuBLAS GEMMs around im2col/col2im."""
    joint, inputs, params = _block(8, 16, 32, 32)
    report = check(joint, inputs, params, rtol=1e-3, atol=1e-4,
                   expect_kinds=("conv[cublas]", "conv_wgrad[cublas]"))
    _no_fallback(report)


def test_training_dropout_draws_on_the_device():
    """Drop rate, mask values and ``out = x * mask`` as the reference's law; a new mask each
    run (the step count advances on the device); outside training, a copy."""
    from cuda_check import run_cuda

    from ember.backends import cuda
    from ember.backends import cuda_device as cd
    b = GraphBuilder("drop")
    x = b.input(TensorType((64, 48), F32), "x")
    y, mask = b.emit("dropout", [x], p=0.25, is_train=True)
    graph = b.build([y, mask])
    xs = _rand((64, 48))
    fn = cuda.compile(graph)
    (y1, m1), (y2, m2) = ([cd.to_host(a) for a in fn([cd.to_device(xs)], [])]
                          for _ in range(2))
    assert fn.report == {"dropout": 1}
    assert set(np.unique(m1)) == {0, np.float32(1 / 0.75)}
    assert abs((m1 == 0).mean() - 0.25) < 0.04
    np.testing.assert_array_equal(y1, xs * m1)
    assert 0.3 < (m1 != m2).mean() < 0.45  # independent masks differ in 2p(1-p) = 37.5%
    b = GraphBuilder("keep")
    x = b.input(TensorType((4, 3), F32), "x")
    outs, _, report = run_cuda(b.build(b.emit("dropout", [x], p=0.5, is_train=False)),
                               [_rand((4, 3))])
    np.testing.assert_array_equal(outs[0], _rand((4, 3)))
    _no_fallback(report)
