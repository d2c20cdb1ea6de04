"""Extra labelled text for training: ``data.extra_train`` (the People's Daily 1998
silver labels of ``silver.py``, or more ``char tag`` files, with every sentence that
shares text with the run's dev or test split removed first) and ``data.augment``
(train sentences with their entities swapped for lexicon names, ``lexicon.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
import random
from typing import Sequence

from pipelines.config import AugmentConfig
from pipelines.data.corpus import shares_text
from pipelines.data.encoding import IGNORE
from pipelines.data.loaders import DataError, NerData, read_char_tag_file
from pipelines.data.lexicon import load_gazetteer, swap_mentions
from pipelines.data.silver import UNSURE, peoples_daily_1998_silver


@dataclass
class ExtraTrain:
    tokens: list[list[str]] = field(default_factory=list)
    label_ids: list[list[int]] = field(default_factory=list)  # IGNORE where unsure
    # per source: sentences kept, dropped for sharing text with test / dev
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def summary(self) -> str:
        return "; ".join(
            f"{name}: {c['kept']} sentences ({c['dropped_test']} dropped sharing text with test, {c['dropped_dev']} with dev)"
            for name, c in self.counts.items()
        )


def _source_sentences(name: str) -> list[tuple[list[str], list[str]]]:
    if name == "peoples_daily_1998":
        return [(s.chars, s.tags) for s in peoples_daily_1998_silver()]
    if name.startswith("conll:"):
        return read_char_tag_file(name[len("conll:") :])
    raise DataError(f"unknown extra_train source {name!r} (use peoples_daily_1998 or conll:PATH)")


def extra_training(sources: Sequence[str], data: NerData) -> ExtraTrain:
    index = {label: i for i, label in enumerate(data.labels)}
    index[UNSURE] = IGNORE
    extra = ExtraTrain()
    for name in sources:
        sentences = _source_sentences(name)
        texts = ["".join(chars) for chars, _ in sentences]
        dropped = {}
        keep = [True] * len(sentences)
        for split in ("test", "dev"):
            leaks = shares_text(texts, data.texts(split))
            dropped[split] = sum(k and leak for k, leak in zip(keep, leaks))
            keep = [k and not leak for k, leak in zip(keep, leaks)]
        kept = [s for s, k in zip(sentences, keep) if k]
        for n, (chars, tags) in enumerate(kept):
            try:
                extra.label_ids.append([index[t] for t in tags])
            except KeyError as err:
                raise DataError(f"{name} sentence {n + 1}: tag {err.args[0]!r} is outside the label scheme ({', '.join(data.labels)})") from None
            extra.tokens.append(chars)
        extra.counts[name] = {"kept": len(kept), "dropped_test": dropped["test"], "dropped_dev": dropped["dev"]}
    return extra


def swapped_mentions(augment: AugmentConfig, data: NerData, seed: int) -> tuple[ExtraTrain, dict[str, int], int]:
    """``augment.copies`` passes over the train split, each sentence with entities again
    with some of them swapped for lexicon names; the gazetteer's size per type; and how
    many of the lexicon's corpus sentences were left out for sharing dev or test text
    (their names are not swapped in)."""
    train = data.splits["train"]
    sentences = [(list(chars), [data.labels[t] for t in tags]) for chars, tags in zip(train["tokens"], train["ner_tags"])]
    gaz, dropped = load_gazetteer(augment.lexicon, sentences, data.held_out_texts())
    rng = random.Random(seed)
    index = {label: i for i, label in enumerate(data.labels)}
    extra = ExtraTrain()
    for _ in range(augment.copies):
        for sentence in sentences:
            swapped = swap_mentions(sentence, gaz, augment.rate, rng)
            if swapped is not None:
                extra.tokens.append(swapped[0])
                extra.label_ids.append([index[t] for t in swapped[1]])
    return extra, gaz.sizes(), dropped
