"""mx.contrib.text: count_tokens_from_str, Vocabulary's order, token embeddings read from small
files in GloVe/fastText formats (never downloaded), composite embeddings, and the same results
as real MXNet 1.9.1 where an interpreter for it is configured."""
import collections
import json
import os
import socket
import subprocess
import zipfile

import numpy as np
import pytest

import ember as mx
from ember.base import MXNetError
from ember.contrib import text

RNG = np.random.default_rng(7)
nd = mx.nd


@pytest.fixture(autouse=True)
def _no_network_no_home(monkeypatch, tmp_path):
    """Every test runs with an empty home and no sockets: a download attempt fails loudly."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("MXNET_HOME", "EMBER_DATA"):
        monkeypatch.delenv(var, raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError("contrib.text tried to open a network connection")
    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _write(path, rows, delim=" ", header=None):
    """An embedding file: ``rows`` maps token -> vector (written in insertion order)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf8") as f:
        if header:
            f.write(header + "\n")
        for token, vec in rows:
            f.write(delim.join([token] + [repr(float(v)) for v in vec]) + "\n")
    return str(path)


def _oracle_order(counter, most_freq_count, min_freq, unknown, reserved):
    """Vocabulary's rule written directly: specials, then (-count, token) order."""
    special = [unknown] + list(reserved or [])
    ranked = sorted((t for t, c in counter.items() if c >= min_freq and t not in special),
                    key=lambda t: (-counter[t], t))
    return special + ranked[:most_freq_count]


# ---- utils ----------------------------------------------------------------------------------
def test_count_tokens_from_str_regex_delims_lower_and_update():
    src = "*Life*is*great*!*\n*life*is*good*.*\n"
    got = text.utils.count_tokens_from_str(src, "\\*", "\n", to_lower=True)
    assert got == collections.Counter({"life": 2, "is": 2, "great": 1, "!": 1, "good": 1,
                                       ".": 1})
    mine = collections.Counter({"life": 3, "new": 1})
    out = text.utils.count_tokens_from_str(src, "\\*", "\n", counter_to_update=mine)
    assert out is mine and mine["life"] == 4 and mine["Life"] == 1 and mine["new"] == 1
    # the delimiters are regular expressions, as in MXNet
    assert text.utils.count_tokens_from_str("a1b22c\nd", "[0-9]+") == \
        collections.Counter("abcd")
    with pytest.raises(MXNetError, match="regular expression"):
        text.utils.count_tokens_from_str("a(b", "(")


# ---- vocabulary -----------------------------------------------------------------------------
def test_vocabulary_order_matches_the_rule_on_random_counters():
    words = [f"w{i}" for i in range(40)] + ["<unk>", "<pad>", "Z", "a"]
    trials = 0
    for _ in range(300):
        counter = collections.Counter({w: int(c) for w, c in
                                       zip(words, RNG.integers(0, 6, len(words))) if c})
        reserved = list(RNG.choice(["<pad>", "<bos>", "a", "w3"], RNG.integers(0, 3),
                                   replace=False)) or None
        most = None if RNG.random() < 0.3 else int(RNG.integers(0, 30))
        min_freq = int(RNG.integers(1, 5))
        v = text.vocab.Vocabulary(counter, most_freq_count=most, min_freq=min_freq,
                                  reserved_tokens=reserved)
        want = _oracle_order(counter, most, min_freq, "<unk>", reserved)
        assert v.idx_to_token == want
        assert v.token_to_idx == {t: i for i, t in enumerate(want)}
        assert len(v) == len(want) and v.reserved_tokens == reserved
        trials += 1
    assert trials == 300


def test_vocabulary_lookups_tuples_and_errors():
    counter = collections.Counter(["a", "b", "b", "c", "c", "c", "some_word$"])
    v = text.vocab.Vocabulary(counter, unknown_token="<unknown>", reserved_tokens=["b"])
    assert v.idx_to_token == ["<unknown>", "b", "c", "a", "some_word$"]
    assert v.to_indices("c") == 2 and v.to_indices(["c", "zz", "a"]) == [2, 0, 3]
    assert v.to_tokens(np.int64(3)) == "a" and v.to_tokens([0, 1, -1]) == \
        ["<unknown>", "b", "some_word$"]
    assert "c" in v and "zz" not in v
    for bad in (5, -6, 1.0, "1"):
        with pytest.raises(ValueError, match="invalid"):
            v.to_tokens(bad)
    tv = text.vocab.Vocabulary(collections.Counter([("a", 1), ("b", 2), ("b", 2)]),
                               unknown_token=("<u>",))
    assert tv.idx_to_token == [("<u>",), ("b", 2), ("a", 1)]
    assert tv.to_indices(("b", 2)) == 1 and tv.to_indices([("a", 1)]) == [2]
    for kwargs in ({"min_freq": 0}, {"reserved_tokens": ["b", "b"]},
                   {"reserved_tokens": ["<unk>"]}, {"most_freq_count": -1}):
        with pytest.raises(AssertionError) as err:
            text.vocab.Vocabulary(counter, **kwargs)
        assert isinstance(err.value, MXNetError)
    with pytest.raises(MXNetError, match="collections.Counter"):
        text.vocab.Vocabulary(["a", "b"])


def test_wikitext_uses_this_vocabulary():
    from ember.gluon.contrib.data import text as wiki
    assert wiki.Vocabulary is text.vocab.Vocabulary
    assert wiki.count_tokens_from_str is text.utils.count_tokens_from_str


# ---- embeddings from files ------------------------------------------------------------------
def test_custom_embedding_vectors_unknown_and_lower_case(tmp_path):
    table = RNG.standard_normal((4, 6)).astype(np.float32)
    tokens = ["the", "cat", "Sat", "on"]
    path = _write(tmp_path / "e.txt", zip(tokens, table), delim="\t")
    e = text.embedding.CustomEmbedding(path, "\t", init_unknown_vec=nd.ones)
    assert e.idx_to_token == ["<unk>"] + tokens and e.vec_len == 6 and len(e) == 5
    np.testing.assert_allclose(e.idx_to_vec.asnumpy(), np.vstack([np.ones(6), table]),
                               rtol=1e-6)
    assert e.idx_to_vec.dtype == np.float32
    got = e.get_vecs_by_tokens(["cat", "CAT", "sat", "nope"]).asnumpy()
    np.testing.assert_allclose(got, np.vstack([table[1], np.ones(6), np.ones(6), np.ones(6)]),
                               rtol=1e-6)
    got = e.get_vecs_by_tokens(["CAT", "Sat", "sat"], lower_case_backup=True).asnumpy()
    np.testing.assert_allclose(got, np.vstack([table[1], table[2], np.ones(6)]), rtol=1e-6)
    assert e.get_vecs_by_tokens("on").shape == (6,)
    # the unknown token's vector comes from the file when the file has it
    path2 = _write(tmp_path / "e2.txt", [("a", [1, 2]), ("<oov>", [7, 8]), ("b", [3, 4])])
    e2 = text.embedding.CustomEmbedding(path2, unknown_token="<oov>")
    assert e2.idx_to_token == ["<oov>", "a", "b"]
    np.testing.assert_array_equal(e2.get_vecs_by_tokens(["zz", "b"]).asnumpy(),
                                  [[7, 8], [3, 4]])


def test_reserved_tokens_get_their_own_rows(tmp_path):
    # MXNet 1.9.1 gave reserved tokens no rows, so every token's vector was one row off
    path = _write(tmp_path / "e.txt", [("a", [1, 2]), ("b", [3, 4]), ("<s>", [9, 9])])
    e = text.embedding.CustomEmbedding(path, reserved_tokens=["<pad>", "<s>"],
                                       init_unknown_vec=lambda shape: nd.full(shape, -1.0))
    assert e.idx_to_token == ["<unk>", "<pad>", "<s>", "a", "b"]
    np.testing.assert_array_equal(e.idx_to_vec.asnumpy(),
                                  [[-1, -1], [-1, -1], [9, 9], [1, 2], [3, 4]])
    np.testing.assert_array_equal(e.get_vecs_by_tokens(["a", "b", "<pad>"]).asnumpy(),
                                  [[1, 2], [3, 4], [-1, -1]])


def test_file_format_rules_and_errors(tmp_path):
    path = _write(tmp_path / "e.txt", [("a", [1, 2, 3]), ("b", [4, 5, 6]), ("a", [0, 0, 0])],
                  header="2 3")
    with pytest.warns(UserWarning) as rec:
        e = text.embedding.CustomEmbedding(path)
    msgs = " ".join(str(w.message) for w in rec)
    assert "header" in msgs and "duplicate" in msgs
    np.testing.assert_array_equal(e.idx_to_vec.asnumpy(), [[0, 0, 0], [1, 2, 3], [4, 5, 6]])
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1 2 3\nb 4 5\n")
    with pytest.raises(AssertionError, match=r"line 2.*dimension of token b is 2"):
        text.embedding.CustomEmbedding(str(bad))
    bad.write_text("a 1 2 3\nc\n")
    with pytest.raises(MXNetError, match=r"line 2 .*unexpected"):
        text.embedding.CustomEmbedding(str(bad))
    bad.write_text("a 1 2 3\nc 1 x 3\n")
    with pytest.raises(ValueError, match="token c has 'x'"):
        text.embedding.CustomEmbedding(str(bad))
    with pytest.raises(ValueError, match="valid path"):
        text.embedding.CustomEmbedding(str(tmp_path / "absent.txt"))


def test_update_token_vectors(tmp_path):
    path = _write(tmp_path / "e.txt", [("a", [1, 2]), ("b", [3, 4])])
    e = text.embedding.CustomEmbedding(path)
    table = e.idx_to_vec
    e.update_token_vectors(["b", "a"], nd.array([[5, 6], [7, 8]]))
    e.update_token_vectors("<unk>", nd.array([9, 9]))
    assert e.idx_to_vec is table          # in place, as MXNet
    np.testing.assert_array_equal(table.asnumpy(), [[9, 9], [7, 8], [5, 6]])
    with pytest.raises(ValueError, match="Token zz is unknown"):
        e.update_token_vectors("zz", nd.array([0, 0]))
    for tokens, vecs in (("a", nd.array([[0, 0], [0, 0]])), ("a", nd.array([0])),
                         (["a", "b"], nd.array([0, 0])), ("a", [0, 0])):
        with pytest.raises(AssertionError):
            e.update_token_vectors(tokens, vecs)


def test_composite_concatenates_in_vocabulary_order(tmp_path):
    t1 = RNG.standard_normal((3, 4)).astype(np.float32)
    t2 = RNG.standard_normal((3, 2)).astype(np.float32)
    e1 = text.embedding.CustomEmbedding(_write(tmp_path / "1.txt", zip("abc", t1)),
                                        init_unknown_vec=nd.ones)
    e2 = text.embedding.CustomEmbedding(_write(tmp_path / "2.txt", zip("cdb", t2)))
    counter = collections.Counter("dddccbbbbx")
    v = text.vocab.Vocabulary(counter, reserved_tokens=["<pad>"])
    assert v.idx_to_token == ["<unk>", "<pad>", "b", "d", "c", "x"]
    ce = text.embedding.CompositeEmbedding(v, [e1, e2])
    assert ce.idx_to_token == v.idx_to_token and ce.vec_len == 6
    assert ce.reserved_tokens == ["<pad>"]
    r1 = {"b": t1[1], "c": t1[2]}
    r2 = {"c": t2[0], "d": t2[1], "b": t2[2]}
    want = np.array([np.concatenate([r1.get(t, np.ones(4)), r2.get(t, np.zeros(2))])
                     for t in v.idx_to_token])
    np.testing.assert_allclose(ce.idx_to_vec.asnumpy(), want, rtol=1e-6)
    np.testing.assert_allclose(ce.get_vecs_by_tokens("zzz").asnumpy(), want[0], rtol=1e-6)
    # one embedding with vocabulary= gives the same first block
    e3 = text.embedding.CustomEmbedding(str(tmp_path / "1.txt"), init_unknown_vec=nd.ones,
                                        vocabulary=v)
    assert e3.idx_to_token == v.idx_to_token
    np.testing.assert_allclose(e3.idx_to_vec.asnumpy(), want[:, :4], rtol=1e-6)
    with pytest.raises(AssertionError):
        text.embedding.CompositeEmbedding(v, [e1, "glove"])


# ---- pretrained files: local only -----------------------------------------------------------
def test_glove_and_fasttext_read_local_files(tmp_path, monkeypatch):
    table = RNG.standard_normal((3, 50)).astype(np.float32)
    root = tmp_path / "emb"
    _write(root / "glove" / "glove.6B.50d.txt", zip(["the", ",", "."], table))
    g = text.embedding.create("GloVe", pretrained_file_name="glove.6B.50d.txt",
                              embedding_root=str(root))
    assert isinstance(g, text.embedding.GloVe) and g.idx_to_token == ["<unk>", "the", ",", "."]
    np.testing.assert_allclose(g.idx_to_vec.asnumpy()[1:], table, rtol=1e-6)
    # fastText: the count/dim header line is skipped; MXNET_HOME is the default root
    home = tmp_path / "mxhome"
    monkeypatch.setenv("MXNET_HOME", str(home))
    _write(home / "embeddings" / "fasttext" / "wiki.simple.vec", zip(["x", "y"], table[:2]),
           header="2 50")
    with pytest.warns(UserWarning, match="header"):
        f = text.embedding.FastText()
    np.testing.assert_allclose(f.get_vecs_by_tokens(["y", "x"]).asnumpy(), table[1::-1],
                               rtol=1e-6)
    v = text.vocab.Vocabulary(collections.Counter(["y", "q", "q"]))
    with pytest.warns(UserWarning):
        fv = text.embedding.create("fasttext", vocabulary=v)
    assert fv.idx_to_token == ["<unk>", "q", "y"]
    np.testing.assert_allclose(fv.idx_to_vec.asnumpy()[2], table[1], rtol=1e-6)


def test_gluon_book_use_embedding_layer_and_nearest_tokens(tmp_path):
    """The Gluon book's pattern: a vocabulary from a corpus, GloVe vectors for it set into an
    nn.Embedding, and nearest tokens by cosine similarity (checked against NumPy)."""
    words = ["king", "queen", "man", "woman", "apple", "pear"]
    table = RNG.standard_normal((6, 50)).astype(np.float32)
    _write(tmp_path / "glove" / "glove.6B.50d.txt", zip(words, table))
    counter = text.utils.count_tokens_from_str("man woman man king apple fig fig fig\n")
    vocab = text.vocab.Vocabulary(counter, min_freq=1, reserved_tokens=["<pad>"])
    glove = text.embedding.create("glove", pretrained_file_name="glove.6B.50d.txt",
                                  embedding_root=str(tmp_path), vocabulary=vocab)
    layer = mx.gluon.nn.Embedding(len(glove), glove.vec_len)
    layer.initialize()
    layer.weight.set_data(glove.idx_to_vec)
    ids = vocab.to_indices(["king", "fig", "<pad>", "queen"])
    want = np.array([table[0], np.zeros(50), np.zeros(50), np.zeros(50)])
    np.testing.assert_allclose(layer(nd.array(ids)).asnumpy(), want, rtol=1e-6)
    full = text.embedding.GloVe("glove.6B.50d.txt", embedding_root=str(tmp_path))
    w, x = full.idx_to_vec, full.get_vecs_by_tokens("man")
    cos = nd.dot(w, x) / (nd.sqrt(nd.sum(w * w, axis=1) + 1e-9) * nd.sqrt(nd.sum(x * x)))
    topk = nd.topk(cos, k=3, ret_typ="indices").asnumpy().astype("int32")
    wn = w.asnumpy()
    ref = wn @ table[2] / (np.sqrt((wn * wn).sum(1) + 1e-9) * np.linalg.norm(table[2]))
    assert [full.idx_to_token[i] for i in topk] == \
        [full.idx_to_token[i] for i in np.argsort(-ref, kind="stable")[:3]]
    assert full.idx_to_token[topk[0]] == "man"


def test_pretrained_file_from_the_archive_mxnet_downloads(tmp_path):
    root = tmp_path / "emb"
    (root / "glove").mkdir(parents=True)
    with zipfile.ZipFile(root / "glove" / "glove.twitter.27B.zip", "w") as zf:
        zf.writestr("glove.twitter.27B.25d.txt", "hi " + " ".join(["0.5"] * 25) + "\n")
    g = text.embedding.GloVe("glove.twitter.27B.25d.txt", embedding_root=str(root))
    np.testing.assert_array_equal(g.get_vecs_by_tokens("hi").asnumpy(), [0.5] * 25)
    assert (root / "glove" / "glove.twitter.27B.25d.txt").is_file()


def test_missing_pretrained_file_names_file_and_folders(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(MXNetError) as err:
        text.embedding.GloVe("glove.6B.100d.txt", embedding_root=str(root))
    msg = str(err.value)
    assert "glove.6B.100d.txt" in msg and "glove.6B.zip" in msg and "does not download" in msg
    assert str(root / "glove") in msg
    assert os.path.join(os.environ["HOME"], ".mxnet", "embeddings", "glove") in msg
    with pytest.raises(KeyError, match="Cannot find pretrained file wiki.xx.vec"):
        text.embedding.FastText("wiki.xx.vec")


def test_registry_and_pretrained_names(tmp_path):
    names = text.embedding.get_pretrained_file_names()
    assert len(names["glove"]) == 10 and len(names["fasttext"]) == 327
    assert "wiki.multi.de.vec" in text.embedding.get_pretrained_file_names("fasttext")
    with pytest.raises(KeyError, match="unknown"):
        text.embedding.get_pretrained_file_names("unknown$$")
    with pytest.raises(AssertionError, match="not registered"):
        text.embedding.create("nope")

    @text.embedding.register
    class Local(text.embedding.TokenEmbedding):
        pretrained_file_name_sha1 = {
            "embedding_test.vec": "29b9a6511cf4b5aae293c44a9ec1365b74f2a2f8"}

        def __init__(self, embedding_root="embeddings", **kwargs):
            Local._check_pretrained_file_names("embedding_test.vec")
            super().__init__(**kwargs)
            path = Local._get_pretrained_file(embedding_root, "embedding_test.vec")
            self._load_embedding(path, " ", nd.zeros)

    target = tmp_path / "r" / "local" / "embedding_test.vec"
    target.parent.mkdir(parents=True)
    target.write_text("hello 1 2 3 4 5\nworld 6 7 8 9 10\n")
    e = text.embedding.create("local", embedding_root=str(tmp_path / "r"))
    assert e.token_to_idx == {"<unk>": 0, "hello": 1, "world": 2}
    np.testing.assert_array_equal(e.idx_to_vec.asnumpy(),
                                  [[0] * 5, [1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    assert text.embedding.create(e) is e
    target.write_text("hello 1 2 3 4 5\nworld 6 7 8 9 11\n")      # damaged: other SHA-1
    with pytest.raises(MXNetError, match="SHA-1"):
        text.embedding.create("local", embedding_root=str(tmp_path / "r"))


# ---- against real MXNet 1.9.1 ---------------------------------------------------------------
MXNET_PYTHON = os.environ.get("EMBER_TEST_MXNET_PYTHON", "")
_MX_SCRIPT = """
import collections, json, sys
import mxnet as mx
from mxnet.contrib import text
cases = json.load(open(sys.argv[1]))
out = []
for c in cases:
    v = text.vocab.Vocabulary(collections.Counter(c["counts"]), c["most"], c["min_freq"],
                              reserved_tokens=c["reserved"])
    e = text.embedding.CustomEmbedding(c["file"], init_unknown_vec=mx.nd.ones, vocabulary=v)
    out.append([v.idx_to_token, e.idx_to_vec.asnumpy().tolist(),
                text.utils.count_tokens_from_str(c["text"], " ", "\\n", True)])
json.dump(out, open(sys.argv[2], "w"))
"""


@pytest.mark.skipif(not os.path.exists(MXNET_PYTHON),
                    reason="no MXNet 1.9.1 interpreter (EMBER_TEST_MXNET_PYTHON)")
def test_same_vocabulary_and_vectors_as_real_mxnet(tmp_path):
    cases = []
    for i in range(20):
        words = [f"t{j}" for j in range(15)]
        counts = {w: int(c) for w, c in zip(words, RNG.integers(1, 5, 15))}
        rows = [(w, RNG.standard_normal(3).round(4)) for w in RNG.choice(words, 8, False)]
        cases.append({"counts": counts, "most": None if i % 3 else int(RNG.integers(0, 12)),
                      "min_freq": int(RNG.integers(1, 4)),
                      "reserved": ["<pad>"] if i % 2 else None,
                      "file": _write(tmp_path / f"e{i}.txt", rows),
                      "text": " ".join(RNG.choice(words + ["T1", "T2"], 30)) + "\n t1 \n"})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "run.py").write_text(_MX_SCRIPT)
    proc = subprocess.run([MXNET_PYTHON, str(tmp_path / "run.py"), str(tmp_path / "cases.json"),
                           str(tmp_path / "out.json")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    want = json.loads((tmp_path / "out.json").read_text())
    for c, (tokens, vecs, counts) in zip(cases, want):
        v = text.vocab.Vocabulary(collections.Counter(c["counts"]), c["most"], c["min_freq"],
                                  reserved_tokens=c["reserved"])
        e = text.embedding.CustomEmbedding(c["file"], init_unknown_vec=nd.ones, vocabulary=v)
        assert v.idx_to_token == tokens
        np.testing.assert_allclose(e.idx_to_vec.asnumpy(), vecs, rtol=1e-6)
        assert text.utils.count_tokens_from_str(c["text"], " ", "\n", True) == counts
