"""Tag raw text with any engine: the shared path of `ner-workbench tag` and the highlighter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from pipelines.data.encoding import CharEncoder
from pipelines.layout import run_decoder
from pipelines.modeling.models import ModelMeta, model_encoder, resolve_model_dir
from pipelines.runtime.engines import open_engine
from pipelines.runtime.predict import Engine, Entity, extract_entities, predict_logits

TORCH_ENGINES = ("torch", "torchscript")


@dataclass
class Tagger:
    engine: Engine
    encoder: CharEncoder
    meta: ModelMeta
    decoder: str = "argmax"

    @classmethod
    def open(
        cls, run_or_model_dir: str, engine: str = "torch", decoder: str | None = None, threads: int | None = None
    ) -> "Tagger":
        """``decoder`` None: the run's eval.decode setting. ``threads``: the engine's
        intra-op threads (None: the engine's default, every core)."""
        if threads and engine in TORCH_ENGINES:
            import torch

            torch.set_num_threads(threads)
        model_dir = resolve_model_dir(run_or_model_dir)
        return cls(
            open_engine(engine, run_or_model_dir, threads), model_encoder(model_dir), ModelMeta.load(model_dir),
            decoder or run_decoder(run_or_model_dir),
        )

    def tag(self, text: str) -> list[Entity]:
        return self.tag_many([text])[0]

    def tag_many(
        self, texts: Sequence[str], batch_size: int = 64, on_batch: Callable[[int, int], None] | None = None
    ) -> list[list[Entity]]:
        """Entities per text: texts in length-sorted batches, a text longer than the
        model's length in overlapping windows (``predict_logits``); an empty text has none."""
        full = [i for i, text in enumerate(texts) if text]
        logits = predict_logits(
            self.engine, [list(texts[i]) for i in full], self.encoder, self.meta.max_length, self.meta.window_stride,
            batch_size, on_batch,
        ) if full else []
        out: list[list[Entity]] = [[] for _ in texts]
        for i, row in zip(full, logits):
            out[i] = extract_entities(texts[i], row, self.meta.labels, self.decoder, self.meta.crf)
        return out
