"""The ``ember`` command. Subcommands: ``demo`` (more arrive with the compiler issues)."""
from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    """Train the seed MLP on Fashion-MNIST (or, with --toy, a linear model on random data)."""
    if not args.toy:
        from ember.demo import run
        acc = run(epochs=args.epochs, hybridize=args.hybridize, data_dir=args.data,
                  num_workers=args.workers, out_dir=args.out)
        return 0 if acc >= 0.8 else 1
    return _toy(args)


def _toy(args) -> int:
    """Fit a small linear model with eager autograd and report the loss falling."""
    import numpy as np

    import ember as mx
    from ember import autograd, nd

    mx.random.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    true_w = rng.standard_normal((5, 1)).astype(np.float32)
    X = nd.array(rng.standard_normal((256, 5)))
    y = nd.dot(X, nd.array(true_w)) + 0.01 * nd.random.normal(shape=(256, 1))
    w = nd.zeros((5, 1))
    w.attach_grad()
    for step in range(args.steps):
        with autograd.record():
            loss = ((nd.dot(X, w) - y) ** 2).mean()
        loss.backward()
        w[:] = w - args.lr * w.grad
        if step % max(1, args.steps // 5) == 0 or step == args.steps - 1:
            print(f"step {step:3d}  loss {loss.asscalar():.6f}")
    err = float(np.abs(w.asnumpy() - true_w).max())
    print(f"max |w - w_true| = {err:.4f}")
    return 0 if err < 0.05 else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ember`` command."""
    parser = argparse.ArgumentParser(prog="ember", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    demo = sub.add_parser("demo", help="train a small model and report how it went")
    demo.add_argument("--epochs", type=int, default=2)
    demo.add_argument("--hybridize", action=argparse.BooleanOptionalAction, default=True)
    demo.add_argument("--data", default=None, help="directory of Fashion-MNIST IDX files")
    demo.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    demo.add_argument("--out", default="demo-out", help="where to write the trained model")
    demo.add_argument("--toy", action="store_true", help="linear regression on random data")
    demo.add_argument("--steps", type=int, default=100)
    demo.add_argument("--lr", type=float, default=0.1)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(fn=_demo)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
