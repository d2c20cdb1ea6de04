"""Corpora in, Hugging Face ``datasets`` out: ``tokens`` (characters) and ``ner_tags`` (BIO ids).

Sources: the embedded MSRA corpus (default), a hub dataset id, or local files in the
``char tag`` format. The label order is explicit and travels with the model.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Iterator, Sequence

import numpy as np

from pipelines import resources
from pipelines.config import DataConfig, RunConfig

# The order of the hub's `peoples_daily_ner` and `msra_ner` datasets.
HUB_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
# The order of the reference recipe's People's Daily scripts.
RECIPE_LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER", "B-ORG", "I-ORG"]

MSRA_TRAIN_CHUNKS = 50658  # standard split: chunks [:50658] train, [50658:] test
SPLITS = ("train", "dev", "test")
_TAG = re.compile(r"^(O|[BIMES]-\S+)$")

Sentence = tuple[list[str], list[str]]  # characters, BIO tags


class DataError(ValueError):
    """A corpus that cannot be used; ``str()`` is the one line to show the user."""


@dataclass
class NerData:
    splits: "datasets.DatasetDict"  # noqa: F821 - train/dev/test with tokens + ner_tags
    labels: list[str]

    def entity_types(self) -> list[str]:
        return entity_types(self.labels)

    def texts(self, split: str) -> list[str]:
        """The sentences of a split as strings (none for a split it lacks)."""
        return ["".join(tokens) for tokens in self.splits[split]["tokens"]] if split in self.splits else []

    def held_out_texts(self) -> list[str]:
        """What nothing built for training may contain: the dev and test texts."""
        return self.texts("dev") + self.texts("test")


def column(split, name: str) -> list:
    """A split's column as a list, read from Arrow in one call. ``split[name]`` is a lazy
    column in ``datasets`` >= 4 that decodes every row again on each pass (0.19 s a pass
    over the MSRA test: a fifth of what the fastest engine takes to tag it)."""
    return split[name][:]


def entity_types(labels: Sequence[str]) -> list[str]:
    return sorted({label[2:] for label in labels if label != "O"})


def to_bio(tags: Sequence[str]) -> list[str]:
    """BIOES / BMES / BIO -> BIO. Lossless for well-formed input; a continuation tag
    (I/M/E) that does not continue an entity of its type opens a new one (B)."""
    out: list[str] = []
    prev_type = None  # type of the entity the previous tag belongs to, if it may continue
    for tag in tags:
        if tag == "O":
            out.append("O")
            prev_type = None
            continue
        prefix, etype = tag[0], tag[2:]
        if prefix in "IME" and prev_type == etype:
            out.append("I-" + etype)
        else:
            out.append("B-" + etype)
        # E and S close the entity: what follows cannot continue it.
        prev_type = etype if prefix in "BIM" else None
    return out


def entity_spans(tags: Sequence[str]) -> Iterator[tuple[str, int, int]]:
    """(type, start, end) for each entity in BIO tags; an I- that continues nothing opens one."""
    etype, start = None, 0
    for i, tag in enumerate([*tags, "O"]):
        continues = tag.startswith("I-") and tag[2:] == etype
        if etype is not None and not continues:
            yield etype, start, i
            etype = None
        if tag != "O" and not continues:
            etype, start = tag[2:], i


def spread_tag(tag: str, n: int) -> list[str]:
    """The tags of a token's ``n`` characters, for a token tagged as a whole: the
    characters are one stretch of the same entity (or O), opened by the first if the
    token opens it (B, S) and closed by the last if the token closes it (E, S).
    ``北京 B-LOC`` -> B-LOC I-LOC; ``I-X``/``M-X`` -> all continuations; ``中国 S-LOC``
    -> B-LOC E-LOC. (``to_bio`` then reads them as it reads per-character tags.)"""
    if n == 1 or tag == "O":
        return [tag] * n
    prefix, etype = tag[0], tag[2:]
    first = "B" if prefix in "BS" else "I"
    last = "E" if prefix in "ES" else "I"
    return [f"{first}-{etype}"] + [f"I-{etype}"] * (n - 2) + [f"{last}-{etype}"]


def parse_char_tag_lines(lines: Iterable[str], source: str) -> list[Sentence]:
    """Sentences from ``char tag`` lines (space or tab separated, blank line between
    sentences). Tags may be BIO, BIOES or BMES; they come back as BIO. A token of
    several characters (``北京 B-LOC``) becomes one position per character, as text
    is tagged, its tag spread over them (``spread_tag``)."""
    sentences: list[Sentence] = []
    chars: list[str] = []
    tags: list[str] = []
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            if chars:
                sentences.append((chars, to_bio(tags)))
                chars, tags = [], []
            continue
        parts = line.split()
        # A full-width space is a real character; `split()` would swallow it.
        if line[0] in " \t" or len(parts) != 2 or not _TAG.match(parts[1]):
            raise DataError(f"{source}:{lineno}: malformed line {line!r} (expected 'CHAR TAG', tag O or B-/I-/M-/E-/S-TYPE)")
        chars.extend(parts[0])
        tags.extend(spread_tag(parts[1], len(parts[0])))
    if chars:
        sentences.append((chars, to_bio(tags)))
    return sentences


def read_char_tag_file(path: str) -> list[Sentence]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return parse_char_tag_lines(f, path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such data file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a char-tag file") from None
    except UnicodeDecodeError:
        raise DataError(_not_utf8(path)) from None


def _not_utf8(path: str) -> str:
    """Where a file stops being UTF-8: its line, and its byte offset in the whole file
    (a text reader's error counts from the chunk it was decoding)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        return f"{path}:{line}: not UTF-8 text ({err.reason} at byte {err.start}; save it as UTF-8)"
    return f"{path}: not UTF-8 text"


def load_data(cfg: DataConfig, seed: int = 42) -> NerData:
    """The configured corpus as train/dev/test ``datasets`` plus its label list."""
    if cfg.source == "msra":
        splits = _msra_splits()
        source_labels = HUB_LABELS
    elif cfg.source == "conll":
        splits = {name: read_char_tag_file(path) for name in SPLITS if (path := getattr(cfg, name))}
        source_labels = HUB_LABELS
    else:
        splits, source_labels = _hub_splits(cfg)
    if "dev" not in splits and "train" in splits:
        splits["train"], splits["dev"] = _split_off(splits["train"], cfg.dev_fraction, seed, cfg.dev_block)
    labels = list(cfg.labels) if cfg.labels else _labels_for(splits, source_labels)
    return NerData(_to_datasets(splits, labels, cfg.max_sentences), labels)


def load_split(spec: str, labels: Sequence[str], seed: int = 42) -> "datasets.Dataset":  # noqa: F821
    """One split from a CLI spec: ``conll:PATH``, ``msra[:SPLIT]`` or ``hub:ID[:SPLIT]``
    (``news``, the held-out People's Daily news, is ``pipelines.data.news.news_dataset``,
    a layer above: ``evaluate.scoring.split_from_spec`` takes all four)."""
    kind, _, rest = spec.partition(":")
    if kind == "conll":
        if not rest:
            raise DataError("conll: needs a path, e.g. conll:data/example.test")
        cfg = DataConfig(source="conll", test=rest)
        split = "test"
    elif kind == "msra":
        cfg, split = DataConfig(source="msra"), rest or "test"
    elif kind == "hub":
        hub_id, _, split = rest.partition(":")
        cfg, split = DataConfig(source="hub", hub_id=hub_id), split or "test"
    else:
        raise DataError(f"unknown data spec {spec!r} (use conll:PATH, msra[:SPLIT], hub:ID[:SPLIT] or news)")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} in {spec!r} (use one of {', '.join(SPLITS)})")
    cfg.labels = list(labels)
    return load_data(cfg, seed).splits[split]


def _msra_splits() -> dict[str, list[Sentence]]:
    path = resources.msra_corpus()
    with open(path, encoding="utf-8", newline="") as f:
        sentences = parse_char_tag_lines(f, path)
    return {"train": sentences[:MSRA_TRAIN_CHUNKS], "test": sentences[MSRA_TRAIN_CHUNKS:]}


def _split_off(sentences: list[Sentence], fraction: float, seed: int, block: int = 1) -> tuple[list[Sentence], list[Sentence]]:
    """(train, dev): dev is whole runs of ``block`` consecutive sentences, drawn at
    random until it holds ``fraction`` of them (the last run drawn may overshoot)."""
    starts = list(range(0, len(sentences), block))
    random.Random(seed).shuffle(starts)
    cut = max(1, round(len(sentences) * fraction))
    dev_ids: set[int] = set()
    for start in starts:
        if len(dev_ids) >= cut:
            break
        dev_ids.update(range(start, min(start + block, len(sentences))))
    train = [s for i, s in enumerate(sentences) if i not in dev_ids]
    dev = [s for i, s in enumerate(sentences) if i in dev_ids]
    return train, dev


def _labels_for(splits: dict[str, list[Sentence]], preferred: Sequence[str]) -> list[str]:
    """The preferred order, extended with any further entity types the data has."""
    seen = {tag[2:] for sents in splits.values() for _, tags in sents for tag in tags if tag != "O"}
    labels = list(preferred)
    for etype in sorted(seen - set(entity_types(preferred))):
        labels += [f"B-{etype}", f"I-{etype}"]
    return labels


def _to_datasets(splits: dict[str, list[Sentence]], labels: list[str], cap: int | None):
    import datasets

    index = {label: i for i, label in enumerate(labels)}
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=labels)),
        }
    )
    out = {}
    for name, sentences in splits.items():
        if cap is not None:
            sentences = sentences[:cap]
        if not sentences:
            raise DataError(f"the {name} split is empty")
        ids = []
        for n, (_, tags) in enumerate(sentences):
            try:
                ids.append([index[t] for t in tags])
            except KeyError as err:
                raise DataError(
                    f"{name} sentence {n + 1}: tag {err.args[0]!r} is outside the label scheme ({', '.join(labels)})"
                ) from None
        out[name] = datasets.Dataset.from_dict(
            {"tokens": [chars for chars, _ in sentences], "ner_tags": ids}, features=features
        )
    return datasets.DatasetDict(out)


def _hub_splits(cfg: DataConfig) -> tuple[dict[str, list[Sentence]], list[str]]:
    import datasets

    try:
        loaded = datasets.load_dataset(cfg.hub_id, revision=cfg.revision)
    except Exception as first:  # noqa: BLE001 - datasets raises many kinds
        # datasets >= 4 refuses script datasets; the hub keeps a parquet conversion of them.
        if cfg.revision is None and "script" in str(first).lower():
            try:
                loaded = datasets.load_dataset(cfg.hub_id, revision="refs/convert/parquet")
            except Exception as second:  # noqa: BLE001
                raise DataError(f"hub dataset {cfg.hub_id!r}: {_first_line(second)}") from None
        else:
            raise DataError(f"hub dataset {cfg.hub_id!r}: {_first_line(first)} (offline? use data.source: msra)") from None
    names = {"train": "train", "validation": "dev", "dev": "dev", "test": "test"}
    splits: dict[str, list[Sentence]] = {}
    label_names: list[str] = []
    for hub_split, ds in loaded.items():
        if hub_split not in names:
            continue
        feature = ds.features["ner_tags"].feature
        label_names = list(feature.names)
        splits[names[hub_split]] = [
            (list(tokens), to_bio([label_names[t] for t in tags])) for tokens, tags in zip(ds["tokens"], ds["ner_tags"])
        ]
    return splits, label_names or HUB_LABELS


def _first_line(err: Exception) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def sample_split(data, split: str, n: int, seed: int):
    """``n`` sentences of a split, drawn with ``seed`` (the same ones for TVM and ONNX Runtime calibration)."""
    ds = data.splits[split]
    idx = np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False)
    return ds.select(sorted(idx.tolist()))


@lru_cache(maxsize=2)
def _cached_data(data_json: str, seed: int) -> NerData:
    return load_data(DataConfig.model_validate_json(data_json), seed)


def data_for(cfg: RunConfig) -> NerData:
    """The run's corpus, loaded once per process however many stages need it."""
    return _cached_data(cfg.data.model_dump_json(), cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed)
