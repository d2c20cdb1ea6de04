"""Compile targets: named presets, cross-compiled artifacts and what they need to run."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from pipelines.config import ConfigError, parse_config, parse_target
from pipelines.runtime.engines import EngineError, runs_here


@pytest.mark.parametrize("spec", ["x86-avx3", "arm64", {"kind": "tpu"}, '{"kind": "llvm"'])
def test_an_unknown_target_is_one_line_naming_the_presets(spec):
    with pytest.raises(ConfigError) as err:
        parse_config({"compile": {"target": spec}})
    message = str(err.value)
    assert len(message.splitlines()) == 1
    if not (isinstance(spec, str) and spec.startswith("{")):
        assert "host, x86-avx512, x86-avx2, x86-avx2-vnni, aarch64, cuda" in message


def test_presets_and_tvm_dicts_are_accepted():
    assert parse_target("x86-avx2") == "x86-avx2"
    assert parse_target('{"kind": "llvm", "mcpu": "znver3"}') == {"kind": "llvm", "mcpu": "znver3"}
    assert parse_target("cuda") == "cuda"
    from pipelines.compile.compiler import resolve_target

    assert resolve_target("x86-avx2") == {"kind": "llvm", "mcpu": "haswell"}
    assert resolve_target("host")["kind"] == "llvm"


def test_the_cli_refuses_an_unknown_target_in_one_line(toy_run, capsys):
    from workbench.cli import main

    assert main(["compile", "--model", toy_run[0].dir, "--target", "x86-avx3", "--runs-dir", toy_run[4]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "x86-avx3" in err and "aarch64" in err


def test_an_artifact_says_what_it_needs_and_refuses_a_machine_without_it():
    avx512 = {"arch": "x86_64", "cpu_flags": ["avx2", "avx512f", "fma"]}
    assert runs_here(avx512, "x86_64", {"avx2", "fma", "avx512f", "sse2"}) == ""
    assert "avx512f, which this CPU lacks" in runs_here(avx512, "x86_64", {"avx2", "fma"})
    assert "its code is aarch64, this machine is x86_64" in runs_here({"arch": "aarch64"}, "x86_64", {"avx2"})
    assert runs_here({"arch": "x86_64", "cpu_flags": ["avx2"]}, "x86_64", set()) == ""  # no cpuinfo: let it try


def test_an_aarch64_artifact_builds_here_with_a_manifest_of_what_it_needs(toy_run, tmp_path):
    from pipelines.events import Reporter
    from pipelines.runtime.engines import open_engine
    from pipelines.stages import stage_compile

    run_dir = str(tmp_path / "run")
    shutil.copytree(os.path.join(toy_run[0].dir, "model"), os.path.join(run_dir, "model"))
    cfg = parse_config({"export": {"shape": [1, 16]}, "compile": {"precisions": ["fp32"], "target": "aarch64"}})
    logs = []
    stage_compile(cfg, run_dir, Reporter(lambda e: logs.append(e.message) if e.kind == "log" else None))
    artifact = os.path.join(run_dir, "compiled", "tvm-fp32-1x16")
    meta = json.load(open(os.path.join(artifact, "artifact.json")))
    assert meta["library"] == "model.tar" and os.path.getsize(os.path.join(artifact, "model.tar")) > 100_000
    needs = meta["requires"]
    assert needs["arch"] == "aarch64" and needs["python"] == ["numpy"] and needs["tvm"]
    assert "cc" in needs["link"] and "aarch64" in meta["target"]
    assert any("cross-compiled for aarch64" in m for m in logs)
    with pytest.raises(EngineError, match="its code is aarch64, this machine is x86_64"):
        open_engine("tvm-fp32", run_dir)
