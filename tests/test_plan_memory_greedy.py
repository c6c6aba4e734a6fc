"""plan_memory's vectorised greedy-by-size placement equals the plain quadratic loop
(TFLite's GreedyBySizeOffsetCalculator written out directly), offset for offset."""
from hypothesis import given, settings
from hypothesis import strategies as st

from ember.passes.plan_memory import _Buffer, greedy_by_size


def _reference(buffers) -> int:
    """The textbook loop: every placed buffer whose lifetime meets this one, by offset."""
    placed, total = [], 0
    for buf in sorted(buffers, key=lambda b: (-b.size, b.start, b.end)):
        live = sorted((p for p in placed if p.start <= buf.end and buf.start <= p.end),
                      key=lambda p: p.offset)
        best, best_gap, prev_end = None, None, 0
        for p in live:
            gap = p.offset - prev_end
            if gap >= buf.size and (best_gap is None or gap < best_gap):
                best, best_gap = prev_end, gap
            prev_end = max(prev_end, p.offset + p.size)
        buf.offset = prev_end if best is None else best
        total = max(total, buf.offset + buf.size)
        placed.append(buf)
    return total


def _make(specs):
    out = []
    for size, start, length in specs:
        b = _Buffer.__new__(_Buffer)
        b.values, b.dtype = [], "float32"
        b.size, b.start, b.end, b.offset = size * 64, start, start + length, -1
        out.append(b)
    return out


spec = st.tuples(st.integers(1, 12), st.integers(0, 30), st.integers(0, 12))


@settings(max_examples=300, deadline=None)
@given(st.lists(spec, max_size=40))
def test_vectorised_greedy_places_every_buffer_where_the_loop_does(specs):
    a, b = _make(specs), _make(specs)
    assert greedy_by_size(a) == _reference(b)
    assert [x.offset for x in a] == [x.offset for x in b]


def test_a_thousand_overlapping_buffers_place_without_overlap():
    specs = [(1 + (i * 7) % 13, i % 97, 50 + i % 200) for i in range(1000)]
    bufs = _make(specs)
    total = greedy_by_size(bufs)
    for i, p in enumerate(bufs[:200]):
        for q in bufs[i + 1:]:
            if p.start <= q.end and q.start <= p.end:
                assert p.offset + p.size <= q.offset or q.offset + q.size <= p.offset
    assert total == max(b.offset + b.size for b in bufs)
