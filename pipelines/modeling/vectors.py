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

from pipelines.data.corpus import drop_leaks, load_corpus

# word2vec's settings: a window of 5 either side, pairs seen at least twice, 5 passes
# (gensim's defaults, skip-gram rather than CBOW: better vectors for rare characters).
WINDOW = 5
MIN_COUNT = 2
EPOCHS = 5
INIT_STD = 0.1  # the BiLSTM's random tables' spread (bilstm._init_weights): vectors are scaled to it


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
    ``sources``; rows nothing was learnt for keep their random start. Returns counts."""
    import torch

    start = time.monotonic()
    ids, dropped = corpus_ids(sources, encoder, held_out)
    config = model.config
    dim = config.embedding_size
    chars = word2vec([[str(i) for i in row] for row in ids], dim, seed)
    stats = {"sentences": len(ids), "dropped_held_out": dropped, "characters": sum(map(len, ids))}
    with torch.no_grad():
        table = model.chars.weight
        rows = {int(token): vector for token, vector in chars.items() if int(token) != config.pad_token_id}
        _set_rows(table, rows)
        stats["char_rows"] = len(rows)
        if model.bigrams is not None:
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
