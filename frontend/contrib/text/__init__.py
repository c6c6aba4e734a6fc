"""``mx.contrib.text``: text indexing and token embeddings as MXNet 1.9.1 has them
(``utils.count_tokens_from_str``, ``vocab.Vocabulary``, ``embedding``: ``GloVe``,
``FastText``, ``CustomEmbedding``, ``CompositeEmbedding``); pretrained files are read from
this machine only, never downloaded."""
from . import embedding, utils, vocab  # noqa: F401
