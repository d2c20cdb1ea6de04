"""The reference recipe's compiler YAML keys, read into our compile section.

Users arrive with a vendor compiler config (``name``, ``frontend``, ``dataset``,
``backend``, ``workspace``). Each key either maps onto ours or is reported as
meaning nothing here; none is silently ignored.
"""

from __future__ import annotations

from typing import Any

VENDOR_KEYS = ("name", "frontend", "dataset", "backend", "workspace")
_KNOWN = {
    "frontend": {"checkpoint", "shape", "type", "dtype"},
    "dataset": {"path", "sampler"},
    "backend": {"type", "dtype", "compile", "quantize"},
    "workspace": {"path"},
}


def translate(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(our compile keys, notices). Raises ValueError for what cannot be mapped."""
    ours = {k: v for k, v in raw.items() if k not in VENDOR_KEYS}
    notices: list[str] = []
    for section, allowed in _KNOWN.items():
        value = raw.get(section) or {}
        if not isinstance(value, dict):
            raise ValueError(f"{section}: must be a mapping (keys: {', '.join(sorted(allowed))})")
        for key in sorted(set(value) - allowed):
            raise ValueError(f"{section}.{key}: unknown key (allowed: {', '.join(sorted(allowed))})")
    if "name" in raw:
        notices.append(f"name {raw['name']!r}: artifacts are named tvm-<precision>-<shape> inside the run")
    frontend, backend = raw.get("frontend") or {}, raw.get("backend") or {}
    if "checkpoint" in frontend:
        notices.append("frontend.checkpoint: not read; the run's own model is exported and compiled")
    if frontend.get("type", "pytorch") not in ("pytorch", "torch"):
        raise ValueError(f"frontend.type: {frontend['type']!r} is not supported (pytorch)")
    if frontend.get("dtype", "int64") not in ("int64", "int32"):
        raise ValueError(f"frontend.dtype: {frontend['dtype']!r} is not supported for token ids (int64)")
    if "shape" in frontend:
        shape = frontend["shape"]
        ours["shapes"] = [shape] if shape and not isinstance(shape[0], (list, tuple)) else shape
    if "type" in backend:
        if backend["type"] not in ("tvm_vacc", "tvm"):
            raise ValueError(f"backend.type: {backend['type']!r} is not supported (tvm, or tvm_vacc read as tvm)")
        if backend["type"] == "tvm_vacc":
            notices.append("backend.type tvm_vacc: compiled with Apache TVM for this machine's target instead")
    if "dtype" in backend:
        ours["precisions"] = [backend["dtype"]]
    if "compile" in backend:
        notices.append(f"backend.compile {backend['compile']!r}: compiling is what this stage does; not needed")
    quantize = _quantize_keys(backend.get("quantize") or {}, raw.get("dataset") or {}, notices)
    if quantize:
        ours["quantize"] = {**(ours.get("quantize") or {}), **quantize}
        if backend.get("dtype") != "int8":
            notices.append("backend.quantize / dataset.sampler: int8 calibration settings, used only when int8 is built")
    if "workspace" in raw:
        notices.append("workspace.path: not used; artifacts go to the run's compiled/ directory")
    return ours, notices


_QUANTIZE_KEYS = ("calibrate_mode", "quantize_per_channel", "calibrate_range")


def _quantize_keys(quantize: dict, dataset: dict, notices: list[str]) -> dict[str, Any]:
    """backend.quantize and dataset.sampler -> our compile.quantize (validated there)."""
    if not isinstance(quantize, dict):
        raise ValueError(f"backend.quantize: must be a mapping (keys: {', '.join(_QUANTIZE_KEYS)})")
    for key in sorted(set(quantize) - set(_QUANTIZE_KEYS)):
        raise ValueError(f"backend.quantize.{key}: unknown key (allowed: {', '.join(_QUANTIZE_KEYS)})")
    ours = dict(quantize)
    sampler = dataset.get("sampler") or {}
    if not isinstance(sampler, dict) or set(sampler) - {"get_data_num"}:
        raise ValueError("dataset.sampler: only get_data_num is understood (calibration sentences)")
    if "get_data_num" in sampler:
        ours["get_data_num"] = sampler["get_data_num"]
    if "path" in dataset:
        notices.append(
            f"dataset.path {dataset['path']!r}: not read; int8 calibration draws from the run's own data "
            "(compile.quantize.calibration_split, train by default, never test)"
        )
    return ours
