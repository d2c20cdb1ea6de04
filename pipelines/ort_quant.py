"""ONNX Runtime static int8 (``ort-int8-static``): the peer for the TVM int8 artifact.

Calibrated like ours: the run's ``compile.quantize`` settings (mode, percentile,
per-channel weights, ``get_data_num`` sentences of the calibration split, the same
draw). Only MatMul / Gemm are quantised, in QDQ format with uint8 activations and
int8 weights, as the TVM path does; LayerNorm, softmax and GELU stay fp32.
"""

from __future__ import annotations

import os

STATIC_FILE = "model.int8-static.onnx"


def quantize_static_model(fp32_path: str, out_path: str, batches, qcfg) -> str:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self):
            batch = next(self.it, None)
            return None if batch is None else {"input_ids": batch[0], "attention_mask": batch[1]}

    method = {"max": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}
    tmp = out_path + ".tmp.onnx"
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
    os.replace(tmp, out_path)
    return out_path


def static_int8_model(run_dir: str, model_dir: str, out_dir: str, fp32_path: str) -> str:
    """The run's static int8 ONNX model, calibrated on first use."""
    path = os.path.join(out_dir, STATIC_FILE)
    if os.path.isfile(path):
        return path
    from .calibrate import sample_split
    from .config import load_config
    from .encoding import CharEncoder
    from .models import ModelMeta, load_tokenizer
    from .predict import length_batches, make_windows, pad_batch
    from .stages import data_for

    cfg = load_config(os.path.join(run_dir, "config.yaml"))
    qcfg = cfg.compile.quantize
    sentences = sample_split(data_for(cfg), qcfg.calibration_split, qcfg.get_data_num, cfg.seed)["tokens"]
    meta, encoder = ModelMeta.load(model_dir), CharEncoder(load_tokenizer(model_dir))
    windows = make_windows(sentences, encoder, meta.max_length, meta.window_stride)
    # One padded shape for all: the percentile and entropy calibrators stack batches.
    groups = length_batches([len(w.ids) for w in windows], 16)
    batches = [pad_batch([windows[i].ids for i in b], encoder.pad_id, meta.max_length) for b in groups]
    return quantize_static_model(fp32_path, path, batches, qcfg)
