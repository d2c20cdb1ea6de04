"""int8 compile path: the VNNI kernel, the Relax rewrite on the toy model, the accuracy budget."""

import json
import os

import numpy as np
import pytest

from pipelines.compile.calibrate import accuracy_budget
from pipelines.config import parse_config
from pipelines.runtime.engines import compiled_artifacts, open_engine
from pipelines.events import Reporter
from pipelines.compile.quantize import int8_linear_reference


def _has_vnni() -> bool:
    """The product's own check, on the target the compile stage builds for."""
    from pipelines.compile.compiler import host_target
    from pipelines.compile.int8 import has_vnni

    return has_vnni(host_target())


needs_vnni = pytest.mark.skipif(not _has_vnni(), reason="the int8 kernel needs AVX-512 VNNI")


@pytest.mark.parametrize("vnni", [pytest.param(True, marks=needs_vnni), False], ids=["vnni", "int32-vectors"])
def test_kernel_matches_the_integer_reference_and_uses_vpdpbusd_only_with_vnni(vnni):
    import tvm

    from pipelines.compile.compiler import host_target
    from pipelines.compile.int8 import count_vnni, int8_linear_func, pack_weight
    from pipelines.compile.quantize import activation_params, quantize_weight, weight_scales

    rng = np.random.default_rng(0)
    m, k, n = 24, 64, 48  # rows not a multiple of 8, 3 blocks of 16 channels: the fallback tilings
    x = rng.normal(size=(m, k)).astype(np.float32)
    w = (rng.normal(size=(n, k)) * 0.1).astype(np.float32)
    bias = rng.normal(size=n).astype(np.float32)
    lo, hi = -2.0, 3.0
    scale, zero = activation_params(lo, hi)
    sw = weight_scales(w)
    wq = quantize_weight(w, sw)
    mul = (scale * sw).astype(np.float32)
    off = (bias - zero * wq.astype(np.int64).sum(1) * mul).astype(np.float32)
    # Without VNNI the kernel must build for a CPU that lacks it (LLVM aborts on vpdpbusd there).
    target = host_target() if vnni else {"kind": "llvm", "mcpu": "haswell"}
    lib = tvm.compile(tvm.IRModule({"main": int8_linear_func(m, k, n, scale, zero, vnni)}), target=tvm.target.Target(target))
    assert (count_vnni(lib) > 0) == vnni
    dev = tvm.cpu()
    out = tvm.runtime.tensor(np.zeros((m, n), np.float32), dev)
    lib["main"](*(tvm.runtime.tensor(a, dev) for a in (x, pack_weight(wq), mul, off)), out)
    expected = int8_linear_reference(x, w, bias, (lo, hi))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-4)


def test_pack_weight_puts_16_channels_by_4_inputs_in_one_vector():
    w = np.arange(32 * 8, dtype=np.int64).reshape(32, 8).astype(np.int8)
    packed = pack_weight_of(w)
    assert packed.shape == (2, 2, 16, 4)
    assert packed[1, 1, 3].tolist() == w[16 + 3, 4:8].tolist()


def pack_weight_of(w):
    from pipelines.compile.int8 import pack_weight

    return pack_weight(w)


def test_budget_keeps_the_layer_that_is_forced_to_be_sensitive():
    layers = ["a", "b", "c", "d"]
    cost = {"a": 0.001, "b": 0.02, "c": 0.0005, "d": 0.001}  # F1 (fraction) each layer loses when int8
    f1_of = lambda int8: 0.9 - sum(cost[n] for n in int8)  # noqa: E731
    sensitivity = {n: {"f1_drop": cost[n] * 100, "logits_mse": 0.0} for n in layers}
    kept, steps = accuracy_budget(layers, f1_of, 0.3, sensitivity)
    assert kept == {"b"}
    assert steps[0]["kept_fp32"] == "b" and steps[-1]["f1_drop"] <= 0.3
    # No budget: everything int8; an impossible one: everything back to fp32.
    assert accuracy_budget(layers, f1_of, None, sensitivity)[0] == set()
    assert accuracy_budget(layers, f1_of, -1.0, sensitivity)[0] == set(layers)
    # A layer the user keeps is never int8, and the budget starts from the rest.
    kept, steps = accuracy_budget(layers, f1_of, 0.3, sensitivity, forced=["b"])
    assert kept == {"b"} and steps == [{"int8_layers": 3, "f1_drop": pytest.approx(0.25)}]


SABOTAGED = "bert.encoder.layer.1.output.dense"


@pytest.fixture(scope="module")
def int8_run(toy_run, tmp_path_factory):
    """The toy run compiled at int8, one layer's calibration range sabotaged (all it
    sees clips to +-1e-3) and that layer kept fp32 by config. (The toy model has
    memorised its corpus: no single int8 layer moves its F1, so the budget alone
    would keep nothing; ``test_budget_keeps_...`` covers the budget's choice.)"""
    import shutil

    import pipelines.compile.calibrate as calibrate
    from pipelines.stages import stage_compile

    run_dir = str(tmp_path_factory.mktemp("int8") / "run")
    shutil.copytree(toy_run[0].dir, run_dir, ignore=shutil.ignore_patterns("compiled"))
    cfg = parse_config(
        {
            **{k: v for k, v in _config(run_dir).items() if k in ("data", "model", "seed")},
            "export": {"shape": [1, 16]},
            "compile": {"precisions": ["int8"], "quantize": {"get_data_num": 16, "budget_samples": 32, "max_f1_drop": 0.3, "keep_fp32": [SABOTAGED]}},
        }
    )
    real_observe = calibrate.observe

    def observe(*args, **kwargs):
        ranges = real_observe(*args, **kwargs)
        ranges[SABOTAGED] = (-1e-3, 1e-3)
        return ranges

    calibrate.observe = observe
    try:
        events = []
        stage_compile(cfg, run_dir, Reporter(events.append, stage="compile"))
    finally:
        calibrate.observe = real_observe
    return run_dir, events


def _config(run_dir):
    import yaml

    with open(os.path.join(run_dir, "config.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_int8_artifact_agrees_with_fp32_and_records_its_report(int8_run):
    run_dir, events = int8_run
    [art] = compiled_artifacts(run_dir, "tvm-int8")
    meta = json.load(open(os.path.join(art, "artifact.json")))
    q = meta["quantization"]
    assert meta["engine"] == "tvm-int8" and meta["precision"] == "int8"
    # VNNI where the CPU has it; elsewhere the int32-vector kernel, and the record says so.
    assert (q["vpdpbusd"] > 0) == _has_vnni() and q["kernel"].startswith("vnni") == _has_vnni()
    assert q["calibration"]["split"] == "train"
    # The sabotaged layer is the most sensitive, and kept in fp32: not rewritten.
    assert q["keep_fp32"] == [SABOTAGED]
    worst = max(q["layers"], key=lambda n: q["layers"][n]["sensitivity"]["logits_mse"])
    assert worst == SABOTAGED and not q["layers"][SABOTAGED]["int8"]
    assert q["layers"][SABOTAGED]["reason"].startswith("kept in fp32")
    assert q["int8_layers"] == len(q["layers"]) - 1 and q["budget"]["steps"][-1]["f1_drop"] <= 0.3
    assert "classifier" not in q["layers"]  # 7 labels: not tileable by 16-channel blocks, stays fp32

    rng = np.random.default_rng(1)
    ids = rng.integers(672, 7992, size=(8, 16)).astype(np.int64)
    ids[:4, :7] = [[2476, 676, 1762, 1266, 776, 2339, 868]]  # 张三在北京工作
    mask = np.ones_like(ids)
    ref = open_engine("torch", run_dir).logits(ids, mask)
    int8 = open_engine("tvm-int8", run_dir).logits(ids, mask)
    assert (int8.argmax(-1) == ref.argmax(-1)).mean() >= 0.95
    assert np.abs(int8 - ref).max() > 0  # really quantised, not the fp32 graph
    # Far closer to fp32 than the sabotaged layer alone would be: it was not quantised.
    assert ((int8 - ref) ** 2).mean() < q["layers"][SABOTAGED]["sensitivity"]["logits_mse"] / 10


def test_compare_rows_show_the_layers_int8_kept(int8_run):
    from workbench.compare import compiled_artifact

    artifact = compiled_artifact(int8_run[0], "tvm-int8")
    assert artifact["int8_kept"] == 1 and artifact["bytes"] > 0


def test_ort_static_int8_is_calibrated_on_the_run_and_agrees(int8_run):
    run_dir, _ = int8_run
    ids = np.random.default_rng(2).integers(672, 7992, size=(4, 16)).astype(np.int64)
    mask = np.ones_like(ids)
    static = open_engine("ort-int8-static", run_dir)
    assert os.path.isfile(os.path.join(run_dir, "onnx", "model.int8-static.onnx"))
    ref = open_engine("torch", run_dir).logits(ids, mask)
    assert (static.logits(ids, mask).argmax(-1) == ref.argmax(-1)).mean() >= 0.9


def test_vendor_int8_config_maps_onto_compile_quantize():
    from pipelines.config import load_config

    from conftest import REPO

    cfg = load_config(os.path.join(REPO, "configs", "compile_vendor_int8.yaml"))
    q = cfg.compile.quantize
    assert cfg.compile.precisions == ["int8"]
    assert (q.calibrate_mode, q.quantize_per_channel, q.calibrate_range, q.get_data_num) == ("percentile", True, 0.99999, 500)
    assert q.calibration_split == "train"
    assert any("dataset.path" in n and "never test" in n for n in cfg.compile.notices)


def test_compile_report_table_lists_every_layer_and_the_kept_one(int8_run):
    from rich.console import Console

    from workbench.int8_report import quantization_table

    [art] = compiled_artifacts(int8_run[0], "tvm-int8")
    console = Console(width=100, record=True)
    console.print(quantization_table(json.load(open(os.path.join(art, "artifact.json")))["quantization"]))
    text = console.export_text()
    assert "11 linear layers int8, 1 kept fp32" in text and "vpdpbusd" in text
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.startswith("│")}
    assert "fp32 kept" in rows["1.output"] and "int8" in rows["0.attn.query"]
