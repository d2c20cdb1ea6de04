"""`ner-workbench import`: a run made by another store (another machine) becomes a run here."""

import os
import shutil

import pytest

from workbench.cli import main
from workbench.store import RunStore


@pytest.fixture
def foreign_run(toy_run, tmp_path):
    """A copy of the finished toy run, as it arrives from the machine that trained it
    (the shared toy run itself is only read)."""
    run, *_ = toy_run
    copy = tmp_path / "from-the-trainer" / os.path.basename(run.dir)
    shutil.copytree(run.dir, copy, ignore=shutil.ignore_patterns("compiled", "onnx", "bench.json"))
    return str(copy)


def _leftovers(runs: str) -> list[str]:
    """What the runs directory holds besides its registry (and SQLite's WAL files)."""
    return sorted(name for name in os.listdir(runs) if not name.startswith("registry.sqlite"))


def _import(capsys, *argv) -> tuple[int, str, str]:
    code = main(["import", *argv])
    out = capsys.readouterr()
    return code, out.out.strip(), out.err.strip()


def test_an_imported_run_is_a_finished_run_and_export_works_on_it(foreign_run, tmp_path, capsys):
    runs = str(tmp_path / "deploy-runs")
    code, run_id, err = _import(capsys, foreign_run, "--runs-dir", runs)
    assert code == 0 and f"as run {run_id}: copied" in err and "finished stages: train, export, eval" in err
    store = RunStore(runs)
    [run] = store.list_runs()
    assert run.id == run_id and run.name == "toy" and run.status == "done"
    assert run.dir == os.path.join(store.runs_dir, run_id) and os.path.isdir(os.path.join(run.dir, "model"))
    assert [s.stage for s in run.stages] == ["train", "export", "eval"] and {s.status for s in run.stages} == {"done"}
    assert run.stage("train").metrics["best_dev_f1"] > 0 and run.test_f1() is not None  # its metrics came along
    assert sorted(os.listdir(os.path.dirname(foreign_run))) == [os.path.basename(foreign_run)]  # the source is untouched

    assert main(["export", "--model", run_id, "--runs-dir", runs, "--quiet"]) == 0
    assert "export parity" in capsys.readouterr().out
    again = RunStore(runs).get(run_id)
    assert again.status == "done" and again.stage("export").finished > run.stage("export").finished


def test_importing_twice_records_one_run(foreign_run, tmp_path, capsys):
    runs = str(tmp_path / "deploy-runs")
    _, first, _ = _import(capsys, foreign_run, "--runs-dir", runs)
    code, second, err = _import(capsys, foreign_run, "--runs-dir", runs)
    assert code == 0 and second == first and f"already run {first} of this store (the same model), nothing imported" in err
    other_copy = str(tmp_path / "another-copy")
    shutil.copytree(foreign_run, other_copy)  # the same run, found by its model's fingerprint
    assert _import(capsys, other_copy, "--runs-dir", runs)[1] == first
    copied = RunStore(runs).get(first).dir
    code, same, err = _import(capsys, copied, "--runs-dir", runs)  # the store's own copy
    assert same == first and "(the same directory)" in err
    assert len(RunStore(runs).list_runs()) == 1 and _leftovers(runs) == [first]  # no half-made copy left


def test_a_run_made_in_this_store_is_not_imported_again(foreign_run, tmp_path, capsys):
    """Runs made here keep no fingerprint: one whose config is the same text is fingerprinted."""
    from pipelines.config import load_config

    runs = str(tmp_path / "runs")
    store = RunStore(runs)
    native = store.create_run(load_config(os.path.join(foreign_run, "config.yaml")))
    shutil.copytree(os.path.join(foreign_run, "model"), os.path.join(native.dir, "model"))
    store.run_finished(native.id)
    copy = str(tmp_path / "copied-off-and-back")
    shutil.copytree(native.dir, copy)
    code, found, err = _import(capsys, copy, "--runs-dir", runs)
    assert code == 0 and found == native.id and "(the same model)" in err


def test_in_place_registers_without_copying(foreign_run, tmp_path, capsys):
    runs = str(tmp_path / "deploy-runs")
    code, run_id, err = _import(capsys, foreign_run, "--in-place", "--runs-dir", runs)
    assert code == 0 and "registered in place" in err
    run = RunStore(runs).get(run_id)
    assert run.dir == foreign_run and os.path.isfile(os.path.join(foreign_run, "imported.json"))
    assert main(["delete", run_id, "--runs-dir", runs]) == 0  # forgotten, never removed: it is not the store's
    assert os.path.isdir(os.path.join(foreign_run, "model"))


def test_a_command_given_a_foreign_run_directory_imports_it(foreign_run, tmp_path, capsys):
    """It used to refuse: `DIR: export works on a run`."""
    runs = str(tmp_path / "deploy-runs")
    assert main(["export", "--model", foreign_run, "--runs-dir", runs, "--quiet"]) == 0
    err = capsys.readouterr().err
    [run] = RunStore(runs).list_runs()
    assert f"imported {foreign_run} as run {run.id} (registered in place)" in err
    assert run.dir == foreign_run and run.stage("export").status == "done"
    assert main(["runs", "--runs-dir", runs]) == 0 and len(RunStore(runs).list_runs()) == 1
    # A copy of it is the same run: the command says which directory it works in.
    copy = str(tmp_path / "copy")
    shutil.copytree(foreign_run, copy)
    capsys.readouterr()
    assert main(["export", "--model", copy, "--runs-dir", runs, "--quiet"]) == 0
    assert f"{copy}: run {run.id} of this store (the same model); its directory {foreign_run} is the one used" in capsys.readouterr().err


@pytest.mark.parametrize(
    "keep, missing",
    [(("config.yaml",), "model/"), (("model",), "config.yaml"), (("metrics.json",), "config.yaml and model/")],
)
def test_a_directory_that_is_not_a_run_is_refused_naming_what_it_lacks(foreign_run, tmp_path, capsys, keep, missing):
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in keep:
        src = os.path.join(foreign_run, name)
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, partial / name)
    runs = str(tmp_path / "deploy-runs")
    code, out, err = _import(capsys, str(partial), "--runs-dir", runs)
    assert code == 2 and out == ""
    assert err == f"error: {partial}: not a run directory (missing {missing})"
    assert RunStore(runs).list_runs() == [] and _leftovers(runs) == []
    assert main(["bench", "--model", str(partial), "--runs-dir", runs]) == 2
    assert f"{partial}: bench works on a run, and this directory has no {missing.replace(' and ', ' or ')}" in capsys.readouterr().err


def test_importing_a_missing_directory_is_one_line(tmp_path, capsys):
    code, _, err = _import(capsys, str(tmp_path / "nowhere"), "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and err == f"error: {tmp_path / 'nowhere'}: no such directory"
