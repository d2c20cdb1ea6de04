"""Held-out news: People's Daily text no model of the project has seen, labelled in
MSRA's conventions, to score models on besides the MSRA test split (a gain that only
fits that split shows up as none here).

The last tenth of the embedded People's Daily January-1998 corpus (its lines from
``silver.news_first_line``, the end of the month) is read by no training source. Its
sentences get the PKU POS tags' names as BIO labels (``silver.char_tags``: ``nr`` runs
PER, ``ns`` LOC, ``nt`` ORG); a sentence where the tags cannot say what MSRA would
tag (a place or organisation that opens a longer name, ``中国/ns 人民/n 银行/n``;
consecutive places; abbreviations) is left out rather than guessed, and so is one
that shares text with the MSRA corpus (train or test: then it is not unseen) or
repeats an earlier one. Caveat: jieba's dictionary, a lexicon source, was built from
People's Daily text among others, so its names may include these sentences' names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Sequence

from pipelines.data.corpus import shares_text
from pipelines.data.loaders import _msra_splits, _to_datasets
from pipelines.data.silver import UNSURE, Word, char_tags, peoples_daily_1998_sentences

NEWS_SPLIT = "news"
MIN_CHARS = 6  # shorter pieces are datelines and captions ("（完）", "新华社记者摄"), not sentences


@dataclass
class NewsSplit:
    sentences: list[tuple[list[str], list[str]]]  # characters, BIO tags
    # sentences read, and left out: undecided labels, too short, sharing MSRA text, repeated
    counts: dict[str, int] = field(default_factory=dict)


def news_sentences(numbered: Iterable[tuple[int, list[Word]]], msra_texts: Sequence[str]) -> NewsSplit:
    """The labelled sentences of ``(line, words)`` that qualify as held-out news."""
    counts = {"read": 0, "undecided": 0, "short": 0, "shares_msra_text": 0, "repeated": 0}
    candidates, seen = [], set()
    for _, words in numbered:
        counts["read"] += 1
        chars, tags = char_tags(words)
        text = "".join(chars)
        if UNSURE in tags:
            counts["undecided"] += 1
        elif len(chars) < MIN_CHARS:
            counts["short"] += 1
        elif text in seen:
            counts["repeated"] += 1
        else:
            seen.add(text)
            candidates.append((chars, tags))
    leaks = shares_text(("".join(chars) for chars, _ in candidates), msra_texts)
    counts["shares_msra_text"] = sum(leaks)
    kept = [s for s, leak in zip(candidates, leaks) if not leak]
    counts["kept"] = len(kept)
    return NewsSplit(kept, counts)


@lru_cache(maxsize=1)
def held_out_news() -> NewsSplit:
    """The embedded corpus's held-out news, checked against all of MSRA."""
    msra = _msra_splits()
    texts = ["".join(chars) for split in ("train", "test") for chars, _ in msra[split]]
    return news_sentences(peoples_daily_1998_sentences("news"), texts)


def news_dataset(labels: Sequence[str]):
    """The held-out news as a ``datasets.Dataset`` in ``labels``' order (a model's)."""
    return _to_datasets({NEWS_SPLIT: held_out_news().sentences}, list(labels), None)[NEWS_SPLIT]
