"""Int8 calibration, per-layer sensitivity and the accuracy budget (parent side, torch).

The compile child cannot run torch models cheaply, so the parent prepares what the
int8 rewrite needs (``pipelines.compile.int8``) and writes it to a JSON file the compile
request points at:

1. ranges: every linear layer's input (and each lowered LSTM's, for its input
   projection) observed over ``get_data_num`` sentences of the calibration split
   (train by default; the test split is refused by config);
2. sensitivity: on ``budget_samples`` sentences of the dev split, the entity-F1 drop
   and logits MSE when only that layer is int8;
3. the budget: with every layer int8, while the F1 drop exceeds ``max_f1_drop``
   points, the most sensitive int8 layer goes back to fp32.

Steps 2-3 run the model with each int8 layer *simulated* in torch, using the same
scales, zero points and rounding as the compiled kernel (integer products summed
exactly in float; ``quantize.int8_linear_reference`` is the spec both follow). The
compiled artifact itself uses real int8 arithmetic.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterable

import numpy as np

from pipelines.compile.int8 import supports, weight_key
from pipelines.compile.quantize import QMAX_W, Observer, activation_params, quantize_weight, weight_scales
from pipelines.data.loaders import column, sample_split
from pipelines.files import write_json

QUANT_FILE = "int8-calibration.json"


def linear_layers(model) -> dict:
    """The int8 candidates: linear layers whose shape the int8 kernels tile (so not the
    label projection), and the input projection of each LSTM the compiler lowers
    (``compile.lstm``: one layer, one direction, batch first, with biases), named
    ``<lstm>.input``, which it builds as a linear layer over the LSTM's input."""
    import torch

    layers = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and supports(1, m.in_features, m.out_features):
            layers[name] = m
        elif isinstance(m, torch.nn.LSTM) and supports(1, m.input_size, 4 * m.hidden_size) and m.num_layers == 1 \
                and m.batch_first and m.bias and not m.bidirectional and not m.proj_size:
            layers[f"{name}.input"] = m
    return layers


def layer_weight(module):
    """A candidate's [N, K] weight: the linear layer's, or the LSTM's input weights."""
    return module.weight_ih_l0 if hasattr(module, "weight_ih_l0") else module.weight


@contextlib.contextmanager
def hooks(modules: dict, hook: Callable) -> Iterable[None]:
    handles = [m.register_forward_hook(lambda mod, inp, out, n=name: hook(n, mod, inp[0], out)) for name, m in modules.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def observe(model, run_model: Callable[[], None], mode: str, calibrate_range: float) -> dict[str, tuple[float, float]]:
    """Each linear layer's input range over one run of ``run_model``."""
    layers = linear_layers(model)
    observers = {name: Observer(mode, calibrate_range) for name in layers}

    def record(name, _mod, x, _out):
        observers[name].update(x.detach().float().numpy())

    with hooks(layers, record):
        run_model()
    return {name: obs.range() for name, obs in observers.items()}


@contextlib.contextmanager
def simulated_int8(model, ranges: dict, per_channel: bool, only: Iterable[str], weight_qmax: int = QMAX_W):
    """Layers in ``only`` compute as the int8 kernel does (u8 activations, s8 weights
    in [-weight_qmax, weight_qmax])."""
    import torch

    only = set(only)
    layers = {n: m for n, m in linear_layers(model).items() if n in only}
    prepared = {}
    for name, m in layers.items():
        w = layer_weight(m).detach().float().numpy()
        sw = weight_scales(w, per_channel, qmax=weight_qmax)
        wq = torch.from_numpy(quantize_weight(w, sw, qmax=weight_qmax).astype(np.float32))
        prepared[name] = (activation_params(*ranges[name]), wq, torch.from_numpy(np.broadcast_to(sw, (w.shape[0],)).copy()))

    def replace(name, mod, x, _out):
        (scale, zero), wq, sw = prepared[name]
        xq = torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero
        if isinstance(mod, torch.nn.LSTM):  # the LSTM again, its input and input weights as int8 sees them
            weights = [wq * sw[:, None], mod.weight_hh_l0, mod.bias_ih_l0, mod.bias_hh_l0]
            h0 = x.new_zeros(1, x.shape[0], mod.hidden_size)
            out, h, c = torch._VF.lstm(xq * scale, (h0, h0), weights, True, 1, 0.0, False, False, True)
            return out, (h, c)
        y = (xq @ wq.T) * (scale * sw)
        return y + mod.bias if mod.bias is not None else y

    with hooks(layers, replace):
        yield


def accuracy_budget(
    layers: list[str], f1_of: Callable[[set], float], max_drop: float | None, sensitivity: dict, forced=()
) -> tuple[set, list[dict]]:
    """Greedy: start with every layer but ``forced`` int8; while ``f1(fp32) - f1(int8
    set)`` (points) exceeds the budget, move the most sensitive remaining int8 layer
    to fp32. Returns (layers kept in fp32, the steps taken). ``f1_of(int8_layers)``
    scores a configuration."""
    reference = f1_of(set())
    int8 = set(layers) - set(forced)
    order = sorted(layers, key=lambda n: (sensitivity[n]["f1_drop"], sensitivity[n]["logits_mse"]), reverse=True)
    steps = []
    while True:
        drop = round((reference - f1_of(int8)) * 100, 4)
        steps.append({"int8_layers": len(int8), "f1_drop": drop})
        if max_drop is None or drop <= max_drop or not int8:
            break
        victim = next(n for n in order if n in int8)
        int8.discard(victim)
        steps[-1]["kept_fp32"] = victim
    return set(layers) - int8, steps


def prepare_int8(qcfg, data, model_dir: str, out_path: str, seed: int, reporter, decode_method: str = "argmax",
                 weight_qmax: int = QMAX_W) -> str:
    """Calibrate, measure sensitivity, apply the budget; write the request file for the
    compile child. ``weight_qmax``: the target kernel's weight range (``int8.Int8Kernel``)."""
    import torch

    from pipelines.evaluate.metrics import ner_metrics
    from pipelines.modeling.models import load_model
    from pipelines.runtime.engines import TorchEngine
    from pipelines.runtime.predict import decode, predict_logits

    model, encoder, meta = load_model(model_dir)

    def logits_of(sentences):
        with torch.inference_mode():
            return predict_logits(TorchEngine(model), sentences, encoder, meta.max_length, meta.window_stride, batch_size=32)

    calib = sample_split(data, qcfg.calibration_split, qcfg.get_data_num, seed)
    reporter.log(f"int8: calibrating {len(calib)} {qcfg.calibration_split} sentences ({qcfg.calibrate_mode})")
    ranges = observe(model, lambda: logits_of(column(calib, "tokens")), qcfg.calibrate_mode, qcfg.calibrate_range)
    layers = sorted(ranges)
    unknown = sorted(set(qcfg.keep_fp32) - set(layers))
    if unknown:
        raise ValueError(f"compile.quantize.keep_fp32: {', '.join(unknown)} is not an int8 candidate (one of: {', '.join(layers)})")

    budget_split = "dev" if "dev" in data.splits else qcfg.calibration_split
    dev = sample_split(data, budget_split, qcfg.budget_samples, seed + 1)
    names = dev.features["ner_tags"].feature.names
    gold = [[names[t] for t in tags] for tags in column(dev, "ner_tags")]
    dev_sentences = column(dev, "tokens")
    reference = np.concatenate(logits_of(dev_sentences))
    cache: dict[frozenset, tuple[float, float, float]] = {}

    def run(int8_layers) -> tuple[float, float, float]:
        """(F1, logits MSE, argmax agreement) with these layers int8."""
        key = frozenset(int8_layers)
        if key not in cache:
            with simulated_int8(model, ranges, qcfg.quantize_per_channel, key, weight_qmax):
                out = logits_of(dev_sentences)
            f1 = ner_metrics(gold, [decode(o, meta.labels, decode_method, meta.crf) for o in out])["f1"]
            flat = np.concatenate(out)
            cache[key] = (f1, float(((flat - reference) ** 2).mean()), float((flat.argmax(-1) == reference.argmax(-1)).mean()))
        return cache[key]

    f1_fp32 = run(())[0]
    sensitivity = {}
    for i, name in enumerate(layers):
        f1, mse, agree = run({name})
        sensitivity[name] = {"f1_drop": round((f1_fp32 - f1) * 100, 4), "logits_mse": mse, "argmax_agreement": agree}
        reporter.progress(i + 1, len(layers), "layers", step="sensitivity")
    kept, steps = accuracy_budget(layers, lambda s: run(s)[0], qcfg.max_f1_drop, sensitivity, qcfg.keep_fp32)
    f1_int8, mse, agree = run(set(layers) - kept)
    reporter.log(
        f"int8: {len(layers) - len(kept)}/{len(layers)} linear layers int8, {len(kept)} kept fp32; "
        f"simulated {budget_split} F1 {f1_fp32:.4f} -> {f1_int8:.4f} (budget {qcfg.max_f1_drop} points)"
    )
    candidates = linear_layers(model)
    payload = {
        "settings": qcfg.model_dump(mode="json"),
        "per_channel": qcfg.quantize_per_channel,
        "layers": {n: {"key": weight_key(layer_weight(candidates[n]).detach().float().numpy()), "range": list(ranges[n])} for n in layers},
        "keep_fp32": sorted(kept),
        "sensitivity": sensitivity,
        "budget": {
            "split": budget_split,
            "sentences": len(dev),
            "max_f1_drop": qcfg.max_f1_drop,
            "f1_fp32": f1_fp32,
            "f1_int8_simulated": f1_int8,
            "argmax_agreement": agree,
            "logits_mse": mse,
            "steps": steps,
            "weight_qmax": weight_qmax,
        },
        "calibration": {"split": qcfg.calibration_split, "sentences": len(calib), "mode": qcfg.calibrate_mode},
    }
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    write_json(out_path, payload)
    return out_path
