"""Tag raw text with any engine: the shared path of `ner-workbench tag` and the highlighter."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.data.encoding import CharEncoder, load_tokenizer
from pipelines.layout import run_decoder
from pipelines.modeling.models import ModelMeta, resolve_model_dir
from pipelines.runtime.engines import open_engine
from pipelines.runtime.predict import Engine, Entity, extract_entities, predict_logits


@dataclass
class Tagger:
    engine: Engine
    encoder: CharEncoder
    meta: ModelMeta
    decoder: str = "argmax"

    @classmethod
    def open(cls, run_or_model_dir: str, engine: str = "torch", decoder: str | None = None) -> "Tagger":
        """``decoder`` None: the run's eval.decode setting."""
        model_dir = resolve_model_dir(run_or_model_dir)
        return cls(
            open_engine(engine, run_or_model_dir), CharEncoder(load_tokenizer(model_dir)), ModelMeta.load(model_dir),
            decoder or run_decoder(run_or_model_dir),
        )

    def tag(self, text: str) -> list[Entity]:
        if not text:
            return []
        [logits] = predict_logits(self.engine, [list(text)], self.encoder, self.meta.max_length, self.meta.window_stride)
        return extract_entities(text, logits, self.meta.labels, self.decoder)
