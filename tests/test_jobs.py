import os
import time

from workbench.jobs import list_jobs, start_job

from conftest import REPO


def test_job_records_events_log_and_exit_code(tmp_path):
    job = start_job(["validate", os.path.join(REPO, "configs", "quickstart.yaml")], str(tmp_path / "jobs"))
    state = job.wait(timeout=60)
    assert state.status == "done" and state.returncode == 0
    assert "name: quickstart" in job.log_tail(200)
    assert [j.id for j in list_jobs(str(tmp_path / "jobs"))] == [job.id]


def test_failing_job_reports_its_last_line(tmp_path):
    job = start_job(["validate", "missing.yaml"], str(tmp_path / "jobs"))
    state = job.wait(timeout=60)
    assert state.status == "failed" and state.returncode == 2
    assert "missing.yaml: no such config file" in state.message


def test_cancel_marks_the_stage_interrupted(tmp_path):
    cfg = tmp_path / "long.yaml"
    cfg.write_text(
        "name: long\nstages: [train]\ndata: {max_sentences: 2000}\ntrain: {epochs: 50, batch_size: 8}\n", encoding="utf-8"
    )
    runs = str(tmp_path / "runs")
    job = start_job(["run", str(cfg), "--runs-dir", runs, "--quiet"], str(tmp_path / "jobs"))
    deadline = time.monotonic() + 120
    seen = []
    while time.monotonic() < deadline and not any(e.kind == "progress" for e in seen):
        seen += job.new_events()
        time.sleep(0.2)
    assert any(e.kind == "progress" and e.unit == "steps" for e in seen), job.log_tail()
    job.cancel()
    state = job.wait(timeout=60)
    assert state.status == "cancelled"
    from workbench.store import RunStore

    [run] = RunStore(runs).list_runs()
    assert run.stage("train").status == "interrupted"
    assert any(e.kind == "failed" and e.message == "cancelled" for e in seen + job.new_events())


def test_a_job_cancelled_before_its_command_started_never_runs_it(tmp_path):
    """Cancel right after the start: the command's pid is not known yet (before, cancel
    did nothing then and the job ran to its end)."""
    cfg = tmp_path / "long.yaml"
    cfg.write_text("name: long\nstages: [train]\ndata: {max_sentences: 2000}\ntrain: {epochs: 50, batch_size: 8}\n", encoding="utf-8")
    runs = str(tmp_path / "runs")
    job = start_job(["run", str(cfg), "--runs-dir", runs, "--quiet"], str(tmp_path / "jobs"))
    job.cancel()
    state = job.wait(timeout=60)
    assert state.status == "cancelled", (state, job.log_tail())
    assert not any(e.kind == "progress" for e in job.new_events())


def test_a_job_between_its_spawn_and_its_recorded_pid_reads_as_starting(tmp_path):
    """Not 'crashed' for the moment before start_job records the supervisor's pid; a job
    that never got one long after its start did crash."""
    import json

    from workbench.jobs import Job

    young, old = tmp_path / "young", tmp_path / "old"
    for directory, created in ((young, time.time()), (old, time.time() - 600)):
        directory.mkdir()
        (directory / "job.json").write_text(json.dumps({"argv": ["run", "x.yaml"], "created": created}))
    assert Job(str(young)).state().status == "running"
    assert Job(str(old)).state().status == "crashed"
