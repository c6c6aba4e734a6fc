"""Write MXNet 1.9.1 symbol JSON files for ember's loader tests (run with real MXNet).

    /tmp/mxvenv/bin/python tests/data/make_symbol_json.py

Each network is saved as ``symbol_json/<name>.json`` with ``<name>.shapes.json`` holding what
MXNet itself says of it: arguments, outputs, auxiliary states and inferred shapes.
"""
import json
import os

import mxnet as mx

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "symbol_json")


def mlp():
    data = mx.sym.Variable("data")
    fc1 = mx.sym.FullyConnected(data=data, name="fc1", num_hidden=64)
    act = mx.sym.Activation(data=fc1, act_type="relu", name="relu1")
    fc2 = mx.sym.FullyConnected(data=act, name="fc2", num_hidden=10)
    return fc2, {"data": (8, 20)}


def cnn():
    data = mx.sym.Variable("data")
    conv = mx.sym.Convolution(data=data, name="conv1", num_filter=8, kernel=(3, 3),
                              pad=(1, 1), workspace=512)
    bn = mx.sym.BatchNorm(data=conv, name="bn1", fix_gamma=False)
    act = mx.sym.Activation(data=bn, act_type="relu", name="relu1")
    pool = mx.sym.Pooling(data=act, name="pool1", kernel=(2, 2), stride=(2, 2),
                          pool_type="max")
    flat = mx.sym.Flatten(data=pool, name="flat")
    fc = mx.sym.FullyConnected(data=flat, name="fc", num_hidden=5)
    return fc, {"data": (2, 3, 8, 8)}


def main():
    os.makedirs(HERE, exist_ok=True)
    for name, make in (("mlp", mlp), ("cnn", cnn)):
        sym, shapes = make()
        sym.save(os.path.join(HERE, f"{name}.json"))
        arg, out, aux = sym.infer_shape(**shapes)
        meta = {"inputs": shapes, "arguments": sym.list_arguments(),
                "outputs": sym.list_outputs(), "aux": sym.list_auxiliary_states(),
                "arg_shapes": arg, "out_shapes": out, "aux_shapes": aux}
        with open(os.path.join(HERE, f"{name}.shapes.json"), "w") as f:
            json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
