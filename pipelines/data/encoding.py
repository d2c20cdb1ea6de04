"""Characters to BERT inputs, one position per character, and windows for long text.

Every character maps to exactly one token id (its own vocabulary entry after BERT's
normalisation, else ``[UNK]``), so labels never need realigning and an unknown
character keeps its place. Full-width digits and Latin letters (１９９８, ＷＴＯ)
read as their ASCII forms: People's Daily prints them full-width, MSRA never does,
and a model trained on MSRA has never seen the full-width ids (it tagged "１９" as
a person). Text longer than the model's window is cut into overlapping windows
whose predictions are stitched back; nothing is truncated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from pipelines import resources

# U+FF10-FF19, U+FF21-FF3A, U+FF41-FF5A -> 0-9, A-Z, a-z. Full-width punctuation stays:
# it is the norm in Chinese text and in MSRA (which has "％" and never "%").
ASCII_FORM = {
    chr(code): chr(code - 0xFEE0)
    for start, end in (("０", "９"), ("Ａ", "Ｚ"), ("ａ", "ｚ"))
    for code in range(ord(start), ord(end) + 1)
}


# The label id with no loss (cross-entropy ignore_index): [CLS], [SEP], padding,
# unmasked pretraining positions and unsure silver characters.
IGNORE = -100


def load_tokenizer(name_or_dir: str | None = None):
    """The tokenizer for a model: a hub id / directory, else the embedded bert-base-chinese vocab."""
    from transformers import AutoTokenizer, BertTokenizerFast

    if name_or_dir:
        return AutoTokenizer.from_pretrained(name_or_dir)
    # `do_lower_case` as bert-base-chinese was trained; real weights drop in unchanged.
    return BertTokenizerFast(vocab=resources.bert_chinese_vocab(), do_lower_case=True)


def save_tokenizer(tokenizer, directory: str) -> None:
    tokenizer.save_pretrained(directory)
    vocab = getattr(tokenizer, "vocab", None) or tokenizer.get_vocab()
    # vocab.txt too, so older readers (and other toolchains) can rebuild the tokenizer.
    with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
        for token, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
            f.write(token + "\n")


# With a word lexicon (``lexicon_features``), a position's id is its token id plus
# LEXICON_STRIDE times its 16-bit lexicon code: the model unpacks both from its one
# ``input_ids`` input, so exporters, compilers and engines need no third input.
LEXICON_STRIDE = 1 << 15  # above every token id of a vocabulary up to 32,768 entries


class CharEncoder:
    """Maps characters to token ids with the tokenizer's own normalisation, cached;
    with a ``lexicon`` (``lexicon_features.WordLexicon``), ids carry its codes too."""

    def __init__(self, tokenizer, lexicon=None) -> None:
        if lexicon is not None and len(tokenizer) > LEXICON_STRIDE:
            raise ValueError(f"a lexicon needs a vocabulary of at most {LEXICON_STRIDE} tokens, this one has {len(tokenizer)}")
        self.tokenizer = tokenizer
        self.lexicon = lexicon
        self.cls_id = tokenizer.cls_token_id
        self.sep_id = tokenizer.sep_token_id
        self.pad_id = tokenizer.pad_token_id
        self.unk_id = tokenizer.unk_token_id
        self._cache: dict[str, int] = {}

    def char_id(self, char: str) -> int:
        cached = self._cache.get(char)
        if cached is None:
            self.prime([[char]])
            cached = self._cache[char]
        return cached

    def prime(self, sentences: Iterable[Sequence[str]]) -> None:
        """Look up every character of ``sentences`` not cached yet in one tokenizer call:
        a call a character took 0.25 s for the MSRA test's 3,100 distinct characters."""
        new = [c for c in {c for chars in sentences for c in chars} if c not in self._cache]
        if not new:
            return
        # Blank characters (spaces, controls) give no piece; a string that gives several
        # (rare symbols) has no id of its own. Both read as [UNK], keeping their place.
        pieces = self.tokenizer([ASCII_FORM.get(c, c) if c.strip() else "" for c in new], add_special_tokens=False)["input_ids"]
        for c, ids in zip(new, pieces):
            self._cache[c] = ids[0] if len(ids) == 1 else self.unk_id

    def ids(self, chars: Sequence[str]) -> list[int]:
        return self.ids_many([chars])[0]

    def ids_many(self, sentences: Sequence[Sequence[str]]) -> list[list[int]]:
        """``ids`` of every sentence: the tokenizer and the lexicon each see the corpus once."""
        self.prime(sentences)
        cache = self._cache
        if self.lexicon is None:
            return [[cache[c] for c in chars] for chars in sentences]
        # in numpy over the whole corpus, then cut into sentences (a list comprehension
        # a character took 0.05 s of the MSRA test's 0.26 s outside the engine)
        chars = [c for chars in sentences for c in chars]
        ids = (np.fromiter(map(cache.__getitem__, chars), dtype=np.int64, count=len(chars))
               + LEXICON_STRIDE * self.lexicon.codes_flat(sentences)).tolist()
        return per_sentence(ids, sentences)


def per_sentence(flat: list, sentences: Sequence[Sequence]) -> list[list]:
    """``flat`` (one value a position of every sentence, one after the other) cut into
    one list a sentence."""
    out, at = [], 0
    for sentence in sentences:
        out.append(flat[at : at + len(sentence)])
        at += len(sentence)
    return out


def window_spans(length: int, window: int, stride: int | None = None) -> list[tuple[int, int]]:
    """[start, end) spans of at most ``window`` positions covering ``range(length)``.

    Consecutive windows start ``stride`` apart (default: half a window, so every
    position away from the text's ends has context on both sides in some window).
    """
    if window < 1:
        raise ValueError("window must be >= 1")
    if length <= window:
        return [(0, length)]
    stride = stride or max(1, window // 2)
    stride = min(stride, window)
    spans = []
    start = 0
    while True:
        end = min(start + window, length)
        spans.append((start, end))
        if end == length:
            return spans
        start = min(start + stride, length - window)


def stitch(length: int, spans: Sequence[tuple[int, int]], pieces: Sequence[np.ndarray]) -> np.ndarray:
    """Per-position rows from overlapping windows: each position takes its row from
    the window in which it sits farthest from a cut (the most context); the text's
    own start and end are not cuts."""
    first = pieces[0]
    if len(pieces) == 1:  # one window: nothing to choose (most sentences)
        return first[:length]
    out = np.zeros((length,) + first.shape[1:], dtype=first.dtype)
    best = np.full(length, -1, dtype=np.int64)
    for (start, end), piece in zip(spans, pieces):
        pos = np.arange(start, end)
        left = pos - start if start > 0 else length
        right = end - 1 - pos if end < length else length
        margin = np.minimum(left, right)
        take = margin > best[start:end]
        out[start:end][take] = piece[: end - start][take]
        best[start:end] = np.where(take, margin, best[start:end])
    return out


@dataclass
class Window:
    sentence: int
    start: int
    end: int
    ids: list[int]  # [CLS] chars [SEP]


def make_windows(
    sentences: Sequence[Sequence[str]], encoder: CharEncoder, max_length: int, stride: int | None = None
) -> list[Window]:
    span = max_length - 2  # room for [CLS] and [SEP]
    windows = []
    for s, ids in enumerate(encoder.ids_many(sentences)):
        for start, end in window_spans(len(ids), span, stride):
            windows.append(Window(s, start, end, [encoder.cls_id, *ids[start:end], encoder.sep_id]))
    return windows


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded int64 ``input_ids`` and ``attention_mask``."""
    length = length or max(len(r) for r in rows)
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding), longest first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
