"""Word-lexicon features for each character, the SoftLexicon idea without word vectors:
which dictionary words Begin / are in the Middle of / End / are (Single) the character,
for each of four word types (person, place, organisation, any other word).

A model trained from scratch on 46k sentences cannot learn where the words of Chinese
text begin and end, nor which strings are names; a 349k-word POS-tagged dictionary
(jieba's) knows both. Each character gets a 16-bit code, four bits (B, M, E, S) per
type; ``encoding.CharEncoder`` packs it above the character's token id, so every
engine and exporter keeps its two int64 inputs (``modeling.models`` unpacks it).
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import numpy as np

from pipelines.data.encoding import per_sentence
from pipelines.data.lexicon import read_sources
from pipelines.data.loaders import DataError

TYPES = ("PER", "LOC", "ORG", "WORD")  # bit group g = TYPES[g]: bits 4g (B) .. 4g+3 (S)
GROUP_BITS = 4
B, M, E, S = range(GROUP_BITS)
POS_TYPES = {"nr": "PER", "nrt": "PER", "nrfg": "PER", "ns": "LOC", "nt": "ORG"}
MAX_WORD = 10  # longer dictionary entries (a few hundred idioms and titles) are left out
# A tagged corpus's words that are not lexicon entries: its names come from
# name_candidates, and numbers (m), dates (t) and punctuation (w) name nothing.
_NOT_WORDS = {"nr", "ns", "nt", "m", "t", "w"}
_NO_WORD = "\0"  # stands for what no word contains (see codes_flat)
FILE = "lexicon.tsv"  # in a model directory: WORD<TAB>type mask, a line each


class WordLexicon:
    def __init__(self, words: dict[str, int], source: str = "", held_out_dropped: int = 0) -> None:
        self.words = words  # word -> mask of its types (bit g: TYPES[g])
        self.source = source
        self.held_out_dropped = held_out_dropped  # corpus sentences left out for sharing dev / test text
        # built with the lexicon, as reading its file is: not on the clock of the first text read
        self._index = self._build_index()

    def __len__(self) -> int:
        return len(self.words)

    def _build_index(self) -> tuple[np.ndarray, np.ndarray, list[tuple[int, np.ndarray, np.ndarray]]]:
        """(``[kinds, 3]``: the (first, middle, last) bits words set, one row for all
        words alike; the table of slots words take; per word length k: (k, the words'
        keys sorted, each one's row)).
        ``codes_many`` hashes every k characters of a corpus at once in numpy and looks
        them up here: a Python scan trying each prefix from each character took 0.35 s
        of the 0.5 s that reading the MSRA test into ids took."""
        groups: dict[int, tuple[list[str], list[int]]] = {}
        kinds: dict[tuple[int, int, int], int] = {}
        for word, mask in self.words.items():
            group = groups.setdefault(len(word), ([], []))
            group[0].append(word)
            group[1].append(kinds.setdefault(_match_bits(mask, len(word)), len(kinds)))
        out, seen = [], np.zeros(1 << _SEEN_BITS, dtype=bool)
        for k, (words, rows) in sorted(groups.items()):
            points = np.frombuffer("".join(words).encode("utf-32-le"), dtype=np.uint32).reshape(-1, k)
            hashes = _hash_columns(points)
            seen[_slot(hashes, k)] = True
            order = np.argsort(hashes)
            out.append((k, hashes[order], np.array(rows, dtype=np.int64)[order]))
        return np.array(list(kinds), dtype=np.int64).reshape(-1, 3), seen, out

    def codes(self, chars: Sequence[str]) -> list[int]:
        """One 16-bit code per character (``chars``: one string per position)."""
        return self.codes_many([chars])[0]

    def codes_many(self, sentences: Sequence[Sequence[str]]) -> list[list[int]]:
        """``codes`` of every sentence (``codes_flat``, one list a sentence)."""
        return per_sentence(self.codes_flat(sentences).tolist(), sentences)

    def codes_flat(self, sentences: Sequence[Sequence[str]]) -> np.ndarray:
        """The codes of every position of every sentence, one after the other (int64), the
        whole corpus at once in numpy: one lookup of every position's k characters for
        each word length k. A position holding more than one character (a token kept
        whole) matches no word; nor does any match span two sentences: they are joined
        by a character no word has."""
        joined = _NO_WORD.join(_one_per_position(chars) for chars in sentences)
        n = len(joined)
        codes = np.zeros(n, dtype=np.int64)
        points = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
        kinds, seen, by_length = self._index
        rolling, done = np.zeros(n, dtype=np.uint64), 0  # rolling[i]: hash of joined[i : i + done]
        for k, hashes, rows in by_length if n else ():
            while done < k:  # extend every position's hash by one character
                rolling = _extend(rolling[: n - done], points[done:], done)
                done += 1
            # the positions whose slot some word of the lexicon took, then the words' hashes
            starts = np.flatnonzero(seen[_slot(rolling, k)])
            found = np.minimum(np.searchsorted(hashes, rolling[starts]), len(hashes) - 1)
            match = hashes[found] == rolling[starts]
            starts, found = starts[match], found[match]
            if k > _EXACT and len(starts):  # a hash of more characters than it holds exactly
                real = np.array([joined[i : i + k] in self.words for i in starts], dtype=bool)
                starts, found = starts[real], found[real]
            if not len(starts):
                continue
            first, middle, last = kinds[rows[found]].T
            np.bitwise_or.at(codes, starts, first)
            if k > 1:
                np.bitwise_or.at(codes, starts + k - 1, last)
            if k > 2:  # middle bits on every character between the ends, per type
                for g in range(len(TYPES)):
                    bit = 1 << (GROUP_BITS * g + M)
                    spans = starts[(middle & bit) != 0]
                    if len(spans):
                        count = np.zeros(n + 1, dtype=np.int64)  # a running count of starts - ends
                        np.add.at(count, spans + 1, 1)
                        np.add.at(count, spans + k - 1, -1)
                        codes[np.cumsum(count)[:-1] > 0] |= bit
        if len(sentences) < 2:
            return codes
        joins = np.cumsum(np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))[:-1] + 1) - 1
        keep = np.ones(n, dtype=bool)
        keep[joins] = False
        return codes[keep]

    def save(self, directory: str) -> None:
        with open(os.path.join(directory, FILE), "w", encoding="utf-8") as f:
            f.write(f"# {self.source}\n")
            for word, mask in sorted(self.words.items()):
                f.write(f"{word}\t{mask}\n")

    @classmethod
    def load(cls, directory: str) -> "WordLexicon | None":
        """The lexicon saved beside a model, None for a model without one. A file read
        before (same path, size and time) is not read again: opening a model reads it
        for the engine and for the encoder, ~2 s each for jieba's 349 k words."""
        path = os.path.join(directory, FILE)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return None
        return _read_lexicon(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_lexicon(path: str, size: int, mtime_ns: int) -> WordLexicon:
    """(size and mtime_ns key the cache: a rewritten file is read again.) Lexicons are
    never changed once built, so one object serves every reader."""
    words, source = {}, ""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.startswith("#"):
                source = source or line[1:].strip()
                continue
            word, _, mask = line.rstrip("\n").partition("\t")
            if not word or not mask.isdigit():
                raise DataError(f"{path}:{lineno}: expected 'WORD<TAB>MASK', got {line.strip()!r}")
            words[word] = int(mask)
    return WordLexicon(words, source)


# A string's key: its first three code points (21 bits each: all of Unicode) packed
# exactly, each further one mixed in by a multiply (FNV's prime, wrapping in 64 bits),
# so only matches of four or more characters need checking against the words.
_EXACT, _POINT_BITS = 3, np.uint64(21)
_PRIME = np.uint64(0x100000001B3)
_SEEN_BITS = 22  # a table of 4 M slots: a position whose slot no word took is no word


def _one_per_position(chars: Sequence[str]) -> str:
    text = "".join(chars)
    return text if len(text) == len(chars) else "".join(c if len(c) == 1 else _NO_WORD for c in chars)


def _extend(keys: np.ndarray, points: np.ndarray, held: int) -> np.ndarray:
    """Keys of strings of ``held`` characters extended by one (``points``)."""
    points = points.astype(np.uint64)
    return (keys << _POINT_BITS | points) if held < _EXACT else keys * _PRIME + points


def _hash_columns(points: np.ndarray) -> np.ndarray:
    """The keys ``codes_many`` computes, of each row of code points."""
    keys = np.zeros(len(points), dtype=np.uint64)
    for held, column in enumerate(points.T):
        keys = _extend(keys, column, held)
    return keys


def _slot(keys: np.ndarray, length: int) -> np.ndarray:
    """Each key's slot in the table of those words take (multiplicative hashing)."""
    return ((keys + np.uint64(length)) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - _SEEN_BITS)


@functools.lru_cache(maxsize=None)  # a few dozen (types, length) pairs for 349 k words
def _match_bits(mask: int, length: int) -> tuple[int, int, int]:
    """(bits at the first, a middle and the last character) of a word of ``length``
    whose types are ``mask``; a one-character word sets S at its first."""
    types = [g for g in range(len(TYPES)) if mask >> g & 1]

    def bits(pos: int) -> int:
        return sum(1 << (GROUP_BITS * g + pos) for g in types)

    return (bits(S), 0, 0) if length == 1 else (bits(B), bits(M), bits(E))


def word_lexicon(source: str, held_out: Sequence[str] = ()) -> WordLexicon:
    """Every word of up to MAX_WORD characters of one or more sources joined by ``+``,
    typed by its POS tags (a word may carry several): ``jieba`` or ``file:PATH``
    (``WORD FREQUENCY POS`` lines), and ``peoples_daily_1998`` or ``corpus:PATH`` (a
    ``word/POS`` tagged corpus in its format): the words and name candidates
    (``silver.name_candidates``) of its sentences that share no text with ``held_out``
    (the run's dev and test texts). A corpus's other words of two or more characters
    are WORD (its segmentation is news text's, jieba's is general)."""
    entries = read_sources(source, held_out)
    words: dict[str, int] = {}
    typed = [(word, POS_TYPES.get(pos, "WORD")) for word, pos in entries.listed]
    typed += entries.corpus_names()
    typed += [(text, POS_TYPES.get(pos, "WORD")) for s in entries.sentences for text, pos in s
              if len(text) > 1 and pos not in _NOT_WORDS]
    for word, etype in typed:
        if len(word) <= MAX_WORD:
            words[word] = words.get(word, 0) | 1 << TYPES.index(etype)
    return WordLexicon(words, source, entries.held_out_dropped)
