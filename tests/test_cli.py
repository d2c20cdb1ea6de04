import os
import subprocess
import sys

import pytest

from workbench.cli import main

from conftest import REPO


def test_validate_prints_the_resolved_config(capsys):
    assert main(["validate", os.path.join(REPO, "configs", "quickstart.yaml")]) == 0
    out = capsys.readouterr()
    assert "preset: bilstm" in out.out and "valid" in out.err


def test_bad_config_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epoch: 3\n", encoding="utf-8")
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert "train.epoch: unknown key" in err and len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / "runs" / "registry.sqlite")  # failed before any work


def test_bad_override_exits_2(tmp_path, capsys):
    assert main(["run", os.path.join(REPO, "configs", "quickstart.yaml"), "--set", "train.epochs", "--runs-dir", str(tmp_path)]) == 2
    assert "--set needs KEY=VALUE" in capsys.readouterr().err


def test_missing_model_exits_2(tmp_path, capsys):
    assert main(["tag", "--model", "no-such-run", "--runs-dir", str(tmp_path), "你好"]) == 2
    assert "no run or directory 'no-such-run'" in capsys.readouterr().err


def test_incomplete_model_directory_exits_2(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert main(["tag", "--model", str(tmp_path / "m"), "--runs-dir", str(tmp_path), "你好"]) == 2
    assert "not a complete model directory (missing workbench.json)" in capsys.readouterr().err


def test_unknown_engine_exits_2(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    assert main(["eval", "--model", str(tmp_path / "m"), "--runs-dir", str(tmp_path), "--engine", "tvm-fp32"]) == 2
    assert "holds no trained model" in capsys.readouterr().err


def test_console_script_exit_code_and_empty_history(tmp_path):
    env = dict(os.environ, NER_WORKBENCH_RUNS=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "workbench.cli", "runs"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "no runs yet" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "workbench.cli", "validate", "nope.yaml"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "nope.yaml: no such config file" in bad.stderr


def test_a_negative_tuning_budget_is_refused_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compile", "--model", "any", "--runs-dir", str(tmp_path), "--tune-trials", "-5"])
    assert exit_info.value.code == 2
    assert "argument --tune-trials: -5 is below 0" in capsys.readouterr().err


def test_delete_by_name_and_every_unfinished_run(tmp_path, capsys):
    from conftest import finished_run
    from pipelines.config import parse_config
    from workbench.store import RunStore

    runs = str(tmp_path / "runs")
    store = RunStore(runs)
    kept, named = finished_run(store, "kept"), finished_run(store, "named")
    broken = store.create_run(parse_config({"name": "broken"}))
    store.stage_started(broken.id, "train")
    store.stage_failed(broken.id, "train", "boom")

    assert main(["delete", "named", "--unfinished", "--runs-dir", runs]) == 0
    out = capsys.readouterr().out
    assert f"deleted {named.id} (done" in out and f"deleted {broken.id} (failed" in out
    assert [r.id for r in RunStore(runs).list_runs()] == [kept.id]
    assert main(["delete", "no-such-run", "--runs-dir", runs]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err
    assert main(["delete", "--runs-dir", runs]) == 2
    assert "name the runs to delete, or pass --unfinished" in capsys.readouterr().err


def test_delete_takes_an_id_prefix_only_when_asked(tmp_path, capsys):
    from conftest import finished_run
    from workbench.store import RunStore

    runs = str(tmp_path / "runs")
    run = finished_run(RunStore(runs), "kept")
    prefix = run.id[:4]  # e.g. "2026": every run of the year
    assert main(["delete", prefix, "--runs-dir", runs]) == 2
    assert f"no run {prefix!r} (an id prefix deletes only with --prefix)" in capsys.readouterr().err
    assert [r.id for r in RunStore(runs).list_runs()] == [run.id]
    assert main(["delete", prefix, "--prefix", "--runs-dir", runs]) == 0
    assert RunStore(runs).list_runs() == []


def test_the_summary_gives_a_resumed_stage_its_time_across_resumes():
    from workbench.cli import _took

    assert _took({"seconds": 95.2}) == "95 s"
    assert _took({"seconds": 1.6, "total_seconds": 1537.5}) == "2 s (1,538 s across resumes)"
    assert _took({"seconds": 95.2, "total_seconds": 95.2}) == "95 s"


def test_the_command_table_and_the_parser_agree():
    """The jobs backend reads workbench.commands, the CLI its parser: they name the same commands."""
    import argparse

    from workbench.cli import build_parser
    from workbench.commands import COMMANDS, command_names

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == command_names()
    helps = {action.dest: action.help for action in sub._choices_actions}
    assert helps == {c.name: c.help for c in COMMANDS}


@pytest.mark.parametrize("name", ["run", "train", "validate", "export", "eval", "infer", "compile", "bench", "report"])
def test_a_jobs_command_line_parses_as_the_cli_reads_it(name):
    from workbench.cli import build_parser
    from workbench.commands import BY_NAME, job_argv

    args = build_parser().parse_args(job_argv(name, "TARGET", "/runs", engine="ort-int8"))
    assert args.command == name
    takes = BY_NAME[name].takes
    target = args.config if takes == "config" else args.runs if takes == "runs" else args.model
    assert target == (["TARGET"] if takes == "runs" else "TARGET")
    assert getattr(args, "runs_dir", None) == (None if name == "validate" else "/runs")
    if name in ("eval", "infer"):
        assert args.engine == "ort-int8"


def test_a_command_that_takes_no_target_has_no_job():
    from workbench.commands import job_argv

    with pytest.raises(ValueError, match="tag: not a command a job can run"):
        job_argv("tag", "x", "/runs")


def test_an_unexpected_error_of_a_command_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    """One line on the terminal, and the traceback in the store's errors/ (it was lost for
    commands that are not stages: they have no run error.log)."""
    import pipelines.runtime.tagger as tagger

    def broken(*args, **kwargs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(tagger.Tagger, "open", classmethod(broken))
    runs = str(tmp_path / "runs")
    assert main(["tag", "--model", str(tmp_path), "--runs-dir", runs, "你好"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: RuntimeError: kernel exploded (traceback: ") and len(err.splitlines()) == 1
    [log] = os.listdir(os.path.join(runs, "errors"))
    assert log.endswith("-tag.log")
    text = open(os.path.join(runs, "errors", log), encoding="utf-8").read()
    assert "Traceback (most recent call last)" in text and "in broken" in text and "kernel exploded" in text
