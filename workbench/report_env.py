"""The report's environment: this machine's CPU, instruction sets and library versions,
the workbench's commit, and the machine each run's bench measured on (its numbers
belong to that machine, which need not be this one)."""

from __future__ import annotations

import os
import platform
import subprocess

# What the compile target and training precision hinge on, and the flags that show it.
ISA = (("AVX-512", ("avx512f",)), ("AVX2", ("avx2",)), ("VNNI", ("avx512_vnni", "avx_vnni")), ("AMX", ("amx_tile", "amx_int8", "amx_bf16")))
LIBRARIES = (("torch", "torch_version"), ("TVM", "tvm_version"), ("ONNX Runtime", "onnxruntime_version"))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_dict(path: str) -> dict:
    """A JSON object from a run's file; {} when it is missing, torn or not an object: a
    report says what is missing, it never fails on it."""
    from pipelines.files import read_json

    try:
        found = read_json(path, {})
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def environment(runs) -> list[list[str]]:
    """Rows of (what, value) for ``runs`` (anything with ``id`` and ``dir``)."""
    from pipelines.cpu import cpu_flags
    from pipelines.evaluate.bench import machine_info

    info = machine_info()
    rows = [
        ["CPU", info.get("cpu") or info.get("processor") or "unknown"],
        ["cores", str(info.get("cores") or "unknown")],
        ["instruction sets", isa_line(cpu_flags())],
        ["Python", platform.python_version()],
        *([name, info.get(key, "not installed")] for name, key in LIBRARIES),
        ["transformers", _version("transformers")],
        ["workbench commit", git_commit()],
    ]
    for run in runs:
        machine = read_dict(os.path.join(run.dir, "bench.json")).get("machine")
        if isinstance(machine, dict):
            versions = ", ".join(f"{name} {machine[key]}" for name, key in LIBRARIES if machine.get(key))
            rows.append([f"bench.json of {run.id}", f"{machine.get('cpu') or 'unknown CPU'}, {machine.get('cores', '?')} cores; {versions}"])
    return rows


def isa_line(flags: set[str]) -> str:
    """e.g. "AVX-512 yes · AVX2 yes · VNNI yes (avx512_vnni) · AMX no"."""
    if not flags:
        return "unknown (no /proc/cpuinfo)"
    parts = []
    for name, names in ISA:
        found = [f for f in names if f in flags]
        detail = f" ({', '.join(found)})" if len(names) > 1 and found else ""
        parts.append(f"{name} {'yes' if found else 'no'}{detail}")
    return " · ".join(parts)


def git_commit() -> str:
    """The workbench's short commit, marked when the tree has uncommitted changes; "unknown"
    outside a git checkout (an installed package)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10, check=False)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def _version(package: str) -> str:
    # The installed distribution's version, without importing it (transformers takes seconds).
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"
