"""The IR parser's regex-driven scanners find what the plain character loops find."""
from hypothesis import given, settings
from hypothesis import strategies as st

from ember.ir.parser import _find_comment, _find_top, _skip_string


def _loop_find_top(s, chars, start=0):
    depth, i = 0, start
    while i < len(s):
        c = s[i]
        if c in "'\"":
            i = _skip_string(s, i)
            continue
        if depth == 0 and c in chars:
            return i
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        i += 1
    return -1


def _loop_find_comment(s):
    i = 0
    while i < len(s):
        if s[i] in "'\"":
            i = _skip_string(s, i)
        elif s[i] == "#":
            return i
        else:
            i += 1
    return -1


text = st.text(alphabet="ab ,=#:'\"\\()[]{}.%@+-", max_size=40)


@settings(max_examples=400, deadline=None)
@given(text, st.sampled_from([",", "=", ")", "]", "}", " ", ":", ",)", "#"]),
       st.integers(0, 5))
def test_find_top_matches_the_character_loop(s, chars, start):
    assert _find_top(s, chars, start) == _loop_find_top(s, chars, start)


@settings(max_examples=300, deadline=None)
@given(text)
def test_find_comment_matches_the_character_loop(s):
    assert _find_comment(s) == _loop_find_comment(s)
