"""BERT token classifiers: compact presets, hub/local weights, and saved model directories.

A saved model directory is a plain Hugging Face directory (config, weights, tokenizer)
plus ``workbench.json`` (label order, max length, window stride), so any HF tool can
read it and every engine here decodes it the same way.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from typing import Sequence

from pipelines.config import ModelConfig
from pipelines.files import write_json
from pipelines.data.encoding import CharEncoder, load_tokenizer, save_tokenizer
from pipelines.data.lexicon_features import FILE as LEXICON_FILE, GROUP_BITS, TYPES as LEXICON_TYPES, WordLexicon, word_lexicon
from pipelines.layout import MODEL_DIR
from pipelines.modeling.bilstm import MODEL_TYPE as BILSTM_TYPE, bilstm_classes
from pipelines.modeling.codes import split_codes
from pipelines.modeling.crf import crf_scores

# Well-Read Students Learn Better (Turc et al. 2019) compact sizes, plus BERT-base.
PRESETS = {
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2),
    "mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4),
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8),
    "medium": dict(num_hidden_layers=8, hidden_size=512, num_attention_heads=8),
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12),
}
META_FILE = "workbench.json"
INPUT_NAMES = ["input_ids", "attention_mask"]  # every engine takes these two, int64


class ModelError(ValueError):
    pass


@dataclass
class ModelMeta:
    labels: list[str]
    max_length: int
    window_stride: int | None = None
    preset: str | None = None
    source: str | None = None  # preset name, hub id or directory the weights started from
    # a CRF's scores, lists {start [L], end [L], transitions [L, L]} in label order: every
    # engine's logits are its emissions, decoded with these (runtime.predict); None: no CRF
    crf: dict | None = None

    def save(self, directory: str) -> None:
        write_json(os.path.join(directory, META_FILE), asdict(self))

    @classmethod
    def load(cls, directory: str) -> "ModelMeta":
        with open(os.path.join(directory, META_FILE), encoding="utf-8") as f:
            raw = json.load(f)
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})


def label_fields(labels: Sequence[str]) -> dict:
    """A Hugging Face config's label fields, in the data's label order."""
    return dict(num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})


def bert_config(preset: str, vocab_size: int, labels: Sequence[str], max_length: int, dropout: float = 0.1):
    from transformers import BertConfig

    shape = PRESETS[preset]
    return BertConfig(
        vocab_size=vocab_size,
        intermediate_size=4 * shape["hidden_size"],
        max_position_embeddings=max(512, max_length),
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        **label_fields(labels),
        **shape,
    )


@functools.cache
def _lexicon_bert_class():
    """The BERT classifier whose word embedding also reads lexicon codes, defined on
    first use (torch and transformers are imported lazily everywhere)."""
    import torch
    from transformers import BertForTokenClassification

    class LexiconEmbedding(torch.nn.Embedding):
        """Token embedding plus one learned vector per (type, B/M/E/S pattern) of the
        position's lexicon code, unpacked from ids packed by ``CharEncoder``. An
        ``nn.Embedding`` itself, so its token table keeps the plain BERT name and
        weights (a pretrained BERT loads into it)."""

        def __init__(self, vocab_size: int, hidden: int, padding_idx: int | None, types: int) -> None:
            super().__init__(vocab_size, hidden, padding_idx=padding_idx)
            self.types = types
            self.lexicon = torch.nn.Embedding(types << GROUP_BITS, hidden)

        def forward(self, ids):
            tokens, groups = split_codes(ids, self.types)
            out = super().forward(tokens)
            for index in groups:  # one gather per type: what exporters and TVM read plainly
                out = out + self.lexicon(index)
            return out

    class LexiconBertForTokenClassification(BertForTokenClassification):
        def __init__(self, config) -> None:
            super().__init__(config)
            emb = self.bert.embeddings
            emb.word_embeddings = LexiconEmbedding(config.vocab_size, config.hidden_size, config.pad_token_id, config.lexicon_types)
            self.post_init()

    return LexiconBertForTokenClassification


def _model_class(lexicon: bool):
    """The classifier class: reading lexicon codes or plain BERT."""
    from transformers import BertForTokenClassification

    return _lexicon_bert_class() if lexicon else BertForTokenClassification


def _saved_config(directory: str) -> dict:
    """A saved model's config.json. One that is not JSON reads as empty here: loading
    the weights then fails with HF's own message."""
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        try:
            return json.load(f)
        except ValueError:
            return {}


def _reads_lexicon_codes(directory: str) -> bool:
    """Whether a saved model's config says its embedding reads lexicon codes."""
    return bool(_saved_config(directory).get("lexicon_types"))


def saved_bilstm(directory: str) -> bool:
    """Whether a saved model directory holds the BiLSTM tagger."""
    return _saved_config(directory).get("model_type") == BILSTM_TYPE


def _saved_class(directory: str):
    """The class that loads a saved model: the BiLSTM tagger, or BERT with or without codes."""
    if saved_bilstm(directory):
        return bilstm_classes()[1]
    return _model_class(_reads_lexicon_codes(directory))


def is_bilstm(model) -> bool:
    return getattr(model.config, "model_type", None) == BILSTM_TYPE


def load_exportable(directory: str):
    """``load_model`` for the exporters and compilers, with eager attention (plain matmul
    and softmax that tracers and compilers all read)."""
    return load_model(directory, attn="eager")


def build_model(cfg: ModelConfig, labels: Sequence[str], held_out: Sequence[str] = ()):
    """A fresh classifier: from a preset (random init) or from pretrained weights.
    (model, encoder, meta); with ``cfg.lexicon`` the encoder carries the word lexicon,
    built from no text that shares any with ``held_out`` (the run's dev and test)."""
    # a saved BiLSTM loads as one; BERT weights load with or without codes as cfg.lexicon says
    bilstm = bool(cfg.pretrained) and os.path.isfile(os.path.join(cfg.pretrained, "config.json")) and saved_bilstm(cfg.pretrained)
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.pretrained)
    lexicon = None
    if cfg.lexicon:
        lexicon = word_lexicon(cfg.lexicon, held_out)
    elif cfg.pretrained and os.path.isdir(cfg.pretrained):
        lexicon = WordLexicon.load(cfg.pretrained)  # a model trained with one keeps it
    encoder = CharEncoder(tokenizer, lexicon)
    if cfg.pretrained:
        extra = {"lexicon_types": len(LEXICON_TYPES)} if lexicon is not None else {}
        if cfg.crf and not bilstm:
            raise ModelError(f"model.crf is the BiLSTM's, and {cfg.pretrained!r} holds no BiLSTM")
        if cfg.crf:
            extra["crf"] = True  # a saved BiLSTM keeps its CRF either way; one without gains a fresh one
        try:
            model = (bilstm_classes()[1] if bilstm else _model_class(lexicon is not None)).from_pretrained(
                cfg.pretrained,
                **label_fields(labels),
                ignore_mismatched_sizes=True,  # a fine-tuned head with another label set is replaced
                **extra,
            )
        except OSError as err:
            raise ModelError(f"cannot load pretrained weights {cfg.pretrained!r}: {str(err).splitlines()[0]}") from None
    elif cfg.preset == "bilstm":
        types = len(LEXICON_TYPES) if lexicon is not None else 0
        config_class, model_class = bilstm_classes()
        width = {"hidden_size": cfg.hidden_size} if cfg.hidden_size else {}
        model = model_class(config_class(vocab_size=len(tokenizer), lexicon_types=types, dropout=cfg.dropout, crf=cfg.crf,
                                         pad_token_id=tokenizer.pad_token_id, **width, **label_fields(labels)))
    else:
        config = bert_config(cfg.preset, len(tokenizer), labels, cfg.max_length, cfg.dropout)
        if lexicon is not None:
            config.lexicon_types = len(LEXICON_TYPES)
        model = _model_class(lexicon is not None)(config)
    meta = ModelMeta(
        labels=list(labels),
        max_length=cfg.max_length,
        window_stride=cfg.window_stride,
        preset=None if cfg.pretrained else cfg.preset,
        source=cfg.pretrained or cfg.preset,
    )
    return model, encoder, meta


def save_model(model, encoder: CharEncoder, meta: ModelMeta, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    meta.crf = crf_scores(model)  # as trained so far: the scores move with the weights
    model.save_pretrained(directory)
    save_tokenizer(encoder.tokenizer, directory)
    if encoder.lexicon is not None:
        encoder.lexicon.save(directory)
    meta.save(directory)


def load_model(directory: str, attn: str | None = None):
    """(model in eval mode, its ``CharEncoder``, meta) from a saved model directory."""
    missing = [f for f in ("config.json", META_FILE) if not os.path.isfile(os.path.join(directory, f))]
    if not os.path.isdir(directory):
        raise ModelError(f"{directory}: no such model directory")
    if missing:
        raise ModelError(f"{directory}: not a complete model directory (missing {', '.join(missing)})")
    model_class = _saved_class(directory)
    bilstm = model_class is bilstm_classes()[1]  # no attention to pick an implementation of
    kwargs = {"attn_implementation": attn} if attn and not bilstm else {}
    try:
        model = model_class.from_pretrained(directory, **kwargs)
    except OSError as err:
        raise ModelError(f"{directory}: {str(err).splitlines()[0]}") from None
    model.eval()
    return model, model_encoder(directory), ModelMeta.load(directory)


def model_encoder(directory: str) -> CharEncoder:
    """The encoder a saved model reads its text with: its tokenizer, and its word
    lexicon if it was trained with one."""
    lexicon = WordLexicon.load(directory)
    if lexicon is None and os.path.isfile(os.path.join(directory, "config.json")) and _reads_lexicon_codes(directory):
        raise ModelError(f"{directory}: the model reads lexicon codes but its {LEXICON_FILE} is missing")
    return CharEncoder(load_tokenizer(directory), lexicon)


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def resolve_model_dir(path: str) -> str:
    """A run directory (its ``model/``) or a model directory itself."""
    inner = os.path.join(path, MODEL_DIR)
    if os.path.isdir(inner):
        return inner
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    if os.path.isdir(path):
        raise ModelError(f"{path}: holds no trained model (run the train stage first)")
    raise ModelError(f"{path}: no such run or model directory")


def logits_module(model):
    import torch

    class LogitsOnly(torch.nn.Module):
        """(input_ids, attention_mask) -> logits: the plain signature every engine shares."""

        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    return LogitsOnly(model).eval()


def example_inputs(shape) -> tuple:
    import torch

    return torch.zeros(tuple(shape), dtype=torch.long), torch.ones(tuple(shape), dtype=torch.long)


def model_fingerprint(model_dir: str) -> str:
    """A checksum of what makes a model directory's outputs: its config, weights and label
    order. Artifacts built from a model (ONNX, quantised ONNX) keep it, so a retrained
    model is never served by the artifact of the one before."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(model_dir)):
        if name in ("config.json", META_FILE, LEXICON_FILE) or name.endswith((".safetensors", ".bin")):
            digest.update(name.encode())
            with open(os.path.join(model_dir, name), "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]
