"""ONNX Runtime's models, made on first use: ONNX fp32 (dynamic batch and length), dynamic
int8 (``ort-int8``) and static int8 (``ort-int8-static``), the peers of the TVM artifacts.

Static int8 is calibrated like ours: the run's ``compile.quantize`` settings (mode, percentile,
per-channel weights, ``get_data_num`` sentences of the calibration split, the same
draw). Only MatMul / Gemm are quantised, in QDQ format with uint8 activations and
int8 weights, as the TVM path does; LayerNorm, softmax and GELU stay fp32.
"""

from __future__ import annotations

import os

from pipelines.files import atomic_path, read_json, write_json
from pipelines.layout import CONFIG_FILE
from pipelines.modeling.models import INPUT_NAMES, example_inputs, load_exportable, logits_module, model_fingerprint

FP32_FILE, DYNAMIC_FILE, STATIC_FILE = "model.onnx", "model.int8.onnx", "model.int8-static.onnx"


def export_onnx(model_dir: str, path: str) -> None:
    """ONNX with dynamic batch and length, for ONNX Runtime (the peer engine)."""
    import warnings

    import torch

    model, _, _ = load_exportable(model_dir)
    axes = {0: "batch", 1: "sequence"}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            logits_module(model),
            example_inputs((1, 16)),
            tmp,
            input_names=INPUT_NAMES,
            output_names=["logits"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": axes},
            opset_version=17,
            dynamo=False,  # the TorchScript-based exporter: no onnxscript needed, dynamic axes work
        )


def _built_for(path: str) -> str | None:
    """The key an ONNX file was built for (its sidecar ``PATH.json``), None if unknown."""
    return (read_json(path + ".json") or {}).get("key") if os.path.isfile(path) else None


def _record_key(path: str, key: str) -> None:
    write_json(path + ".json", {"key": key})


def onnx_model(model_dir: str, out_dir: str, int8: bool = False) -> str:
    """The model as ONNX (dynamic batch and length), exported on first use and again
    whenever the model changed since (its fingerprint is the cache key)."""
    key = model_fingerprint(model_dir)
    path = os.path.join(out_dir, DYNAMIC_FILE if int8 else FP32_FILE)
    if _built_for(path) == key:
        return path
    fp32 = os.path.join(out_dir, FP32_FILE)
    if _built_for(fp32) != key:
        export_onnx(model_dir, fp32)
        _record_key(fp32, key)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with atomic_path(path, suffix=".onnx") as tmp:
            quantize_dynamic(fp32, tmp, weight_type=QuantType.QInt8)
        _record_key(path, key)
    return path


def quantize_static_model(fp32_path: str, out_path: str, batches, qcfg) -> str:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self):
            batch = next(self.it, None)
            return None if batch is None else {"input_ids": batch[0], "attention_mask": batch[1]}

    method = {"max": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}
    with atomic_path(out_path, suffix=".onnx") as tmp:
        quantize_static(
            fp32_path,
            tmp,
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=qcfg.quantize_per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method[qcfg.calibrate_mode],
            extra_options={"CalibPercentile": qcfg.calibrate_range * 100},
        )
    return out_path


def static_int8_model(run_dir: str, model_dir: str, out_dir: str, fp32_path: str) -> str:
    """The run's static int8 ONNX model, calibrated on first use and again whenever the
    model or the calibration settings changed since."""
    from pipelines.config import load_config
    from pipelines.data.encoding import make_windows, pad_batch
    from pipelines.data.loaders import data_for, sample_split
    from pipelines.modeling.models import ModelMeta, model_encoder

    cfg = load_config(os.path.join(run_dir, CONFIG_FILE))
    qcfg = cfg.compile.quantize
    path = os.path.join(out_dir, STATIC_FILE)
    key = f"{model_fingerprint(model_dir)}-{cfg.seed}-{qcfg.model_dump_json()}"
    if _built_for(path) == key:
        return path
    sentences = sample_split(data_for(cfg), qcfg.calibration_split, qcfg.get_data_num, cfg.seed)["tokens"]
    meta, encoder = ModelMeta.load(model_dir), model_encoder(model_dir)
    windows = make_windows(sentences, encoder, meta.max_length, meta.window_stride)
    # One shape for every batch, [1, max_length]: the percentile and entropy calibrators
    # stack what the batches give (batches of 16 failed on a last, shorter one).
    batches = [pad_batch([w.ids], encoder.pad_id, meta.max_length) for w in windows]
    quantize_static_model(fp32_path, path, batches, qcfg)
    _record_key(path, key)
    return path
