"""Run configs: YAML in, typed objects out, every mistake reported before any work.

A config error is one line: ``FILE: key.path: what is wrong (what is allowed)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Literal, Optional, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

PRESET_NAMES = ("tiny", "mini", "small", "medium", "base")
STAGE_NAMES = ("train", "export", "eval")


class ConfigError(ValueError):
    """A config that cannot be used; ``str()`` is the one line to show the user."""


# The forward pass while training: bf16 is mixed precision (fp32 weights and optimiser
# state); auto = bf16 on CPUs with AMX-BF16, fp32 elsewhere (pipelines.training.optim).
TrainPrecision = Literal["auto", "fp32", "bf16"]
# auto, then every int8 GEMM kernel of pipelines/compile/int8.py (a test keeps them equal).
Int8KernelName = Literal["auto", "vnni", "avx-vnni", "avx512bw", "avx2", "avx2-pairs", "int32"]
INT8_KERNELS = get_args(Int8KernelName)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentConfig(_Section):
    # Mention swapping: `copies` more of each train sentence with entities, each entity
    # swapped at chance `rate` for a name of its type from the lexicon: jieba (its
    # dictionary's nr/ns/nt words), file:PATH in its `WORD FREQUENCY POS` format, or a
    # word/POS tagged corpus's names (peoples_daily_1998, corpus:PATH; its sentences
    # sharing dev/test text left out), joined by `+`.
    lexicon: str = "jieba"
    copies: int = Field(1, ge=1, le=10)
    rate: float = Field(0.5, gt=0, le=1)


class DataConfig(_Section):
    # msra: embedded MSRA corpus; hub: a Hugging Face dataset id; conll: local `char tag` files
    source: Literal["msra", "hub", "conll"] = "msra"
    hub_id: Optional[str] = None
    revision: Optional[str] = None
    train: Optional[str] = None
    dev: Optional[str] = None
    test: Optional[str] = None
    # Label order saved with the model; default: the source's own order.
    labels: Optional[list[str]] = None
    # Where a source has no dev split: this fraction of train, drawn with `seed`.
    dev_fraction: float = Field(0.05, gt=0, lt=1)
    # ... taken as whole runs of this many consecutive sentences. MSRA's chunks of one
    # article sit together: a dev of single chunks had 83% of its entity mentions in
    # train (the test: 71%), so it rewarded recall of seen names; runs of 500: 72%.
    dev_block: int = Field(1, ge=1)
    # The seed that draws that dev; null: the run's seed. Set it where runs at several
    # seeds must share one dev (a seed ensemble of teachers, chosen on the student's dev).
    split_seed: Optional[int] = None
    # Cap sentences per split (quick experiments and tests); null = all.
    max_sentences: Optional[int] = Field(None, ge=1)
    # More labelled text for training only: peoples_daily_1998 (embedded; silver
    # labels from its POS tags, partial where they cannot decide) or conll:PATH.
    # Sentences sharing text with the dev or test split are dropped (counted in the log).
    extra_train: list[str] = Field(default_factory=list)
    augment: Optional[AugmentConfig] = None

    @model_validator(mode="after")
    def _source_needs(self) -> "DataConfig":
        if self.source == "hub" and not self.hub_id:
            raise ValueError("hub_id is required when source is 'hub' (e.g. peoples_daily_ner)")
        if self.source == "conll" and not self.train and not self.test:
            raise ValueError("train and/or test file paths are required when source is 'conll'")
        return self


class ModelConfig(_Section):
    # BERT sizes, or `bilstm`: a character BiLSTM tagger (modeling/bilstm), a fast
    # teacher to distil into a BERT student; set dropout: 0.5 for it.
    preset: Literal["tiny", "mini", "small", "medium", "base", "bilstm"] = "tiny"
    # A hub id or local directory with BERT weights; overrides `preset`.
    pretrained: Optional[str] = None
    # A hub id or local directory for the tokenizer; default: the embedded bert-base-chinese vocab.
    tokenizer: Optional[str] = None
    max_length: int = Field(128, ge=8, le=512)
    # Overlap between windows when a sentence is longer than max_length - 2 characters.
    window_stride: Optional[int] = Field(None, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    # Word-lexicon codes as a second embedding of each character (data/lexicon_features):
    # jieba (its POS-tagged dictionary), file:PATH (WORD FREQUENCY POS lines),
    # peoples_daily_1998 or corpus:PATH (the words and names of a word/POS tagged corpus,
    # minus its sentences that share text with dev/test), or several joined by "+".
    lexicon: Optional[str] = None
    # A fresh BiLSTM's character and bigram tables start from word2vec vectors trained
    # on these text sources (peoples_daily_1998, msra_train, file:PATH), minus sentences
    # that share text with dev/test (modeling/vectors); `lac` among them: the character
    # table starts from jieba's LAC-small character vectors instead; null: random tables.
    vectors: Optional[list[str]] = None
    # A linear-chain CRF over the BiLSTM's scores (modeling/crf): trained on the likelihood
    # of whole tag sequences, decoded with its learned transitions by every engine.
    crf: bool = False
    # The BiLSTM's width: each direction's LSTM state (default 256); null: the preset's.
    hidden_size: Optional[int] = Field(None, ge=8, le=2048)

    @model_validator(mode="after")
    def _vectors_need(self) -> "ModelConfig":
        if self.vectors and (self.preset != "bilstm" or self.pretrained):
            raise ValueError("model.vectors starts a fresh BiLSTM's tables: it needs preset: bilstm and no model.pretrained")
        if self.crf and self.preset != "bilstm" and not self.pretrained:
            raise ValueError("model.crf is the BiLSTM's: it needs preset: bilstm (or model.pretrained naming a BiLSTM)")
        if self.hidden_size and (self.preset != "bilstm" or self.pretrained):
            raise ValueError("model.hidden_size sets a fresh BiLSTM's width: it needs preset: bilstm and no model.pretrained")
        return self


class TrainConfig(_Section):
    epochs: float = Field(3, gt=0)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(5e-5, gt=0, le=1)
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, ge=0)
    # Evaluate on dev and keep the best checkpoint every N steps (0 = once per epoch).
    eval_every: int = Field(0, ge=0)
    # Stop training after this many minutes (the best dev checkpoint so far is kept).
    max_minutes: Optional[float] = Field(None, gt=0)
    # With max_minutes: decay the learning rate to zero by the time budget if it comes
    # before the last step, so a run cut by its budget still ends annealed.
    decay_to_budget: bool = True
    # Torch intra-op threads; null = all cores.
    threads: Optional[int] = Field(None, ge=1)
    precision: TrainPrecision = "auto"


class ExportConfig(_Section):
    # Fixed input shape [batch, sequence], like the reference recipe's 1x256 trace.
    shape: list[int] = Field(default_factory=lambda: [1, 256])
    torchscript: bool = True
    torch_export: bool = True
    parity_sentences: int = Field(32, ge=1)

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: list[int]) -> list[int]:
        if len(v) != 2 or min(v) < 1:
            raise ValueError("must be [batch, sequence] with both >= 1")
        return v


class EvalConfig(_Section):
    split: Literal["train", "dev", "test"] = "test"
    # seqeval strict IOB2 mode instead of the default (conlleval-style) mode.
    strict: bool = False
    batch_size: int = Field(64, ge=1)
    # argmax: each character's most likely tag. bio: the most likely valid BIO sequence
    # (no I-X after O or another type), constrained Viterbi on the logits; every engine,
    # `tag` and the highlighter decode the same way.
    decode: Literal["argmax", "bio"] = "bio"
    # Also score the held-out People's Daily news (pipelines/data/news.py) when the data
    # is MSRA: text no training source reads, in MSRA's conventions (metrics: eval.news).
    news: bool = True


class RpcConfig(_Section):
    """Devices behind a TVM RPC tracker (``python -m tvm.exec.rpc_tracker``; each device runs
    ``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY``): the TVM engines of a
    bench, or tuning's measurements, run there (``pipelines.runtime.remote``)."""

    tracker: str  # HOST:PORT
    key: str  # the devices' key: letters, digits, dot, dash, underscore
    # How long to wait for a free device of the key before giving up.
    wait_s: float = Field(60.0, gt=0)

    @field_validator("tracker")
    @classmethod
    def _tracker(cls, v: str) -> str:
        host, sep, port = v.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9190")
        return f"{host}:{int(port)}"

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not re.fullmatch(RPC_KEY_PATTERN, v):
            raise ValueError("must be letters, digits, '.', '-' or '_' (it names result files)")
        return v

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.tracker.rpartition(":")
        return host.strip("[]"), int(port)

    @classmethod
    def of(cls, tracker: str, key: str, source: str = "--rpc") -> "RpcConfig":
        """From the CLI's flags; a bad value is one ``ConfigError`` line."""
        try:
            return cls(tracker=tracker, key=key)
        except ValidationError as err:
            raise ConfigError(f"{source}: {_describe(err.errors()[0], cls)}") from None


RPC_KEY_PATTERN = r"[A-Za-z0-9_.\-]+"


class TuningConfig(_Section):
    # MetaSchedule trials in all (measured candidates); 0 = no tuning, but records
    # that earlier compiles measured for the same kernels are still used.
    trials: int = Field(0, ge=0)
    # Stop tuning after this long, keeping what was measured.
    max_minutes: Optional[float] = Field(None, gt=0)
    # Tuning database shared by compiles; default: tuning-db/ beside the runs.
    database: Optional[str] = None
    # Measure on a tracker's devices instead of this machine (its own database, per key).
    rpc: Optional[RpcConfig] = None


class QuantizeConfig(_Section):
    """int8 post-training static quantisation (the reference recipe's backend.quantize keys)."""

    # Activation range per layer input: max (min/max seen), percentile (the central
    # `calibrate_range` share of values), entropy (TensorRT's KL threshold).
    calibrate_mode: Literal["max", "percentile", "entropy"] = "percentile"
    calibrate_range: float = Field(0.99999, gt=0.5, le=1)
    # int8 weight scales per output channel (true) or one per tensor.
    quantize_per_channel: bool = True
    # Calibration sentences (dataset.sampler.get_data_num), drawn with the run's seed.
    calibration_split: Literal["train", "dev"] = "train"
    get_data_num: int = Field(256, ge=1)
    # Accuracy budget: entity-F1 points (simulated, on dev) int8 may lose against fp32;
    # the most sensitive layers stay fp32 until it holds. null = every layer int8.
    max_f1_drop: Optional[float] = Field(0.3, ge=0)
    budget_samples: int = Field(500, ge=1)
    # Linear layers never to quantise (names as in the model, e.g. bert.encoder.layer.0.output.dense).
    keep_fp32: list[str] = Field(default_factory=list)
    # The int8 GEMM kernel (pipelines/compile/int8.py): auto = the fastest the target's
    # CPU runs; or one by name (it must be one the target's CPU runs).
    kernel: Int8KernelName = "auto"
    # Attention's softmax(S) @ V as int8 too: probabilities as u8 per row, V per column,
    # both quantised as they come (no calibration). Off by default: with AVX2's
    # vpmaddubsw it measured no faster than fp32 (docs/compiler.md); Q K^T stays fp32.
    attention: bool = False


# A symbolic length, in a shape profile (``[64, "any"]``) and an artifact's name
# (``compiled/tvm-fp32-64xany``).
ANY_LENGTH = "any"


class ProfileConfig(_Section):
    """Every [batch, seq] of these lists is built; the engine then takes any batch and
    length (runtime.engines.ShapeProfile): a batch runs at the shortest length built
    that fits it, over the batch sizes built there."""

    # 1: one sentence (tag, the highlighter); 8: small batches; 64: eval's batches.
    batch: list[int] = Field(default_factory=lambda: [1, 8, 64])
    # Steps of 16 then 32-64: 0.80 of the computed positions are real on the MSRA test
    # (0.66 with 32 / 64 / 128), each bucket one more build. `any`: one build a batch
    # size whose length is symbolic (BiLSTM models: every length up to max_length, run
    # as it is, no padding; docs/compiler.md).
    seq: list[int] | Literal["any"] = Field(default_factory=lambda: [16, 32, 48, 64, 96, 128, 192, 256])

    @field_validator("batch", "seq")
    @classmethod
    def _positive(cls, v):
        if v == ANY_LENGTH:
            return v
        if not v or min(v) < 1:
            raise ValueError("needs at least one size, each >= 1")
        return sorted(set(v))


# Named compile targets (compile.target, compile --target); "host" is this CPU, detected.
TARGET_PRESETS: dict[str, dict] = {
    "x86-avx512": {"kind": "llvm", "mcpu": "cascadelake"},  # AVX-512 + VNNI: Xeon since Cascade Lake, AMD Zen 4/5
    "x86-avx2": {"kind": "llvm", "mcpu": "haswell"},  # AVX2 + FMA: most laptops, AMD Zen 2/3, Xeon before Skylake-SP
    "x86-avx2-vnni": {"kind": "llvm", "mcpu": "alderlake"},  # AVX2 + AVX-VNNI: Intel laptops and desktops since Alder Lake
    "aarch64": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]},  # 64-bit ARM with NEON
    "cuda": {"kind": "cuda"},  # the GPU's architecture detected at compile time
}
TARGET_KINDS = ("llvm", "cuda", "c", "rocm", "vulkan", "metal", "opencl", "webgpu")


def parse_target(spec: Any) -> Any:
    """A compile target as the config holds it: ``host``, a preset name, or a TVM target
    dict (also as JSON text). Anything else is refused with the presets in the message."""
    if isinstance(spec, str) and spec.strip().startswith("{"):
        try:
            spec = json.loads(spec)
        except ValueError:
            raise ValueError(f"target {spec!r} is not valid JSON") from None
    if spec in ("host", "llvm") or (isinstance(spec, str) and spec in TARGET_PRESETS):
        return spec
    if isinstance(spec, dict) and spec.get("kind") in TARGET_KINDS:
        return spec
    if isinstance(spec, str) and spec in TARGET_KINDS:
        return {"kind": spec}
    raise ValueError(
        f"unknown target {spec!r}: use host, {', '.join(TARGET_PRESETS)}, or a TVM target dict such as "
        '{"kind": "llvm", "mcpu": "znver3"}'
    )


class CompileConfig(_Section):
    # Precisions to build, one artifact each (int8: static, calibrated; bf16 has no Relax pass).
    precisions: list[Literal["fp32", "fp16", "int8"]] = Field(default_factory=lambda: ["fp32"])
    # "host" = LLVM for this CPU (detected), a TARGET_PRESETS name, or a TVM target dict.
    target: Any = "host"
    # Static shapes [batch, sequence] to build; default: the export shape (without a profile).
    shapes: Optional[list[list[int]]] = None
    # A shape profile: batch sizes x lengths, built as one engine of any batch and length.
    profile: Optional[ProfileConfig] = None
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    # What the reference recipe's vendor keys (frontend, backend, ...) turned into.
    _notices: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _vendor_keys(cls, raw, handler):
        from pipelines.vendor_config import VENDOR_KEYS, translate

        if not isinstance(raw, dict) or not any(k in raw for k in VENDOR_KEYS):
            return handler(raw)
        ours, notices = translate(raw)
        model = handler(ours)
        model._notices = notices
        return model

    @property
    def notices(self) -> list[str]:
        return list(self._notices)

    def build_shapes(self, export_shape, max_length: int | None = None, bilstm: bool = False) -> list[list]:
        """Every [batch, seq] to build: ``shapes`` and the profile's grid (lengths the model
        cannot take, past ``max_length``, dropped; ``[batch, "any"]`` for a symbolic
        length). If neither is set: for a BiLSTM, batch 1 and 64 at a symbolic length
        (docs/compiler.md: faster over a corpus than any bucket grid, 4 builds); else
        the export shape."""
        grid = []
        if self.profile is not None and self.profile.seq == ANY_LENGTH:
            grid = [[b, ANY_LENGTH] for b in self.profile.batch]
        elif self.profile is not None:
            seqs = [s for s in self.profile.seq if max_length is None or s <= max_length] or [max_length]
            grid = [[b, s] for s in seqs for b in self.profile.batch]
        shapes = [list(s) for s in self.shapes or []] + grid
        unique = [s for i, s in enumerate(shapes) if s not in shapes[:i]]
        return unique or ([[1, ANY_LENGTH], [64, ANY_LENGTH]] if bilstm else [list(export_shape)])

    @field_validator("target")
    @classmethod
    def _target(cls, v):
        return parse_target(v)

    @field_validator("shapes")
    @classmethod
    def _shapes(cls, v):
        if v is not None and any(len(s) != 2 or min(s) < 1 for s in v):
            raise ValueError("each shape must be [batch, sequence] with both >= 1")
        return v


class BenchConfig(_Section):
    engines: list[str] = Field(default_factory=lambda: ["torch", "torchscript", "ort", "tvm-fp32"])
    batch: list[int] = Field(default_factory=lambda: [1])
    seq: list[int] = Field(default_factory=lambda: [128])
    warmup: int = Field(5, ge=0)
    iterations: int = Field(50, ge=1)
    # Stop an engine's timing loop after this many seconds even if iterations remain.
    max_seconds: float = Field(10.0, gt=0)
    threads: Optional[int] = Field(None, ge=1)
    # Whole-test-set throughput: the eval split through each engine (eval's batching),
    # its first `corpus_sentences` only if set, the median of `corpus_passes` passes.
    corpus: bool = True
    corpus_batch: int = Field(64, ge=1)
    corpus_sentences: Optional[int] = Field(None, ge=1)
    corpus_passes: int = Field(3, ge=1)
    # Also N processes per engine at once, the cores split between them (aggregate sentences/s).
    instances: int = Field(1, ge=1)
    # Run the TVM engines on a tracker's device (the others stay here): rows "tvm-fp32+rpc-KEY".
    rpc: Optional[RpcConfig] = None


class _TextSteps(_Section):
    """A fixed number of optimiser steps over unlabeled text, checkpointed every
    ``checkpoint_every`` steps, and resumable (shared by pretrain and distill).
    ``max_minutes`` with ``decay_to_budget`` (the default) is the stage's whole
    budget, counted across resumes, and the learning rate decays to zero by it or by
    ``steps``, whichever comes first; without it each invocation stops after
    ``max_minutes`` wherever the schedule is, and running again resumes."""

    # peoples_daily_1998 (embedded), msra_train (labels dropped), file:PATH;
    # sentences overlapping the test split are dropped.
    sources: list[str] = Field(default_factory=lambda: ["peoples_daily_1998", "msra_train"])
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1)
    max_length: int = Field(128, ge=8, le=512)
    learning_rate: float = Field(5e-4, gt=0, le=1)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    checkpoint_every: int = Field(500, ge=1)
    holdout: int = Field(256, ge=0)  # sequences held out to measure progress
    max_minutes: Optional[float] = Field(None, gt=0)
    decay_to_budget: bool = True
    threads: Optional[int] = Field(None, ge=1)
    precision: TrainPrecision = "auto"


class PretrainConfig(_TextSteps):
    batch_size: int = Field(64, ge=1)
    mask_prob: float = Field(0.15, gt=0, lt=1)
    whole_word: bool = False  # needs word boundaries: peoples_daily_1998 has them


class DistillConfig(_TextSteps):
    # The fine-tuned teacher: a run or model directory (the CLI also takes a run id or
    # name). It must use the student's tokenizer; its labels are matched by name.
    # A list is an ensemble: the student learns the mean of their logits.
    teacher: str | list[str] | None = None
    # A teacher named by its config file, run once per seed here (a seed ensemble: the
    # newest finished run of the config at each seed, run first where there is none).
    # Give that config a data.split_seed, so its runs share the student's dev.
    teacher_seeds: Optional[list[int]] = None
    # Softmax temperature of teacher and student; the KL term is scaled by T^2.
    temperature: float = Field(2.0, gt=0)
    # Weight of the hard-label cross-entropy on the data's train split (KL gets 1 - alpha).
    # 0 = pure distillation as in Well-Read Students; the train stage fine-tunes after.
    alpha: float = Field(0.0, ge=0, le=1)


class RunConfig(_Section):
    name: str = "run"
    description: str = ""
    seed: int = 42
    stages: list[Literal["pretrain", "distill", "train", "export", "eval", "compile", "bench"]] = Field(default_factory=lambda: list(STAGE_NAMES))
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    compile: CompileConfig = Field(default_factory=CompileConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)

    @model_validator(mode="after")
    def _distill_needs(self) -> "RunConfig":
        if "distill" in self.stages:
            if not self.distill.teacher:
                raise ValueError("stages include distill: set distill.teacher (a fine-tuned run or model directory)")
            # distill starts from pretrain's weights and hands its own to train
            at = {stage: i for i, stage in enumerate(self.stages)}
            if at.get("pretrain", -1) > at["distill"] or at.get("train", len(self.stages)) < at["distill"]:
                raise ValueError("stages: distill must come after pretrain and before train")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def digest(self) -> str:
        """Short hash of the resolved config (artifacts record which config made them)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def parse_config(raw: Any, source: str = "<config>") -> RunConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_describe(err.errors()[0], RunConfig)}") from None


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read, validate and return a run config. ``overrides`` maps dotted keys to values."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    for key, value in (overrides or {}).items():
        raw = _set_dotted(raw or {}, key, value)
    return parse_config(raw, path)


def _set_dotted(raw: dict, key: str, value: Any) -> dict:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return raw


def _describe(error: dict, root: type[BaseModel]) -> str:
    loc = [str(p) for p in error["loc"]]
    path = ".".join(loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _fields_at(root, loc[:-1])
        return f"{path}: unknown key (allowed: {', '.join(allowed)})"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    got = error.get("input")
    if kind != "missing" and not isinstance(got, (dict, list)):
        message += f" (got {got!r})"
    return f"{path}: {message}" if loc else message  # a cross-section check names its keys itself


def _fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    for part in loc:
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
