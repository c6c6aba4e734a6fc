"""``mx.contrib.text.vocab``: MXNet 1.9.1's ``Vocabulary``, the token <-> index map that the
token embeddings extend and ``gluon.contrib.data.text`` (WikiText) indexes with.

Order of the indices: the unknown token is 0, the reserved tokens follow in the order given,
then the counter's keys by falling frequency, ties broken by the keys' own order (sorted), at
most ``most_freq_count`` of them and only those counted at least ``min_freq`` times. Keys that
are the unknown or a reserved token are not indexed twice. Tokens may be any hashable values
of one type (str, int, tuples...)."""
from __future__ import annotations

import collections.abc
import numbers

from ._constants import UNKNOWN_IDX
from .utils import TextArgumentError, TextValueError

__all__ = ["Vocabulary"]


class Vocabulary:
    """Indexing for text tokens (see the module docstring for the order).

    Parameters
    ----------
    counter : collections.Counter (or another mapping token -> count), optional
        The counts whose keys are indexed.
    most_freq_count : int or None
        Index at most this many keys of ``counter`` (reserved tokens not counted).
    min_freq : int, default 1
        Index only keys counted at least this many times (must be positive).
    unknown_token : hashable, default ``'<unk>'``
        What every token that is not indexed maps to (index 0).
    reserved_tokens : list of hashables or None
        Always indexed, right after the unknown token; distinct and not ``unknown_token``.
    """

    def __init__(self, counter=None, most_freq_count=None, min_freq=1, unknown_token="<unk>",
                 reserved_tokens=None):
        if not isinstance(min_freq, numbers.Real) or min_freq <= 0:
            raise TextArgumentError(f"Vocabulary: `min_freq` must be set to a positive value, "
                                    f"got {min_freq!r}.")
        if most_freq_count is not None and (not isinstance(most_freq_count, numbers.Integral)
                                            or most_freq_count < 0):
            raise TextArgumentError("Vocabulary: `most_freq_count` must be None or a "
                                    f"non-negative int, got {most_freq_count!r}.")
        if reserved_tokens is not None:
            reserved_tokens = list(reserved_tokens)
            if unknown_token in reserved_tokens:
                raise TextArgumentError("Vocabulary: `reserved_token` cannot contain "
                                        f"`unknown_token` {unknown_token!r}.")
            if len(set(reserved_tokens)) != len(reserved_tokens):
                dups = sorted({repr(t) for t in reserved_tokens
                               if reserved_tokens.count(t) > 1})
                raise TextArgumentError("Vocabulary: `reserved_tokens` cannot contain "
                                        f"duplicate reserved tokens ({', '.join(dups)}).")
        self._index_unknown_and_reserved_tokens(unknown_token, reserved_tokens)
        if counter is not None:
            self._index_counter_keys(counter, most_freq_count, min_freq)

    def _index_unknown_and_reserved_tokens(self, unknown_token, reserved_tokens) -> None:
        self._unknown_token = unknown_token
        self._reserved_tokens = None if reserved_tokens is None else list(reserved_tokens)
        self._idx_to_token = [unknown_token] + list(reserved_tokens or [])
        self._token_to_idx = {t: i for i, t in enumerate(self._idx_to_token)}

    def _index_counter_keys(self, counter, most_freq_count, min_freq) -> None:
        if not isinstance(counter, collections.abc.Mapping):
            raise TextArgumentError("Vocabulary: `counter` must be an instance of "
                                    f"collections.Counter, got {type(counter).__name__}.")
        try:
            items = sorted(counter.items(), key=lambda kv: kv[0])
        except TypeError as err:
            raise TextArgumentError("Vocabulary: the keys of `counter` must be of one "
                                    f"comparable type (str, int, tuple...): {err}") from err
        items.sort(key=lambda kv: kv[1], reverse=True)   # stable: ties stay in key order
        budget = len(items) if most_freq_count is None else most_freq_count
        for token, freq in items:
            if freq < min_freq or budget <= 0:
                break
            if token not in self._token_to_idx:
                self._token_to_idx[token] = len(self._idx_to_token)
                self._idx_to_token.append(token)
                budget -= 1

    def __len__(self) -> int:
        return len(self._idx_to_token)

    def __contains__(self, token) -> bool:
        return token in self._token_to_idx

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={len(self)}, "
                f"unknown_token={self._unknown_token!r}, "
                f"reserved_tokens={self._reserved_tokens!r})")

    @property
    def token_to_idx(self) -> dict:
        """dict: each indexed token's index."""
        return self._token_to_idx

    @property
    def idx_to_token(self) -> list:
        """list: the indexed tokens, position = index."""
        return self._idx_to_token

    @property
    def unknown_token(self):
        """The token every unindexed token maps to (index 0)."""
        return self._unknown_token

    @property
    def reserved_tokens(self):
        """The reserved tokens (a list), or None when none were given."""
        return self._reserved_tokens

    def to_indices(self, tokens):
        """The index of a token, or the list of indices of a list of tokens (0 for tokens
        that are not indexed). Anything but a list is one token (tuples can be tokens)."""
        get = self._token_to_idx.get
        if not isinstance(tokens, list):
            return get(tokens, UNKNOWN_IDX)
        return [get(t, UNKNOWN_IDX) for t in tokens]

    def to_tokens(self, indices):
        """The token of an index, or the list of tokens of a list of indices; an index that
        is not an int in ``[-len(self), len(self))`` raises a ``ValueError``
        (``MXNetError``)."""
        single = not isinstance(indices, list)
        n = len(self._idx_to_token)
        tokens = []
        for idx in [indices] if single else indices:
            if (not isinstance(idx, numbers.Integral) or isinstance(idx, bool)
                    or not -n <= idx < n):
                raise TextValueError(f"Token index {idx!r} in the provided `indices` is invalid "
                                 f"(the vocabulary has {n} tokens).")
            tokens.append(self._idx_to_token[idx])
        return tokens[0] if single else tokens
