"""WikiText-2 and WikiText-103 language-modelling datasets (MXNet 1.9.1's
``gluon.contrib.data.text``), read from local files: ember never downloads.

Each file is split into tokens on spaces and newlines; every non-empty line gets an
``<eos>`` token; the token stream is indexed with a vocabulary (built from the file's token
counts unless ``vocab=`` is given: ``<unk>``, ``<eos>``, then tokens by falling count, ties
alphabetical; ``mx.contrib.text.vocab.Vocabulary``, the one implementation) and cut into
``seq_len`` rows of data and next-token labels.
"""
from __future__ import annotations

import collections
import os
import zipfile

import numpy as np

from ember.base import MXNetError
from ember.contrib.text.utils import count_tokens_from_str
from ember.contrib.text.vocab import Vocabulary
from ember.ndarray import NDArray

from ...data.dataset import _DownloadedDataset
from ...data.vision.datasets import search_dirs

__all__ = ["WikiText2", "WikiText103"]

EOS_TOKEN = "<eos>"
_SEGMENTS = {"train": "wiki.train.tokens", "validation": "wiki.valid.tokens",
             "test": "wiki.test.tokens"}


class _WikiText(_DownloadedDataset):
    _namespace = ""
    _archive = ""

    def __init__(self, root, segment, vocab, seq_len):
        if segment not in _SEGMENTS:
            raise MXNetError(f"{type(self).__name__}: segment must be one of "
                             f"{sorted(_SEGMENTS)}, got {segment!r}")
        self._segment = segment
        self._seq_len = int(seq_len)
        self._vocab = vocab
        self._counter = None
        super().__init__(root, None)

    @property
    def vocabulary(self) -> Vocabulary:
        return self._vocab

    @property
    def frequencies(self) -> collections.Counter:
        return self._counter

    def _read(self) -> str:
        name = _SEGMENTS[self._segment]
        dirs = search_dirs(self._namespace, self._root)
        for d in dirs:
            path = os.path.join(d, name)
            if os.path.isfile(path):
                with open(path, encoding="utf8") as f:
                    return f.read()
            archive = os.path.join(d, self._archive)
            if os.path.isfile(archive):
                with zipfile.ZipFile(archive) as zf:
                    member = [m for m in zf.namelist() if os.path.basename(m) == name]
                    if member:
                        return zf.read(member[0]).decode("utf8")
        where = "\n".join(f"  {d}" for d in dirs)
        raise MXNetError(f"{type(self).__name__}: cannot find {name} (or {self._archive}) in "
                         f"any of:\n{where}\nember does not download data sets: put "
                         f"{', '.join(_SEGMENTS.values())} (from {self._archive}) into one "
                         f"of them or pass root= the directory holding them.")

    def _get_data(self):
        content = self._read()
        self._counter = count_tokens_from_str(content)
        if self._vocab is None:
            self._vocab = Vocabulary(counter=self._counter, reserved_tokens=[EOS_TOKEN])
        tokens = []
        for line in content.splitlines():
            words = line.split()
            if words:
                tokens.extend(words)
                tokens.append(EOS_TOKEN)
        ids = np.asarray(self._vocab.to_indices(tokens), dtype=np.int32)
        data, label = ids[:-1], ids[1:]
        n = len(data) // self._seq_len * self._seq_len   # whole rows only, as MXNet
        self._data = NDArray(data[:n].reshape(-1, self._seq_len))
        self._label = NDArray(label[:n].reshape(-1, self._seq_len))

    def __getitem__(self, idx):
        return self._data[idx], self._label[idx]

    def __len__(self) -> int:
        return len(self._label)


class WikiText2(_WikiText):
    """WikiText-2 (Merity et al., 2016) word-level language modelling: rows of ``seq_len``
    token ids and the next-token labels. ``root``: the directory holding wiki.train.tokens,
    wiki.valid.tokens, wiki.test.tokens (or wikitext-2-v1.zip); also searched:
    ``$EMBER_DATA/wikitext-2``, ``$MXNET_HOME/datasets/wikitext-2``,
    ``~/.mxnet/datasets/wikitext-2``. ``segment``: 'train', 'validation' or 'test'."""

    _namespace = "wikitext-2"
    _archive = "wikitext-2-v1.zip"

    def __init__(self, root: str | None = None, segment: str = "train", vocab=None,
                 seq_len: int = 35):
        super().__init__(root, segment, vocab, seq_len)


class WikiText103(_WikiText):
    """WikiText-103 (Merity et al., 2016), as :class:`WikiText2` with the larger corpus
    (wikitext-103-v1.zip; namespace ``wikitext-103``)."""

    _namespace = "wikitext-103"
    _archive = "wikitext-103-v1.zip"

    def __init__(self, root: str | None = None, segment: str = "train", vocab=None,
                 seq_len: int = 35):
        super().__init__(root, segment, vocab, seq_len)
