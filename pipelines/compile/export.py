"""Export a saved model: TorchScript traced at a fixed shape (the reference recipe's
1x256) and a ``torch.export`` program for the compiler, each checked against eager."""

from __future__ import annotations

import os
import time
from typing import Sequence

from pipelines.config import ExportConfig
from pipelines.data.encoding import CharEncoder, make_windows, pad_batch
from pipelines.events import Reporter
from pipelines.files import atomic_path, replace_dir, write_json
from pipelines.layout import EXPORT_META
from pipelines.modeling.models import INPUT_NAMES, example_inputs, load_exportable, logits_module


def quiet_export_warnings() -> None:
    """Tracing warns about shape-dependent Python branches in HF code, and torch.export
    about nn.LSTM's weight list (``_flat_weights``, rebuilt at every call); the parity
    checks are what prove the exports right at their shape."""
    import warnings

    import torch

    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*were assigned during export.*", category=UserWarning)


def parity_batches(sentences: Sequence[Sequence[str]], encoder: CharEncoder, max_length: int, shape) -> list:
    """Real sentences padded to the export shape (windows longer than it are cut, for the check only)."""
    batch, seq = shape
    rows = [w.ids[:seq] for w in make_windows(sentences, encoder, min(max_length, seq))]
    return [pad_batch(rows[i : i + batch], encoder.pad_id, seq) for i in range(0, len(rows), batch)]


def parity(reference, candidate, batches) -> dict:
    """Max |logit difference| and argmax agreement over real (unpadded) positions."""
    import torch

    max_diff, agree, total = 0.0, 0, 0
    with torch.inference_mode():
        for ids, mask in batches:
            if len(ids) < batches[0][0].shape[0]:
                continue  # a traced module takes only its own batch size
            args = (torch.from_numpy(ids), torch.from_numpy(mask))
            ref, got = reference(*args).float(), candidate(*args).float()
            real = torch.from_numpy(mask).bool()
            max_diff = max(max_diff, float((ref - got).abs()[real].max()))
            agree += int((ref.argmax(-1) == got.argmax(-1))[real].sum())
            total += int(real.sum())
    return {"max_abs_diff": max_diff, "argmax_agreement": agree / total if total else None, "positions": total}


def export_model(
    model_dir: str, export_dir: str, cfg: ExportConfig, sentences: Sequence[Sequence[str]], reporter: Reporter
) -> dict:
    """Write ``model.ts`` / ``model.pt2`` plus ``export.json`` into ``export_dir``."""
    import torch

    quiet_export_warnings()
    model, encoder, meta = load_exportable(model_dir)
    module = logits_module(model)
    shape = tuple(cfg.shape)
    batches = parity_batches(sentences[: cfg.parity_sentences * shape[0]], encoder, meta.max_length, shape)
    if not batches or len(batches[0][0]) < shape[0]:
        raise ValueError(f"need at least {shape[0]} sentences for the parity check at shape {list(shape)}")
    example = tuple(torch.from_numpy(a) for a in batches[0])
    info: dict = {"shape": list(shape), "inputs": INPUT_NAMES, "input_dtype": "int64", "labels": meta.labels, "files": {}}
    steps = int(cfg.torchscript) + int(cfg.torch_export)
    done = 0

    def write(tmp: str) -> None:
        nonlocal done
        if cfg.torchscript:
            reporter.log(f"tracing TorchScript at {shape[0]}x{shape[1]}")
            t0 = time.monotonic()
            with torch.inference_mode():
                traced = torch.jit.trace(module, example, check_trace=False)
            traced.save(os.path.join(tmp, "model.ts"))
            check = parity(module, traced, batches)
            info["files"]["torchscript"] = "model.ts"
            info["torchscript"] = {**check, "seconds": round(time.monotonic() - t0, 2)}
            done += 1
            reporter.progress(done, steps, "exports")
        if cfg.torch_export:
            reporter.log(f"torch.export at {shape[0]}x{shape[1]}")
            t0 = time.monotonic()
            program = torch.export.export(module, example)
            torch.export.save(program, os.path.join(tmp, "model.pt2"))
            check = parity(module, program.module(), batches)
            info["files"]["torch_export"] = "model.pt2"
            info["torch_export"] = {**check, "seconds": round(time.monotonic() - t0, 2)}
            done += 1
            reporter.progress(done, steps, "exports")
        write_json(os.path.join(tmp, EXPORT_META), info)

    replace_dir(export_dir, write)
    metrics = {}
    for kind in ("torchscript", "torch_export"):
        if kind in info:
            for key in ("max_abs_diff", "argmax_agreement"):
                metrics[f"{kind}_{key}"] = info[kind][key]
                reporter.metric(f"{kind}_{key}", info[kind][key])
    for name in info["files"]:
        reporter.artifact(name, os.path.join(export_dir, info["files"][name]))
    return metrics



# The shortest length a symbolic-length program takes: exported from an example of
# 40, torch specialises lengths whose ``ids[:, 1:]`` would have 0 or 1 columns.
MIN_ANY_LENGTH = 3


def export_program(model_dir: str, shape, path: str) -> None:
    """A ``torch.export`` program at one static shape (the compiler builds per shape), or
    at a symbolic length (``[batch, "any"]``: lengths ``MIN_ANY_LENGTH`` to the model's
    ``max_length``), its LSTMs kept whole as ``workbench::lstm`` (``opaque_lstm``)."""
    import torch

    from pipelines.config import ANY_LENGTH
    from pipelines.modeling.opaque_lstm import opaque_lstms

    quiet_export_warnings()
    model, _, meta = load_exportable(model_dir)
    batch, seq = shape
    if seq == ANY_LENGTH:
        length = torch.export.Dim("length", min=MIN_ANY_LENGTH, max=meta.max_length)
        with opaque_lstms(model):
            program = torch.export.export(logits_module(model), example_inputs((batch, min(40, meta.max_length))),
                                          dynamic_shapes=({1: length}, {1: length}))
    else:
        program = torch.export.export(logits_module(model), example_inputs(shape))
    with atomic_path(path, suffix=".pt2") as tmp:  # torch.export.save wants the suffix
        torch.export.save(program, tmp)
