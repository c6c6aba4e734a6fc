"""``mx.contrib.text.embedding``: token embeddings as MXNet 1.9.1 has them.

``GloVe`` and ``FastText`` read the pretrained files MXNet knows by name
(:func:`get_pretrained_file_names`) from this machine only: ember never downloads. They are
looked for where MXNet keeps them, ``<embedding_root>/glove/`` and
``<embedding_root>/fasttext/`` (``embedding_root`` defaults to ``$MXNET_HOME/embeddings``,
else ``~/.mxnet/embeddings``), then in ``embedding_root`` itself, ``$EMBER_DATA/embeddings/
<name>/`` and ``~/.mxnet/embeddings/<name>/``; the zip archive MXNet downloads (glove.6B.zip,
wiki.en.zip, ...) is extracted when only it is there. A file found nowhere raises an
``MXNetError`` naming it and every folder looked in.

``CustomEmbedding`` reads any file of lines ``token<delim>v1<delim>v2...``;
``CompositeEmbedding`` gives a vocabulary's tokens the concatenated vectors of several
embeddings. Each of them, given ``vocabulary=``, indexes that vocabulary's tokens (in its
order) instead of the file's. :func:`register` and :func:`create` make embeddings by name.

    >>> glove = mx.contrib.text.embedding.create('glove', pretrained_file_name='glove.6B.50d.txt')
    >>> glove.get_vecs_by_tokens(['hello', 'world']).shape
    (2, 50)
"""
from __future__ import annotations

from ember import ndarray as nd

from . import _constants as C
from ._base import (  # noqa: F401  (the base's names are this module's, as in MXNet)
    TokenEmbedding,
    _TokenEmbedding,
    create,
    get_pretrained_file_names,
    register,
)
from .utils import TextArgumentError
from .vocab import Vocabulary

__all__ = ["register", "create", "get_pretrained_file_names", "TokenEmbedding", "GloVe",
           "FastText", "CustomEmbedding", "CompositeEmbedding"]


@register
class GloVe(_TokenEmbedding):
    """The GloVe word vectors (Pennington, Socher and Manning, 2014;
    https://nlp.stanford.edu/projects/glove/), read from a local file.

    Parameters
    ----------
    pretrained_file_name : str, default 'glove.840B.300d.txt'
        One of ``get_pretrained_file_names('glove')``.
    embedding_root : str, default ``$MXNET_HOME/embeddings`` (``~/.mxnet/embeddings``)
        The folder whose ``glove/`` subfolder holds the file (or its archive).
    init_unknown_vec : callable, default ``nd.zeros``
        Called with ``shape=vec_len`` for the unknown token's vector (and the reserved
        tokens') when the file has none.
    vocabulary : Vocabulary, optional
        Index this vocabulary's tokens instead of the file's.
    unknown_token, reserved_tokens
        As for :class:`~ember.contrib.text.vocab.Vocabulary`.
    """

    pretrained_file_name_sha1 = dict.fromkeys(C.GLOVE_FILES)
    _source = "https://nlp.stanford.edu/projects/glove/"

    @classmethod
    def _get_download_file_name(cls, pretrained_file_name):
        return C.glove_archive(pretrained_file_name)

    def __init__(self, pretrained_file_name="glove.840B.300d.txt", embedding_root=None,
                 init_unknown_vec=nd.zeros, vocabulary=None, **kwargs):
        GloVe._check_pretrained_file_names(pretrained_file_name)
        super().__init__(**kwargs)
        path = GloVe._get_pretrained_file(embedding_root, pretrained_file_name)
        self._load_embedding(path, " ", init_unknown_vec)
        self._build_embedding_for_vocabulary(vocabulary)


@register
class FastText(_TokenEmbedding):
    """The fastText word vectors (Bojanowski et al., 2016; https://fasttext.cc/), read from a
    local ``.vec`` file (its ``count dim`` header line is skipped).

    Parameters
    ----------
    pretrained_file_name : str, default 'wiki.simple.vec'
        One of ``get_pretrained_file_names('fasttext')``.
    embedding_root : str, default ``$MXNET_HOME/embeddings`` (``~/.mxnet/embeddings``)
        The folder whose ``fasttext/`` subfolder holds the file (or its archive).
    init_unknown_vec, vocabulary, unknown_token, reserved_tokens
        As for :class:`GloVe`.
    """

    pretrained_file_name_sha1 = dict.fromkeys(C.FAST_TEXT_FILES)
    _source = "https://fasttext.cc/docs/en/pretrained-vectors.html"

    @classmethod
    def _get_download_file_name(cls, pretrained_file_name):
        return C.fast_text_archive(pretrained_file_name)

    def __init__(self, pretrained_file_name="wiki.simple.vec", embedding_root=None,
                 init_unknown_vec=nd.zeros, vocabulary=None, **kwargs):
        FastText._check_pretrained_file_names(pretrained_file_name)
        super().__init__(**kwargs)
        path = FastText._get_pretrained_file(embedding_root, pretrained_file_name)
        self._load_embedding(path, " ", init_unknown_vec)
        self._build_embedding_for_vocabulary(vocabulary)


class CustomEmbedding(_TokenEmbedding):
    """Token vectors from a user's file of lines ``token<elem_delim>v1<elem_delim>v2...``.

    Parameters
    ----------
    pretrained_file_path : str
        The file.
    elem_delim : str, default ' '
        What separates the token and the numbers on a line.
    encoding : str, default 'utf8'
        The file's text encoding.
    init_unknown_vec, vocabulary, unknown_token, reserved_tokens
        As for :class:`GloVe`.
    """

    def __init__(self, pretrained_file_path, elem_delim=" ", encoding="utf8",
                 init_unknown_vec=nd.zeros, vocabulary=None, **kwargs):
        super().__init__(**kwargs)
        self._load_embedding(pretrained_file_path, elem_delim, init_unknown_vec, encoding)
        self._build_embedding_for_vocabulary(vocabulary)


class CompositeEmbedding(_TokenEmbedding):
    """The tokens of ``vocabulary``, in its order, each with the concatenation of its vectors
    in ``token_embeddings`` (one embedding or a list); a token an embedding lacks gets that
    embedding's unknown vector, and row 0 is the embeddings' unknown vectors.
    """

    def __init__(self, vocabulary, token_embeddings):
        if not isinstance(vocabulary, Vocabulary):
            raise TextArgumentError("The argument `vocabulary` must be an instance of "
                                    "mxnet.contrib.text.vocab.Vocabulary, got "
                                    f"{type(vocabulary).__name__}.")
        if not isinstance(token_embeddings, list):
            token_embeddings = [token_embeddings]
        for embed in token_embeddings:
            if not isinstance(embed, _TokenEmbedding) or embed.idx_to_vec is None:
                raise TextArgumentError(
                    "The argument `token_embeddings` must be an instance or a list of "
                    "instances of `mxnet.contrib.text.embedding.TokenEmbedding` with vectors "
                    f"loaded, got {type(embed).__name__}.")
        super().__init__()
        self._index_tokens_from_vocabulary(vocabulary)
        self._set_idx_to_vec_by_embeddings(token_embeddings, len(self), self.idx_to_token)
