"""Tagging text as it is typed: sentence by sentence, with a cache, timed. UI-free.

Only sentences that changed since the last call go through the model, so typing at
the end of a long paste re-tags one sentence, not the whole text; each sentence's
model time is its latency. Long sentences are windowed by the tagger itself.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Protocol

# A sentence ends after one of these (and any closing quotes or brackets).
_SENTENCE = re.compile(r"[^。！？!?；;\n]*(?:[。！？!?；;\n]+[”’」』）)\"']*|$)")


class _Tagger(Protocol):
    def tag(self, text: str) -> list: ...


@dataclass(frozen=True)
class Span:
    type: str
    start: int
    end: int
    text: str
    confidence: float


@dataclass
class TagResult:
    entities: list[Span] = field(default_factory=list)
    sentences: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # sentences run this time (cache misses)
    cancelled: bool = False


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each non-blank sentence, covering the text in order."""
    spans = []
    for m in _SENTENCE.finditer(text):
        if m.end() > m.start() and text[m.start() : m.end()].strip():
            spans.append((m.start(), m.end()))
    return spans


class SentenceTagger:
    """Wraps a tagger: caches per sentence, serialises model calls across threads."""

    def __init__(self, tagger: _Tagger, cache_size: int = 2048, clock: Callable[[], float] = time.perf_counter) -> None:
        self.tagger = tagger
        self.clock = clock
        self._cache: OrderedDict[str, list] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def tag_text(self, text: str, cancelled: Callable[[], bool] = lambda: False) -> TagResult:
        result = TagResult()
        for start, end in split_sentences(text):
            if cancelled():
                result.cancelled = True
                return result
            sentence = text[start:end]
            entities = self._cache.get(sentence)
            if entities is None:
                with self._lock:  # one forward pass at a time: a superseded worker may still be running
                    t0 = self.clock()
                    entities = self.tagger.tag(sentence)
                    result.latencies_ms.append((self.clock() - t0) * 1000)
                self._remember(sentence, entities)
            result.sentences += 1
            result.entities.extend(Span(e.type, start + e.start, start + e.end, e.text, e.confidence) for e in entities)
        return result

    def _remember(self, sentence: str, entities: list) -> None:
        self._cache[sentence] = entities
        self._cache.move_to_end(sentence)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
