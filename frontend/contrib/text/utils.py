"""Token counting (MXNet 1.9.1's ``mx.contrib.text.utils``) and the errors of
``mx.contrib.text``.

MXNet checks the arguments of this package with ``assert`` and raises ``ValueError`` and
``KeyError`` for bad tokens and names; ember raises ``MXNetError`` subclasses that are also
those Python types, so code written against MXNet catches them as before."""
from __future__ import annotations

import collections
import re

from ember.base import MXNetError

__all__ = ["count_tokens_from_str"]


class TextArgumentError(MXNetError, AssertionError):
    """An argument or a file MXNet's text package rejects with an assertion."""


class TextValueError(MXNetError, ValueError):
    """A token index out of range, a token that is not indexed, a missing file path."""


class NameNotFoundError(MXNetError, KeyError):
    """An unknown embedding name or pretrained file name."""

    def __str__(self) -> str:      # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


def count_tokens_from_str(source_str: str, token_delim: str = " ", seq_delim: str = "\n",
                          to_lower: bool = False, counter_to_update=None):
    """Count the tokens of ``source_str``, split on ``token_delim`` or ``seq_delim``.

    Both delimiters are regular expressions, as in MXNet (``'\\\\*'`` splits on ``*``).
    Empty pieces are dropped; ``to_lower`` lower-cases every token first. Returns a new
    ``collections.Counter``, or ``counter_to_update`` updated in place and returned.

    >>> count_tokens_from_str(' Life is great ! \\n life is good . \\n', to_lower=True)
    Counter({'life': 2, 'is': 2, 'great': 1, '!': 1, 'good': 1, '.': 1})
    """
    if not isinstance(source_str, str):
        raise TextArgumentError("count_tokens_from_str: source_str must be a str, got "
                                f"{type(source_str).__name__}")
    try:
        pieces = re.split(f"{token_delim}|{seq_delim}", source_str)
    except re.error as err:
        raise TextArgumentError(f"count_tokens_from_str: token_delim {token_delim!r} or "
                                f"seq_delim {seq_delim!r} is not a valid regular expression "
                                f"({err}); escape special characters with a backslash") from err
    tokens = [t.lower() if to_lower else t for t in pieces if t]
    if counter_to_update is None:
        return collections.Counter(tokens)
    counter_to_update.update(tokens)
    return counter_to_update
