"""Engines that turn padded token ids into logits: the one runner interface.

Each engine takes int64 ``input_ids`` / ``attention_mask`` arrays and returns
float32 ``[batch, seq, labels]`` logits; decoding is shared (``predict``).
"""

from __future__ import annotations

import os

import numpy as np

ENGINE_NAMES = ("torch", "torchscript")


class EngineError(ValueError):
    pass


class TorchEngine:
    """PyTorch eager on a Hugging Face ``BertForTokenClassification``."""

    name = "torch"

    def __init__(self, model) -> None:
        self.model = model.eval()
        self.fixed_shape = None

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask))
        return out.logits.float().numpy()


class TorchScriptEngine:
    """A module traced at a fixed shape: inputs are padded to it, batch by batch."""

    name = "torchscript"

    def __init__(self, path: str, shape: tuple[int, int]) -> None:
        import torch

        self.module = torch.jit.load(path).eval()
        self.fixed_shape = tuple(shape)

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        batch, seq = self.fixed_shape
        if input_ids.shape[1] > seq:
            raise EngineError(f"torchscript engine was traced at length {seq}, got {input_ids.shape[1]}")
        rows = []
        with torch.inference_mode():
            for i in range(0, len(input_ids), batch):
                ids, mask = _pad_to(input_ids[i : i + batch], attention_mask[i : i + batch], batch, seq)
                out = self.module(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()
                rows.append(out[: min(batch, len(input_ids) - i), : input_ids.shape[1]])
        return np.concatenate(rows)


def _pad_to(ids: np.ndarray, mask: np.ndarray, batch: int, seq: int) -> tuple[np.ndarray, np.ndarray]:
    full_ids = np.zeros((batch, seq), dtype=np.int64)
    full_mask = np.zeros((batch, seq), dtype=np.int64)
    full_ids[: ids.shape[0], : ids.shape[1]] = ids
    full_mask[: mask.shape[0], : mask.shape[1]] = mask
    return full_ids, full_mask


def open_engine(name: str, model_dir: str, export_dir: str | None = None):
    """An engine by its product-wide name, for a saved model (and its exports)."""
    from .models import load_model

    if name == "torch":
        model, _, _ = load_model(model_dir)
        return TorchEngine(model)
    if name == "torchscript":
        from .export import read_export_meta

        meta = read_export_meta(export_dir) if export_dir else None
        path = os.path.join(export_dir, "model.ts") if export_dir else None
        if not meta or not path or not os.path.isfile(path):
            raise EngineError("no TorchScript export for this model: run `ner-workbench export --model RUN` first")
        return TorchScriptEngine(path, tuple(meta["shape"]))
    raise EngineError(f"unknown engine {name!r} (available here: {', '.join(ENGINE_NAMES)})")
