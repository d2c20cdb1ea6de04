"""Lexicon sources and a gazetteer of person, place and organisation names from them,
and mention swapping with it: a training sentence again with its entities replaced by
other names of the same type, so the model learns the contexts and shapes of names
rather than the names it has seen.

A source is a POS-tagged word list (``jieba``'s 349k-word dictionary, or ``file:PATH``:
``WORD FREQUENCY POS`` a line, ``nr`` / ``ns`` / ``nt`` for the three types) or a
``word/POS`` tagged corpus (``peoples_daily_1998``, embedded, or ``corpus:PATH``),
whose names are what its POS tags suggest (``silver.name_candidates``); sources join
with ``+``. A corpus sentence sharing text with the run's dev or test split is left
out, and counted.

jieba's list is noisy (``巫婆/nr``, ``龟年鹤寿/ns``), so only entries shaped like a
name of their type are kept: persons of 2-3 characters starting with a surname seen
in the training data, places and organisations ending in a place or organisation
head (省, 县, 江 ...; 大学, 公司, 委员会 ...).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from pipelines import resources
from pipelines.data.corpus import shares_text
from pipelines.data.loaders import DataError, Sentence, entity_spans
from pipelines.data.silver import (ORG_HEADS, PLACE_HEADS, Word, name_candidates, peoples_daily_1998_file, peoples_daily_1998_sentences,
                                   read_pos_file)

POS_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
_HAN = re.compile(r"^[\u4e00-\u9fff]+$")
# Natural features and city parts besides the administrative heads.
LOC_HEADS = PLACE_HEADS + ("江", "河", "湖", "海", "湾", "山", "岛", "港", "岭", "峡", "城", "洲", "半岛", "平原", "盆地", "高原")
MIN_SURNAME_COUNT = 5  # a surname: the first character of this many training PER mentions
PEOPLES_DAILY = "peoples_daily_1998"  # a corpus source beside jieba, file:PATH and corpus:PATH
SOURCES_HELP = f"use jieba, file:PATH, {PEOPLES_DAILY} or corpus:PATH, joined by '+'"


@dataclass
class Gazetteer:
    names: dict[str, list[str]]  # type -> names

    def sizes(self) -> dict[str, int]:
        return {etype: len(names) for etype, names in self.names.items()}


def jieba_dictionary() -> str:
    return resources.package_file("jieba", "jieba", "dict.txt")


def read_pos_words(path: str) -> list[tuple[str, str]]:
    """(word, POS) of a ``WORD FREQUENCY POS`` list; a line of another shape is an
    error naming the file and line."""
    words = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 3 or not parts[1].isdigit():
                    raise DataError(f"{path}:{lineno}: expected 'WORD FREQUENCY POS', got {line.strip()!r}")
                words.append((parts[0], parts[2]))
    except FileNotFoundError:
        raise DataError(f"{path}: no such lexicon file") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    return words


def surnames(sentences: Sequence[Sentence]) -> set[str]:
    """First characters of the 2-3 character PER mentions, those seen often enough."""
    first = Counter()
    for chars, tags in sentences:
        for etype, start, end in entity_spans(tags):
            if etype == "PER" and 2 <= end - start <= 3:
                first[chars[start]] += 1
    return {ch for ch, n in first.items() if n >= MIN_SURNAME_COUNT}


def gazetteer(typed: list[tuple[str, str]], family_names: set[str]) -> Gazetteer:
    """The names among ``(word, type)`` entries shaped like a name of their type."""
    names: dict[str, set[str]] = {etype: set() for etype in POS_TYPES.values()}
    for word, etype in typed:
        if etype not in names or not _HAN.match(word):
            continue
        if etype == "PER":
            keep = 2 <= len(word) <= 3 and word[0] in family_names
        elif etype == "LOC":
            keep = 2 <= len(word) <= 8 and word.endswith(LOC_HEADS)
        else:
            keep = 3 <= len(word) <= 12 and word.endswith(ORG_HEADS)
        if keep:
            names[etype].add(word)
    return Gazetteer({etype: sorted(found) for etype, found in names.items()})


def lexicon_file(source: str) -> str:
    """The word list a lexicon source names: ``jieba`` (its dictionary, installed with
    it) or ``file:PATH`` in its format."""
    if source == "jieba":
        try:
            return jieba_dictionary()
        except resources.MissingResource as err:
            raise DataError(f"the jieba lexicon is missing: {err}") from None
    if source.startswith("file:"):
        return source[len("file:") :]
    raise DataError(f"unknown lexicon {source!r} ({SOURCES_HELP})")


def corpus_file(source: str) -> str | None:
    """The tagged corpus a source names (``peoples_daily_1998``, ``corpus:PATH``), else None."""
    if source == PEOPLES_DAILY:
        return peoples_daily_1998_file()
    return source[len("corpus:") :] if source.startswith("corpus:") else None


@dataclass
class SourceEntries:
    """What a (``+``-joined) lexicon source holds: its word-list entries as
    ``(word, POS)``; its corpora's sentences that share no text with the held-out
    texts, as ``word/POS`` words; and how many corpus sentences were left out."""

    listed: list[tuple[str, str]]
    sentences: list[list[Word]]
    held_out_dropped: int

    def corpus_names(self) -> list[tuple[str, str]]:
        """``(name, type)`` of every name the corpus sentences' POS tags suggest."""
        return [name for words in self.sentences for name in name_candidates(words)]

    def names(self) -> list[tuple[str, str]]:
        """``(name, type)``: the listed words whose POS is a name's, and the corpus names."""
        return [(word, POS_TYPES[pos]) for word, pos in self.listed if pos in POS_TYPES] + self.corpus_names()


def read_sources(source: str, held_out: Sequence[str] = ()) -> SourceEntries:
    entries = SourceEntries([], [], 0)
    for part in source.split("+"):
        path = corpus_file(part)
        if path is None:
            entries.listed += read_pos_words(lexicon_file(part))
            continue
        numbered = peoples_daily_1998_sentences("train") if part == PEOPLES_DAILY else read_pos_file(path)
        sentences = [words for _, words in numbered]
        leaks = shares_text(("".join(w for w, _ in s) for s in sentences), held_out) if held_out else [False] * len(sentences)
        entries.sentences += [s for s, leak in zip(sentences, leaks) if not leak]
        entries.held_out_dropped += sum(leaks)
    return entries


def load_gazetteer(source: str, train: Sequence[Sentence], held_out: Sequence[str] = ()) -> tuple[Gazetteer, int]:
    """The gazetteer of ``source`` (its corpora without sentences sharing ``held_out``
    text), and how many corpus sentences that left out."""
    entries = read_sources(source, held_out)
    return gazetteer(entries.names(), surnames(train)), entries.held_out_dropped


def swap_mentions(sentence: Sentence, gaz: Gazetteer, rate: float, rng: random.Random) -> Sentence | None:
    """The sentence with each entity, at chance ``rate``, replaced by a gazetteer name of
    its type; None if nothing was swapped."""
    chars, tags = sentence
    out_chars: list[str] = []
    out_tags: list[str] = []
    at, swapped = 0, False
    for etype, start, end in entity_spans(tags):
        pool = gaz.names.get(etype)
        if not pool or rng.random() >= rate:
            continue
        name = rng.choice(pool)
        out_chars += chars[at:start] + list(name)
        out_tags += list(tags[at:start]) + ["B-" + etype] + ["I-" + etype] * (len(name) - 1)
        at, swapped = end, True
    if not swapped:
        return None
    return out_chars + chars[at:], out_tags + list(tags[at:])
