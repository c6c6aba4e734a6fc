"""infer_shapes: before / expected IR text, fixed-point propagation, errors, partial mode."""
import textwrap

import pytest
from hypothesis import given
from test_printer import mlp

from ember.ir.errors import EmberError
from ember.ir.printer import parse_graph, print_graph
from ember.ir.types import TensorType as T
from ember.ir.verify import verify
from ember.passes.infer_shapes import infer_shapes


def check(before: str, expected: str, **options):
    g = parse_graph(textwrap.dedent(before))
    out = infer_shapes(g, **options)
    verify(out)
    assert print_graph(out) == textwrap.dedent(expected)
    assert print_graph(g) == print_graph(parse_graph(textwrap.dedent(before)))  # untouched
    return out


def test_lazy_dense_weight_learns_its_shape():
    out = check("""\
        graph mlp(%x: f32[2,784]) params(%w0: f32[?,?], %b0: f32[?], %w1: f32[*]) {
          %0: f32[*] = fully_connected(%x, %w0, %b0) {num_hidden=256}
          %1: f32[*] = relu(%0)
          %2: f32[*] = fully_connected(%1, %w1) {no_bias=True, num_hidden=10}
          return %2
        }
        """, """\
        graph mlp(%x: f32[2,784]) params(%w0: f32[256,784], %b0: f32[256], %w1: f32[10,256]) {
          %0: f32[2,256] = fully_connected(%x, %w0, %b0) {num_hidden=256}
          %1: f32[2,256] = relu(%0)
          %2: f32[2,10] = fully_connected(%1, %w1) {no_bias=True, num_hidden=10}
          return %2
        }
        """)
    assert out.params[0].type == T((256, 784))


def test_backward_propagation_through_elementwise_ops():
    check("""\
        graph g(%x: f32[*], %y: f32[3,4]) {
          %0: f32[*] = exp(%x)
          %1: f32[*] = negative(%0)
          %2: f32[*] = elemwise_add(%1, %y)
          return %2
        }
        """, """\
        graph g(%x: f32[3,4], %y: f32[3,4]) {
          %0: f32[3,4] = exp(%x)
          %1: f32[3,4] = negative(%0)
          %2: f32[3,4] = elemwise_add(%1, %y)
          return %2
        }
        """)


def test_fixed_point_reaches_earlier_users_of_a_refined_parameter():
    check("""\
        graph g(%x: f32[5,3]) params(%w: f32[?,?]) {
          %0: f32[*] = sigmoid(%w)
          %1: f32[*] = sum(%0) {axis=1}
          %2: f32[*] = fully_connected(%x, %w) {no_bias=True, num_hidden=7}
          return %1, %2
        }
        """, """\
        graph g(%x: f32[5,3]) params(%w: f32[7,3]) {
          %0: f32[7,3] = sigmoid(%w)
          %1: f32[7] = sum(%0) {axis=1}
          %2: f32[5,7] = fully_connected(%x, %w) {no_bias=True, num_hidden=7}
          return %1, %2
        }
        """)


def test_multi_output_and_mode_ops():
    check("""\
        graph g(%x: f32[6,8], %y: f32[*]) {
          %0: f32[*], %1: f32[*] = split(%x) {num_outputs=2}
          %2: f32[*], %3: f32[*] = dropout(%0) {is_train=True, p=0.25}
          %4: f32[*] = elemwise_mul(%2, %y)
          %5: f32[*] = elemwise_add(%4, %1)
          return %5
        }
        """, """\
        graph g(%x: f32[6,8], %y: f32[6,4]) {
          %0: f32[6,4], %1: f32[6,4] = split(%x) {num_outputs=2}
          %2: f32[6,4], %3: f32[6,4] = dropout(%0) {is_train=True, p=0.25}
          %4: f32[6,4] = elemwise_mul(%2, %y)
          %5: f32[6,4] = elemwise_add(%4, %1)
          return %5
        }
        """)


def test_unknown_dims_are_an_error_naming_value_and_op():
    text = """\
        graph g(%x: f32[?,3]) params(%w: f32[?,?]) {
          %0: f32[*] = fully_connected(%x, %w) {no_bias=True, num_hidden=4}
          return %0
        }
        """
    with pytest.raises(EmberError, match=r"input %x: f32\[\?,3\] is not known: none of the "
                                         r"ops reading it determines it; the first is\n"
                                         r"    %0: f32\[\?,4\] = fully_connected"):
        infer_shapes(parse_graph(textwrap.dedent(text)))
    check(text, """\
        graph g(%x: f32[?,3]) params(%w: f32[4,3]) {
          %0: f32[?,4] = fully_connected(%x, %w) {no_bias=True, num_hidden=4}
          return %0
        }
        """, partial=True)


def test_unresolved_output_names_its_op():
    text = "graph g(%x: f32[2,3]) {\n  %0: f32[*] = shape_array(%x)\n  return %0\n}\n"
    g = infer_shapes(parse_graph(text))  # resolvable: shape_array is rank 1
    assert g.outputs[0].type.known
    text = "graph g(%x: f32[*]) {\n  %0: f32[*] = sum(%x)\n  return %0\n}\n"
    with pytest.raises(EmberError, match=r"input %x: f32\[\*\] is not known"):
        infer_shapes(parse_graph(text))


def test_conflicting_shapes_name_the_statement():
    text = """\
        graph g(%x: f32[2,3], %y: f32[2,4]) {
          %0: f32[2,3] = relu(%x)
          %1: f32[2,3] = elemwise_add(%0, %y)
          return %1
        }
        """
    with pytest.raises(EmberError, match=r"infer_shapes g: .*\n    %1: f32\[2,3\] = "
                                         r"elemwise_add\(%0, %y\)"):
        infer_shapes(parse_graph(textwrap.dedent(text)))


@given(mlp())
def test_infer_shape_path_of_a_traced_model(g):
    """MXNet's sym.infer_shape(data=...): set the input type, then infer everything."""
    g.inputs[0].type = T((g.inputs[0].type.shape[0] or 3, 6))
    out = infer_shapes(g)
    verify(out)
    assert all(v.type.known for v in out.inputs + out.params)
    assert all(o.type.known for n in out.nodes for o in n.outputs)
    assert [p.name_hint for p in out.params] == [p.name_hint for p in g.params]


def test_unknown_dtypes_flow_without_shapes():
    """MXNet's infer_type: a weight of unknown dtype takes its data's; outputs follow."""
    text = textwrap.dedent("""\
        graph g(%x: f16[*], %w: f32[*], %y: f32[*]) {
          %0: f32[*] = fully_connected(%x, %w) {no_bias=True, num_hidden=4}
          %1: f32[*] = relu(%0)
          %2: f32[*] = elemwise_add(%y, %y)
          return %1, %2
        }
        """)
    g = parse_graph(text)
    out = infer_shapes(g, partial=True, unknown_dtypes=[g.inputs[1], g.inputs[2]])
    assert print_graph(out) == textwrap.dedent("""\
        graph g(%x: f16[*], %w: f16[*], %y: f32[*]) {
          %0: f16[*] = fully_connected(%x, %w) {no_bias=True, num_hidden=4}
          %1: f16[*] = relu(%0)
          %2: f32[*] = elemwise_add(%y, %y)
          return %1, %2
        }
        """)
    unknown = out.meta["unknown_dtypes"]
    assert [v is out.inputs[2] for v in unknown] == [True, False]
    assert unknown[1] is out.nodes[2].outputs[0]
    assert "unknown_dtypes" not in infer_shapes(parse_graph(text.replace("f16", "f32")),
                                                partial=True).meta
    with pytest.raises(EmberError, match="fully_connected: inputs must share one dtype, "
                                         "got data float16, weight float32"):
        infer_shapes(g, partial=True)  # declared dtypes that disagree: MXNet's infer_type error


def test_convolution_weight_of_unknown_rank_takes_the_data_rank():
    check("""\
        graph g(%x: f32[1,3,8,8]) params(%w: f32[*]) {
          %0: f32[*] = convolution(%x, %w) {kernel=(3, 3), no_bias=True, num_filter=4}
          return %0
        }
        """, """\
        graph g(%x: f32[1,3,8,8]) params(%w: f32[4,3,3,3]) {
          %0: f32[1,4,6,6] = convolution(%x, %w) {kernel=(3, 3), no_bias=True, num_filter=4}
          return %0
        }
        """)


def test_zeros_of_unknown_batch_takes_it_from_its_consumers():
    # a recurrent cell's begin state, zeros((0, 3)) in MXNet's legacy shapes: fully_connected
    # gives its data the output's first dim (MXNet's FullyConnectedShape), the elementwise add
    # gives that output the batch, and the zeros' shape attribute is written (nnvm's InitShape)
    out = check("""\
        graph cell(%x: f32[4,2]) params(%wi: f32[3,2], %wh: f32[3,3]) {
          %0: f32[*] = zeros() {shape=(None, 3)}
          %1: f32[*] = fully_connected(%x, %wi) {no_bias=True, num_hidden=3}
          %2: f32[*] = fully_connected(%0, %wh) {no_bias=True, num_hidden=3}
          %3: f32[*] = elemwise_add(%1, %2)
          return %3
        }
        """, """\
        graph cell(%x: f32[4,2]) params(%wi: f32[3,2], %wh: f32[3,3]) {
          %0: f32[4,3] = zeros() {shape=(4, 3)}
          %1: f32[4,3] = fully_connected(%x, %wi) {no_bias=True, num_hidden=3}
          %2: f32[4,3] = fully_connected(%0, %wh) {no_bias=True, num_hidden=3}
          %3: f32[4,3] = elemwise_add(%1, %2)
          return %3
        }
        """)
    assert out.nodes[0].attr_dict["shape"] == (4, 3)
    # nothing gives the batch: the unknown dim is an error naming the op
    with pytest.raises(EmberError, match="zeros"):
        infer_shapes(parse_graph(textwrap.dedent("""\
            graph g() {
              %0: f32[*] = zeros() {shape=(None, 3)}
              return %0
            }
            """)))


def test_split_input_learns_its_dims_from_an_output():
    # MXNet's SliceChannel fills its input from an output: the split axis num_outputs times
    check("""\
        graph g(%x: f32[?,15,?], %c: f32[3,5,2]) {
          %0: f32[*], %1: f32[*], %2: f32[*] = split(%x) {num_outputs=3}
          %3: f32[*] = elemwise_add(%1, %c)
          return %3
        }
        """, """\
        graph g(%x: f32[3,15,2], %c: f32[3,5,2]) {
          %0: f32[3,5,2], %1: f32[3,5,2], %2: f32[3,5,2] = split(%x) {num_outputs=3}
          %3: f32[3,5,2] = elemwise_add(%1, %c)
          return %3
        }
        """)
    # with squeeze_axis the axis comes back with size num_outputs
    check("""\
        graph g(%x: f32[?,?,?], %c: f32[4,5]) {
          %0: f32[*], %1: f32[*] = split(%x) {num_outputs=2, squeeze_axis=True}
          %2: f32[*] = elemwise_add(%0, %c)
          return %2
        }
        """, """\
        graph g(%x: f32[4,2,5], %c: f32[4,5]) {
          %0: f32[4,5], %1: f32[4,5] = split(%x) {num_outputs=2, squeeze_axis=True}
          %2: f32[4,5] = elemwise_add(%0, %c)
          return %2
        }
        """)


def test_convolution_data_learns_batch_and_stride_1_dims_from_its_output():
    # MXNet's ConvolutionShape: the batch always; a spatial dim only where the stride is 1
    at = "{kernel=(3, 3), no_bias=True, num_filter=2, pad=(1, 0), stride=(1, 2)}"
    check("""\
        graph g(%x: f32[?,4,?,?], %c: f32[5,2,32,16]) params(%w: f32[*]) {
          %0: f32[*] = convolution(%x, %w) ATTRS
          %1: f32[*] = elemwise_add(%0, %c)
          return %1
        }
        """.replace("ATTRS", at), """\
        graph g(%x: f32[5,4,32,?], %c: f32[5,2,32,16]) params(%w: f32[2,4,3,3]) {
          %0: f32[5,2,32,16] = convolution(%x, %w) ATTRS
          %1: f32[5,2,32,16] = elemwise_add(%0, %c)
          return %1
        }
        """.replace("ATTRS", at), partial=True)


def test_concat_inputs_learn_the_other_dims_from_the_output():
    # MXNet's ConcatShape: the output's dims off the joined axis reach every input
    check("""\
        graph g(%a: f32[?,10], %b: f32[?,5], %d: f32[2,?]) {
          %0: f32[*] = concat(%a, %b)
          %1: f32[*] = elemwise_add(%d, %0)
          return %1
        }
        """, """\
        graph g(%a: f32[2,10], %b: f32[2,5], %d: f32[2,15]) {
          %0: f32[2,15] = concat(%a, %b)
          %1: f32[2,15] = elemwise_add(%d, %0)
          return %1
        }
        """)


def test_outputs_of_a_split_that_disagree_name_the_op():
    with pytest.raises(EmberError, match="split: dims 3 and 5 disagree"):
        infer_shapes(parse_graph(textwrap.dedent("""\
            graph g(%x: f32[?,4], %c: f32[3,2], %e: f32[5,2]) {
              %0: f32[*], %1: f32[*] = split(%x) {num_outputs=2}
              %2: f32[*] = elemwise_add(%0, %c)
              %3: f32[*] = elemwise_add(%1, %e)
              return %2, %3
            }
            """)), partial=True)
