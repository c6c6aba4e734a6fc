"""lr_scheduler values at chosen steps, with linear and constant warmup (MXNet's formulas)."""
from __future__ import annotations

import math

import pytest

from ember import lr_scheduler as lrs


def test_factor_scheduler_with_linear_warmup():
    s = lrs.FactorScheduler(step=10, factor=0.5, base_lr=1.0, warmup_steps=4,
                            warmup_begin_lr=0.2)
    assert [s(i) for i in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert s(4) == 1.0 and s(10) == 1.0 and s(11) == 0.5 and s(20) == 0.5
    assert s(21) == 0.25 and s(45) == pytest.approx(0.0625)  # jumps several steps at once
    floor = lrs.FactorScheduler(step=1, factor=0.1, stop_factor_lr=1e-3, base_lr=1.0)
    assert floor(10) == pytest.approx(1e-3)


def test_multifactor_and_constant_warmup():
    s = lrs.MultiFactorScheduler(step=[5, 8], factor=0.1, base_lr=1.0, warmup_steps=3,
                                 warmup_begin_lr=0.5, warmup_mode="constant")
    assert [s(i) for i in range(3)] == [0.5, 0.5, 0.5]
    assert s(5) == 1.0 and s(6) == pytest.approx(0.1) and s(8) == pytest.approx(0.1)
    assert s(9) == pytest.approx(0.01) and s(100) == pytest.approx(0.01)
    with pytest.raises(ValueError):
        lrs.MultiFactorScheduler(step=[5, 5])


def test_poly_and_cosine():
    p = lrs.PolyScheduler(max_update=12, base_lr=1.0, pwr=2, final_lr=0.1, warmup_steps=2)
    assert p(0) == 0.0 and p(1) == pytest.approx(0.5)
    assert p(7) == pytest.approx(0.1 + 0.9 * (1 - 5 / 10) ** 2)
    assert p(12) == pytest.approx(0.1) and p(50) == pytest.approx(0.1)
    c = lrs.CosineScheduler(max_update=10, base_lr=2.0, final_lr=0.0)
    assert c(0) == pytest.approx(2.0) and c(5) == pytest.approx(1.0)
    assert c(3) == pytest.approx(1 + math.cos(math.pi * 0.3))
    assert c(10) == pytest.approx(0.0, abs=1e-12) and c(11) == c(10)


def test_bad_arguments():
    with pytest.raises(ValueError):
        lrs.LRScheduler(base_lr=0.1, warmup_begin_lr=0.5)
    with pytest.raises(ValueError):
        lrs.LRScheduler(warmup_mode="exp")
    with pytest.raises(ValueError):
        lrs.FactorScheduler(step=0)
    with pytest.raises(ValueError):
        lrs.FactorScheduler(step=2, factor=2.0)
    with pytest.raises(ValueError):
        lrs.CosineScheduler(max_update=0)


def test_scheduler_drives_optimizer():
    import ember.optimizer as opt
    o = opt.create("sgd", lr_scheduler=lrs.FactorScheduler(step=2, factor=0.5, base_lr=1.0))
    assert o.learning_rate == 1.0
    o.num_update = 3
    assert o.learning_rate == 0.5 and o._get_lr(0) == 0.5
    o2 = opt.create("sgd", learning_rate=0.3, lr_scheduler=lrs.FactorScheduler(step=2))
    assert o2.lr_scheduler.base_lr == 0.3  # learning_rate overrides the scheduler's base_lr
