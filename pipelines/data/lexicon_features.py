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
FILE = "lexicon.tsv"  # in a model directory: WORD<TAB>type mask, a line each


class WordLexicon:
    def __init__(self, words: dict[str, int], source: str = "", held_out_dropped: int = 0) -> None:
        self.words = words  # word -> mask of its types (bit g: TYPES[g])
        self.source = source
        self.held_out_dropped = held_out_dropped  # corpus sentences left out for sharing dev / test text
        self.max_len = max((len(w) for w in words), default=0)
        # Every word and every prefix of one -> the bits a match sets at its first, middle
        # and last character (None: a prefix only). The scan from a character stops at the
        # first string that is neither; one lookup a step.
        self._scan: dict[str, tuple[int, int, int] | None] = {}
        for w in words:
            for k in range(1, len(w)):
                self._scan.setdefault(w[:k], None)
        for w, mask in words.items():
            self._scan[w] = _match_bits(mask, len(w))

    def __len__(self) -> int:
        return len(self.words)

    def codes(self, chars: Sequence[str]) -> list[int]:
        """One 16-bit code per character (``chars``: one string per position)."""
        text = "".join(c if len(c) == 1 else "\0" for c in chars)
        n, scan = len(text), self._scan
        codes = [0] * n
        for i in range(n):
            for end in range(i + 1, min(n, i + self.max_len) + 1):
                bits = scan.get(text[i:end], 0)
                if bits == 0:  # neither a word nor the start of one
                    break
                if bits is None:
                    continue
                first, middle, last = bits
                codes[i] |= first
                if end - i > 1:
                    codes[end - 1] |= last
                    for k in range(i + 1, end - 1):
                        codes[k] |= middle
        return codes

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
