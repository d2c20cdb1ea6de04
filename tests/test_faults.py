"""Crash safety: a stage process killed with SIGKILL at the worst moments loses no
finished artifact, and the store tells the truth about every run afterwards.

Each test runs the real CLI in a child process with ``NER_WORKBENCH_KILL_AT`` naming a
fail point (pipelines/faults.py): the process kills itself there with SIGKILL, as
``kill -9`` or the OOM killer would. Then a store is opened (its recovery runs) and
the run's state, its files and its leftovers are checked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, write_toy_corpus
from pipelines.faults import KILL_ENV


def cli(runs: str, *args: str, kill_at: str | None = None, swap_fallback: bool = False) -> subprocess.CompletedProcess:
    """``ner-workbench ARGS --runs-dir RUNS`` in a child process. ``swap_fallback``: as on a
    kernel or file system without ``renameat2``, directories are replaced by two renames."""
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop(KILL_ENV, None)
    if kill_at:
        env[KILL_ENV] = kill_at
    prelude = "import pipelines.files as f; f._exchange = lambda new, target: False; " if swap_fallback else ""
    code = prelude + "import sys; from workbench.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args, "--runs-dir", runs], capture_output=True, text=True, env=env, timeout=600)


def killed(proc: subprocess.CompletedProcess) -> bool:
    return proc.returncode == -signal.SIGKILL


@pytest.fixture
def config(tmp_path) -> str:
    corpus = str(tmp_path / "toy.txt")
    write_toy_corpus(corpus, copies=4)
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump({
        "name": "toy",
        "stages": ["train", "eval"],
        "data": {"source": "conll", "train": corpus, "dev": corpus, "test": corpus},
        "model": {"preset": "tiny", "max_length": 16, "dropout": 0.1},
        "train": {"epochs": 6, "batch_size": 4, "eval_every": 5, "learning_rate": 3e-3, "threads": 2},
        "export": {"shape": [1, 16]},
        "compile": {"precisions": ["fp32"], "shapes": [[1, 16]]},
    }), encoding="utf-8")
    return str(path)


def only_run(runs: str):
    from workbench.store import RunStore

    [run] = RunStore(runs).list_runs()
    return run


def stage_status(run) -> dict[str, str]:
    return {s.stage: s.status for s in run.stages}


def leftovers(run_dir: str) -> list[str]:
    """Temporaries of killed writers (see pipelines.files.repair_leftovers)."""
    return [os.path.join(folder, name) for folder, dirs, files in os.walk(run_dir) for name in dirs + files if ".tmp" in name]


def fingerprint(model_dir: str) -> str:
    from pipelines.modeling.models import model_fingerprint

    return model_fingerprint(model_dir)


def test_killed_mid_checkpoint_then_train_resume_ends_with_the_steps_of_an_uninterrupted_run(tmp_path, config):
    whole = cli(str(tmp_path / "whole"), "train", config)
    assert whole.returncode == 0, whole.stderr
    uninterrupted = json.load(open(os.path.join(only_run(str(tmp_path / "whole")).dir, "metrics.json")))["train"]

    runs = str(tmp_path / "runs")
    # The 2nd checkpoint (step 10) is killed after its files are written, before they replace the 1st.
    assert killed(cli(runs, "train", config, kill_at="replace_dir.filled@2~train-checkpoint"))
    run = only_run(runs)
    assert run.status == "interrupted" and stage_status(run) == {"train": "interrupted"}
    assert leftovers(run.dir) == []  # the half-swapped checkpoint was cleared by recovery
    from pipelines.modeling.models import load_model

    load_model(os.path.join(run.dir, "model"))  # the best model so far is whole

    resumed = cli(runs, "train", config, "--resume", run.id)
    assert resumed.returncode == 0, resumed.stderr
    result = json.load(open(os.path.join(run.dir, "metrics.json")))["train"]
    assert result["resumed_from"] == 5  # the 1st checkpoint, intact
    assert result["steps"] == uninterrupted["steps"] == 24
    assert (result["best_dev_f1"], result["best_step"]) == (uninterrupted["best_dev_f1"], uninterrupted["best_step"])
    assert fingerprint(os.path.join(run.dir, "model")) == fingerprint(os.path.join(only_run(str(tmp_path / "whole")).dir, "model"))
    run = only_run(runs)
    assert run.status == "done" and stage_status(run) == {"train": "done"}


def test_killed_between_the_two_renames_of_a_directory_swap_gets_the_old_directory_back(tmp_path, config):
    runs = str(tmp_path / "runs")
    assert cli(runs, "train", config).returncode == 0
    run = only_run(runs)
    model_dir = os.path.join(run.dir, "model")
    before = fingerprint(model_dir)
    # Train again in the same run with the two-rename swap: the first dev checkpoint
    # replaces model/, and the kill comes when the old one is aside and no new one is in.
    assert killed(cli(runs, "train", config, "--resume", run.id, swap_fallback=True, kill_at="replace_dir.aside~/model"))
    assert not os.path.exists(model_dir)
    run = only_run(runs)  # recovery runs here
    assert run.status == "interrupted" and stage_status(run) == {"train": "interrupted"}
    assert fingerprint(model_dir) == before
    assert leftovers(run.dir) == []


def test_killed_after_the_last_stage_the_run_reads_done_and_killed_mid_eval_write_keeps_the_scores(tmp_path, config):
    runs = str(tmp_path / "runs")
    assert killed(cli(runs, "run", config, kill_at="run.stages_finished"))
    run = only_run(runs)
    assert run.status == "done" and stage_status(run) == {"train": "done", "eval": "done"}
    evals = sorted(os.listdir(os.path.join(run.dir, "eval")))
    saved = {name: open(os.path.join(run.dir, "eval", name), "rb").read() for name in evals}
    assert any(name.endswith(".json") for name in evals) and any(name.endswith(".jsonl") for name in evals)

    # Evaluate again; killed with its first file written but not yet renamed into place.
    assert killed(cli(runs, "run", config, "--stages", "eval", "--resume", run.id, kill_at="atomic_path.written~eval"))
    run = only_run(runs)
    assert run.status == "interrupted" and stage_status(run) == {"train": "done", "eval": "interrupted"}
    assert {name: open(os.path.join(run.dir, "eval", name), "rb").read() for name in evals} == saved
    assert leftovers(run.dir) == []


def test_killed_mid_compile_the_stage_fails_and_the_last_artifact_still_tags(tmp_path, config):
    runs = str(tmp_path / "runs")
    assert cli(runs, "train", config).returncode == 0
    run = only_run(runs)
    assert cli(runs, "compile", "--model", run.id).returncode == 0
    artifact = os.path.join(run.dir, "compiled", "tvm-fp32-1x16")
    meta = open(os.path.join(artifact, "artifact.json"), "rb").read()

    # The compiler child is killed with its new artifact written beside the old one.
    failed = cli(runs, "compile", "--model", run.id, kill_at="replace_dir.filled~tvm-fp32")
    assert failed.returncode != 0 and "killed by SIGKILL" in failed.stdout + failed.stderr
    run = only_run(runs)
    compile_stage = next(s for s in run.stages if s.stage == "compile")
    assert run.status == "failed" and compile_stage.status == "failed" and "killed by SIGKILL" in compile_stage.error
    assert open(os.path.join(artifact, "artifact.json"), "rb").read() == meta
    assert leftovers(run.dir) == []
    tagged = cli(runs, "tag", "--model", run.id, "--engine", "tvm-fp32", "--json", "张三在北京工作")
    assert tagged.returncode == 0, tagged.stderr
