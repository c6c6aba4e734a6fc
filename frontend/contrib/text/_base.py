"""The base of ``mx.contrib.text.embedding``: the registry (:func:`register`, :func:`create`,
:func:`get_pretrained_file_names`) and ``_TokenEmbedding``, a
:class:`~ember.contrib.text.vocab.Vocabulary` with a vector per indexed token (``idx_to_vec``,
float32, one row per index; row 0 is the unknown token's).

Reading a file: the first vector of a token wins (later ones are skipped with a warning); a
line with a single number is a header (fastText's ``count dim``) and skipped with a warning;
a line without a vector, or of another length than the first, is an error naming the line.
The unknown token's row is its vector in the file when there is one, else
``init_unknown_vec(shape=vec_len)``. Reserved tokens get rows of their own (their vector in the
file, else ``init_unknown_vec``'s): MXNet 1.9.1 gave them none, so that every loaded token's
vector was one row off.
"""
from __future__ import annotations

import logging
import os
import warnings

import numpy as np

from ember import ndarray as nd
from ember.ndarray import NDArray

from . import _constants as C
from . import _pretrained
from .utils import NameNotFoundError, TextArgumentError, TextValueError
from .vocab import Vocabulary

__all__ = ["register", "create", "get_pretrained_file_names", "TokenEmbedding"]

_REGISTRY: dict[str, type] = {}


def register(embedding_cls):
    """Class decorator: make ``embedding_cls`` (a token embedding class) creatable by its
    lower-cased name with :func:`create`. A name registered again is replaced, with a
    warning."""
    if not (isinstance(embedding_cls, type) and issubclass(embedding_cls, _TokenEmbedding)):
        raise TextArgumentError("Can only register subclass of _TokenEmbedding, got "
                                f"{embedding_cls!r}")
    name = embedding_cls.__name__.lower()
    old = _REGISTRY.get(name)
    if old is not None and old is not embedding_cls:
        warnings.warn(f"New token embedding {embedding_cls.__module__}."
                      f"{embedding_cls.__name__} registered with name {name} is overriding "
                      f"existing token embedding {old.__module__}.{old.__name__}",
                      UserWarning, stacklevel=2)
    _REGISTRY[name] = embedding_cls
    return embedding_cls


def create(embedding_name, **kwargs):
    """An instance of the embedding registered as ``embedding_name`` (case-insensitive),
    made with ``kwargs`` (``create('glove', pretrained_file_name='glove.6B.50d.txt')``). An
    embedding instance is returned as it is."""
    if isinstance(embedding_name, _TokenEmbedding):
        if kwargs:
            raise TextArgumentError("token embedding is already an instance. Additional "
                                    "arguments are invalid")
        return embedding_name
    if not isinstance(embedding_name, str):
        raise TextArgumentError("token embedding must be of string type, got "
                                f"{type(embedding_name).__name__}")
    name = embedding_name.lower()
    if name not in _REGISTRY:
        raise TextArgumentError(f"{name} is not registered. Please register with "
                                "token embedding.register first (registered: "
                                f"{', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name](**kwargs)


def get_pretrained_file_names(embedding_name=None):
    """The pretrained file names of embedding ``embedding_name`` (a list), or of every
    registered embedding (a dict name -> list) when it is None."""
    if embedding_name is None:
        return {name: list(cls.pretrained_file_name_sha1) for name, cls in _REGISTRY.items()}
    if embedding_name not in _REGISTRY:
        raise NameNotFoundError(f"Cannot find `embedding_name` {embedding_name}. Use "
                                "`get_pretrained_file_names(embedding_name=None).keys()` to "
                                f"get all the valid embedding names ({', '.join(_REGISTRY)}).")
    return list(_REGISTRY[embedding_name].pretrained_file_name_sha1)


def _to_numpy(value) -> np.ndarray:
    return value.asnumpy() if isinstance(value, NDArray) else np.asarray(value)


class _TokenEmbedding(Vocabulary):
    """Base class of token embeddings: a vocabulary plus ``idx_to_vec``, an NDArray of shape
    ``(len(self), vec_len)`` whose row i is the vector of ``idx_to_token[i]``.

    Subclasses that read pretrained files set ``pretrained_file_name_sha1`` (file name ->
    SHA-1 hex, or None for "not checked"), and call :meth:`_check_pretrained_file_names`,
    :meth:`_get_pretrained_file` and :meth:`_load_embedding` in ``__init__``.
    """

    pretrained_file_name_sha1: dict = {}
    _source = ""        # where the pretrained files can be had (named in errors)

    def __init__(self, unknown_token="<unk>", reserved_tokens=None):
        super().__init__(unknown_token=unknown_token, reserved_tokens=reserved_tokens)
        self._vec_len = None
        self._idx_to_vec = None

    # ---- pretrained files ------------------------------------------------------------------
    @classmethod
    def _get_download_file_name(cls, pretrained_file_name):
        """The archive MXNet downloads for ``pretrained_file_name`` (the file itself here)."""
        return pretrained_file_name

    @classmethod
    def _check_pretrained_file_names(cls, pretrained_file_name):
        if pretrained_file_name not in cls.pretrained_file_name_sha1:
            name = cls.__name__.lower()
            raise NameNotFoundError(
                f"Cannot find pretrained file {pretrained_file_name} for token embedding "
                f"{name}. Valid pretrained files for embedding {name}: "
                f"{', '.join(cls.pretrained_file_name_sha1)}")

    @classmethod
    def _get_pretrained_file(cls, embedding_root, pretrained_file_name):
        """The local path of ``pretrained_file_name``; an ``MXNetError`` naming the file and
        the folders looked in when it is not on this machine (ember never downloads)."""
        return _pretrained.find(cls.__name__, cls.__name__.lower(), pretrained_file_name,
                                embedding_root, cls._get_download_file_name(pretrained_file_name),
                                cls.pretrained_file_name_sha1.get(pretrained_file_name),
                                cls._source)

    def _load_embedding(self, pretrained_file_path, elem_delim, init_unknown_vec,
                        encoding="utf8"):
        """Index the tokens of a pretrained file after the unknown and reserved tokens and
        set ``idx_to_vec`` (see the module docstring for the rules)."""
        path = os.path.expanduser(pretrained_file_path)
        if not os.path.isfile(path):
            raise TextValueError("`pretrained_file_path` must be a valid path to the "
                                 f"pre-trained token embedding file: {path} is not a file.")
        logging.info("Loading pre-trained token embedding vectors from %s", path)
        special = dict(self._token_to_idx)          # unknown and reserved tokens
        special_vals, tokens, rows, vec_len = {}, [], [], None
        with open(path, encoding=encoding) as f:
            for line_num, line in enumerate(f, 1):
                elems = line.rstrip().split(elem_delim)
                if len(elems) < 2:
                    raise TextArgumentError(
                        f"At line {line_num} of the pre-trained text embedding file: the data "
                        f"format of the pre-trained token embedding file {path} is unexpected "
                        f"(a token and its vector separated by {elem_delim!r} expected).")
                token, vals = elems[0], elems[1:]
                if token in special_vals or token in self._token_to_idx and \
                        token not in special:
                    warnings.warn(f"At line {line_num} of the pre-trained token embedding file: "
                                  f"the embedding vector for token {token} has been loaded and "
                                  "a duplicate embedding for the same token is seen and "
                                  "skipped.", stacklevel=3)
                    continue
                if len(vals) == 1:
                    warnings.warn(f"At line {line_num} of the pre-trained text embedding file: "
                                  f"token {token} with 1-dimensional vector {vals} is likely a "
                                  "header and is skipped.", stacklevel=3)
                    continue
                if vec_len is None:
                    vec_len = len(vals)
                elif len(vals) != vec_len:
                    raise TextArgumentError(
                        f"At line {line_num} of the pre-trained token embedding file {path}: "
                        f"the dimension of token {token} is {len(vals)} but the dimension of "
                        f"previous tokens is {vec_len}. Dimensions of all the tokens must be "
                        "the same.")
                if token in special:
                    special_vals[token] = vals
                else:
                    self._token_to_idx[token] = len(self._idx_to_token)
                    self._idx_to_token.append(token)
                    tokens.append(token)
                    rows.append(vals)
        if vec_len is None:
            raise TextArgumentError(f"The pre-trained token embedding file {path} holds no "
                                    "embedding vectors.")
        vecs = np.empty((len(special) + len(rows), vec_len), dtype=np.float32)
        try:
            if rows:
                vecs[len(special):] = np.array(rows, dtype=np.float32)
            for token, vals in special_vals.items():
                vecs[special[token]] = np.array(vals, dtype=np.float32)
        except ValueError:
            for token, vals in list(zip(tokens, rows)) + list(special_vals.items()):
                bad = [v for v in vals if not _is_number(v)]
                if bad:
                    raise TextValueError(f"The pre-trained token embedding file {path}: the "
                                         f"vector of token {token} has {bad[0]!r}, not a "
                                         "number.") from None
            raise
        missing = [i for t, i in special.items() if t not in special_vals]
        if missing:
            init = _to_numpy(init_unknown_vec(shape=vec_len)).astype(np.float32)
            if init.size != vec_len:
                raise TextArgumentError(f"init_unknown_vec(shape={vec_len}) gave shape "
                                        f"{init.shape}, not ({vec_len},)")
            vecs[missing] = init.reshape(vec_len)
        self._vec_len = vec_len
        self._idx_to_vec = nd.array(vecs, dtype=np.float32)

    # ---- indexing from a vocabulary --------------------------------------------------------
    def _index_tokens_from_vocabulary(self, vocabulary):
        self._token_to_idx = dict(vocabulary.token_to_idx)
        self._idx_to_token = list(vocabulary.idx_to_token)
        self._unknown_token = vocabulary.unknown_token
        self._reserved_tokens = (None if vocabulary.reserved_tokens is None
                                 else list(vocabulary.reserved_tokens))

    def _set_idx_to_vec_by_embeddings(self, token_embeddings, vocab_len, vocab_idx_to_token):
        """Row i: the concatenated vectors of ``vocab_idx_to_token[i]`` in each embedding
        (row 0: each embedding's unknown vector)."""
        widths = [embed.vec_len for embed in token_embeddings]
        out = np.zeros((vocab_len, sum(widths)), dtype=np.float32)
        start = 0
        for embed, width in zip(token_embeddings, widths):
            table = embed.idx_to_vec.asnumpy()
            out[0, start:start + width] = table[C.UNKNOWN_IDX]
            out[1:, start:start + width] = table[embed._indices(vocab_idx_to_token[1:])]
            start += width
        self._vec_len = sum(widths)
        self._idx_to_vec = nd.array(out, dtype=np.float32)

    def _build_embedding_for_vocabulary(self, vocabulary):
        if vocabulary is None:
            return
        if not isinstance(vocabulary, Vocabulary):
            raise TextArgumentError("The argument `vocabulary` must be an instance of "
                                    "mxnet.contrib.text.vocab.Vocabulary, got "
                                    f"{type(vocabulary).__name__}.")
        self._set_idx_to_vec_by_embeddings([self], len(vocabulary), vocabulary.idx_to_token)
        self._index_tokens_from_vocabulary(vocabulary)

    # ---- the API -----------------------------------------------------------------------------
    @property
    def vec_len(self):
        """int: the length of every token's vector."""
        return self._vec_len

    @property
    def idx_to_vec(self):
        """NDArray ``(len(self), vec_len)``: row i is the vector of token i."""
        return self._idx_to_vec

    def _indices(self, tokens, lower_case_backup=False) -> list:
        get = self._token_to_idx.get
        if not lower_case_backup:
            return [get(t, C.UNKNOWN_IDX) for t in tokens]
        return [get(t) if t in self._token_to_idx
                else get(t.lower() if isinstance(t, str) else t, C.UNKNOWN_IDX) for t in tokens]

    def get_vecs_by_tokens(self, tokens, lower_case_backup=False):
        """The vector of a token (1-D NDArray ``(vec_len,)``) or of a list of tokens (2-D
        ``(len(tokens), vec_len)``); tokens that are not indexed get the unknown token's.
        With ``lower_case_backup`` a token not found is looked up again in lower case."""
        single = not isinstance(tokens, list)
        indices = self._indices([tokens] if single else tokens, lower_case_backup)
        vecs = nd.Embedding(nd.array(indices), self._idx_to_vec, self._idx_to_vec.shape[0],
                            self._idx_to_vec.shape[1])
        return vecs[0] if single else vecs

    def update_token_vectors(self, tokens, new_vectors):
        """Set the vectors of indexed ``tokens`` (a token or a list) to ``new_vectors``
        (``(len(tokens), vec_len)``; 1-D allowed for one token), in ``idx_to_vec`` itself.
        The unknown token's vector changes only when it is named."""
        if self._idx_to_vec is None:
            raise TextArgumentError("The property `idx_to_vec` has not been properly set.")
        single = not isinstance(tokens, list) or len(tokens) == 1
        if not isinstance(new_vectors, (NDArray, np.ndarray)) or \
                new_vectors.ndim not in ((1, 2) if single else (2,)):
            raise TextArgumentError(
                "`new_vectors` must be a 1-D or 2-D NDArray if `tokens` is a singleton."
                if single else
                "`new_vectors` must be a 2-D NDArray if `tokens` is a list of multiple strings.")
        tokens = tokens if isinstance(tokens, list) else [tokens]
        values = _to_numpy(new_vectors)
        if values.ndim == 1:
            values = values[None, :]
        if values.shape != (len(tokens), self._vec_len):
            raise TextArgumentError(
                f"The length of new_vectors must be equal to the number of tokens and the width "
                f"of new_vectors must be equal to the dimension of embeddings of the glossary: "
                f"got shape {tuple(new_vectors.shape)} for {len(tokens)} token(s) of "
                f"dimension {self._vec_len}.")
        unknown = [t for t in tokens if t not in self._token_to_idx]
        if unknown:
            raise TextValueError(
                f"Token {unknown[0]} is unknown. To update the embedding vector for an unknown "
                f"token, please specify it explicitly as the `unknown_token` "
                f"{self._idx_to_token[C.UNKNOWN_IDX]} in `tokens`. This is to avoid unintended "
                "updates.")
        self._idx_to_vec[nd.array([self._token_to_idx[t] for t in tokens])] = \
            nd.array(values, dtype=np.float32)


TokenEmbedding = _TokenEmbedding


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
