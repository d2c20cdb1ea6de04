"""Character and bigram vectors from unlabelled text, to start a fresh BiLSTM from.

The classic Chinese NER taggers that beat ours (char BiLSTM-CRF, Lattice-LSTM,
SoftLexicon) all start from character and bigram embeddings trained on unlabelled
text; ours started from random tables. ``model.vectors`` names text sources
(``data.corpus``: People's Daily 1998, the MSRA training text, files); word2vec
(gensim, skip-gram) learns a vector for every character and every adjacent pair
in them, and those vectors become the rows of the BiLSTM's character table and
of its hashed bigram table (``modeling.bilstm``).

The text is read through the model's own ``CharEncoder``, so a vector belongs to a
token id (full-width forms and their ASCII twins share one) and a bigram vector
to the bucket the model hashes that pair of ids into: the tables get exactly the
rows the model looks up. Sentences that share text with dev or test are dropped
first (``corpus.drop_leaks``), as for the lexicon and pretraining.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from pipelines import resources
from pipelines.data.corpus import drop_leaks, load_corpus
from pipelines.data.loaders import DataError

# word2vec's settings: a window of 5 either side, pairs seen at least twice, 5 passes
# (gensim's defaults, skip-gram rather than CBOW: better vectors for rare characters).
WINDOW = 5
MIN_COUNT = 2
EPOCHS = 5
INIT_STD = 0.1  # the BiLSTM's random tables' spread (bilstm._init_weights): vectors are scaled to it
LAC = "lac"  # jieba's LAC-small character table, a ``model.vectors`` source beside text sources
LAC_DIR = ("lac_small",)


def read_paddle_tensor(path: str) -> np.ndarray:
    """A tensor PaddlePaddle 1.x saved on its own (``save_persistables``): uint32 version,
    uint64 LoD level (0 here), uint32 tensor version, int32 size of the TensorDesc
    protobuf (field 1: data type, 5 = float32; field 2: each dimension, varints), then
    the float32 data. Read without paddle, which jieba's LAC needs and we do not install."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        if int.from_bytes(raw[4:12], "little"):
            raise ValueError("a LoD tensor (only plain tensors are read)")
        size = int.from_bytes(raw[16:20], "little")
        desc, dims, dtype, i = raw[20 : 20 + size], [], None, 0
        while i < len(desc):
            field, i = desc[i] >> 3, i + 1
            value, shift = 0, 0
            while True:
                byte, i = desc[i], i + 1
                value |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            if field == 1:
                dtype = value
            elif field == 2:
                dims.append(value)
        if dtype != 5:
            raise ValueError(f"data type {dtype}, not float32 (5)")
        data = np.frombuffer(raw, dtype="<f4", offset=20 + size)
        if not dims or data.size != int(np.prod(dims)):
            raise ValueError(f"{data.size} values for dimensions {dims}")
    except (IndexError, ValueError) as err:
        raise DataError(f"{path}: not a PaddlePaddle float32 tensor: {err}") from None
    return data.reshape(dims)


def lac_char_vectors(encoder) -> dict[int, np.ndarray]:
    """LAC-small's character vectors, keyed by the model's token ids (characters the
    vocabulary folds into one id, full-width and ASCII forms say, share their mean)."""
    try:
        table = read_paddle_tensor(resources.package_file("jieba", "jieba", *LAC_DIR, "model_baseline", "word_emb"))
        chars_file = resources.package_file("jieba", "jieba", *LAC_DIR, "word.dic")
    except resources.MissingResource as err:
        raise DataError(f"model.vectors {LAC!r}: {err}") from None
    chars: dict[str, int] = {}
    with open(chars_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            row, _, char = line.rstrip("\n").partition("\t")
            if not row.isdigit() or int(row) >= len(table):
                raise DataError(f"{chars_file}:{lineno}: expected 'ROW<TAB>CHARACTER' with a row under {len(table)}, got {line.strip()!r}")
            if len(char) == 1 and char.strip():  # not OOV, OOV_NUM, ...: those are LAC's own classes
                chars[char] = int(row)
    encoder.prime([list(chars)])
    by_token: dict[int, list[np.ndarray]] = {}
    for char, row in chars.items():
        token = encoder.char_id(char)
        if token not in (encoder.unk_id, encoder.pad_id):
            by_token.setdefault(token, []).append(table[row])
    return {token: np.mean(rows, axis=0) for token, rows in by_token.items()}


def corpus_ids(sources: Sequence[str], encoder, held_out: Sequence[str]) -> tuple[list[list[int]], int]:
    """The sources' sentences as token ids (no lexicon codes), minus those sharing text
    with ``held_out``; and how many were dropped."""
    sentences, dropped = drop_leaks(load_corpus(sources), held_out)
    texts = ["".join(words) for words in sentences]
    encoder.prime(texts)
    return [[encoder.char_id(c) for c in text] for text in texts if text], dropped


def word2vec(sentences: list[list[str]], dim: int, seed: int, workers: int = 2) -> dict[str, np.ndarray]:
    from gensim.models import Word2Vec

    model = Word2Vec(sentences, vector_size=dim, window=WINDOW, min_count=MIN_COUNT, sg=1, epochs=EPOCHS,
                     seed=seed, workers=workers)
    return {word: model.wv[word] for word in model.wv.index_to_key}


def bigram_bucket(first: int, second: int, vocab_size: int, buckets: int) -> int:
    """The bigram table's row for a pair of ids, as ``BiLstmForTokenClassification.embed`` hashes it."""
    return (first * vocab_size + second) % buckets


def initialise_bilstm(model, encoder, sources: Sequence[str], held_out: Sequence[str], seed: int) -> dict:
    """Set a fresh BiLSTM's character (and bigram) rows to word2vec vectors trained on
    ``sources`` (LAC's for the characters where ``lac`` is one); rows nothing was
    learnt for keep their random start. Returns counts."""
    import torch

    start = time.monotonic()
    config = model.config
    dim = config.embedding_size
    texts = [source for source in sources if source != LAC]
    ids, dropped = corpus_ids(texts, encoder, held_out) if texts else ([], 0)
    stats = {"sentences": len(ids), "dropped_held_out": dropped, "characters": sum(map(len, ids))}
    if LAC in sources:
        rows = lac_char_vectors(encoder)
        width = len(next(iter(rows.values())))
        if width != dim:
            raise DataError(f"model.vectors {LAC!r}: its character vectors are {width} wide, this model's {dim}")
        stats["char_source"] = LAC
    else:
        chars = word2vec([[str(i) for i in row] for row in ids], dim, seed)
        rows = {int(token): vector for token, vector in chars.items()}
    rows.pop(config.pad_token_id, None)
    with torch.no_grad():
        _set_rows(model.chars.weight, rows)
        stats["char_rows"] = len(rows)
        if model.bigrams is not None and ids:
            pairs = word2vec([[f"{a}_{b}" for a, b in zip(row, row[1:])] for row in ids], dim, seed)
            buckets: dict[int, list[np.ndarray]] = {}
            for pair, vector in pairs.items():
                a, b = map(int, pair.split("_"))
                buckets.setdefault(bigram_bucket(a, b, config.vocab_size, config.bigram_buckets), []).append(vector)
            # pairs that hash to one row share it: their mean
            _set_rows(model.bigrams.weight, {row: np.mean(vectors, axis=0) for row, vectors in buckets.items()})
            stats.update(bigrams=len(pairs), bigram_rows=len(buckets))
    stats["seconds"] = round(time.monotonic() - start, 1)
    return stats


def _set_rows(table, rows: dict[int, np.ndarray]) -> None:
    """Write ``rows`` into an embedding table, scaled to the random rows' spread (the
    optimiser's learning rate and the LSTM's input range were chosen for it)."""
    import torch

    if not rows:
        return
    order = sorted(rows)
    index = torch.tensor(order)
    vectors = torch.from_numpy(np.stack([rows[i] for i in order])).to(table.dtype)
    table[index] = vectors * (INIT_STD / vectors.std().clamp_min(1e-12))
