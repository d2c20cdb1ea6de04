import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from pipelines.config import parse_config
from pipelines.files import replace_dir
from workbench.store import RunStore, model_label


def test_run_lifecycle(tmp_path):
    store = RunStore(str(tmp_path))
    run = store.create_run(parse_config({"name": "my run/1"}), "c.yaml")
    assert run.id.endswith("-my-run-1") and os.path.isfile(os.path.join(run.dir, "config.yaml"))
    store.stage_started(run.id, "train")
    store.stage_finished(run.id, "train", {"best_dev_f1": 0.5})
    store.stage_started(run.id, "eval")
    store.stage_finished(run.id, "eval", {"f1": 0.61})
    store.run_finished(run.id)
    again = RunStore(str(tmp_path)).get(run.id)
    assert again.status == "done"
    assert [(s.stage, s.status) for s in again.stages] == [("train", "done"), ("eval", "done")]
    assert again.test_f1() == 0.61
    assert store.find("my run/1").id == run.id and store.find(run.id[:10]).id == run.id
    assert store.find("no-such-run") is None
    assert store.find(run.dir).id == run.id


def test_a_copied_store_uses_its_own_runs_not_the_ones_it_was_copied_from(tmp_path):
    """The registry records each run's directory where it was made; a copy of the
    store (a backup, another machine) reads and writes the runs beside it."""
    store = RunStore(str(tmp_path / "a"))
    run = store.create_run(parse_config({"name": "quick", "model": {"preset": "bilstm"}}))
    student = store.create_run(parse_config({"name": "student", "model": {"pretrained": os.path.join(run.dir, "model")}}))
    store.close()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    copied = RunStore(str(tmp_path / "b"))
    copy = copied.find("quick")
    assert copy.id == run.id and copy.dir == os.path.join(str(tmp_path / "b"), run.id)
    # The student's recorded start is a path in the original store: still its run.
    assert model_label(copied.get(student.id), copied.list_runs()) == "bilstm from quick"
    assert RunStore(str(tmp_path / "a")).find("quick").dir == run.dir  # the original is unchanged
    shutil.rmtree(copy.dir)  # a run whose copy is gone keeps its recorded directory
    assert RunStore(str(tmp_path / "b")).find("quick").dir == run.dir


def test_model_label_names_the_run_a_model_came_from(tmp_path):
    store = RunStore(str(tmp_path))
    teacher = store.create_run(parse_config({"name": "teacher", "model": {"preset": "mini"}}))
    student = store.create_run(parse_config({"name": "student", "model": {"pretrained": os.path.join(teacher.dir, "model")}}))
    grandchild = store.create_run(parse_config({"name": "gen2", "model": {"pretrained": os.path.join(student.dir, "distilled")}}))
    hub = store.create_run(parse_config({"name": "hub", "model": {"pretrained": "bert-base-chinese"}}))
    for run in (hub, student):  # the student's teacher is where it started: said once
        store.stage_started(run.id, "distill")
        store.stage_finished(run.id, "distill", {"teacher": os.path.join(teacher.dir, "model")})
    runs = store.list_runs()
    assert model_label(store.get(teacher.id), runs) == "mini"
    assert model_label(store.get(student.id), runs) == "mini from teacher"
    assert model_label(store.get(grandchild.id), runs) == "mini from student"
    assert model_label(store.get(hub.id), runs) == "bert-base-chinese taught by teacher"
    store.delete_run(teacher.id)  # a deleted run's weights: the path, as configured
    assert model_label(store.get(student.id), store.list_runs()) == os.path.join(teacher.dir, "model")


KILLED_MID_STAGE = textwrap.dedent(
    """
    import sys, time
    from pipelines.config import parse_config
    from pipelines.files import replace_dir
    from workbench.store import RunStore
    store = RunStore(sys.argv[1])
    run = store.create_run(parse_config({"name": "doomed"}))
    store.stage_started(run.id, "train")

    def slow_write(tmp):
        open(tmp + "/config.json", "w").write("{}")
        print(run.id, flush=True)
        time.sleep(60)  # killed here, mid-artifact

    replace_dir(run.dir + "/model", slow_write)
    """
)


def test_sigkill_mid_stage_leaves_a_readable_registry_and_no_complete_looking_artifact(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_MID_STAGE, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    run_id = proc.stdout.readline().strip()
    assert run_id, "child did not reach the stage"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    store = RunStore(str(tmp_path))  # opening recovers
    run = store.get(run_id)
    assert run.status == "interrupted"
    stage = run.stage("train")
    assert stage.status == "interrupted" and "died" in stage.error
    assert not os.path.exists(os.path.join(run.dir, "model"))  # only a hidden temp dir remains
    # the registry is plain, readable SQLite for any other tool
    rows = sqlite3.connect(os.path.join(str(tmp_path), "registry.sqlite")).execute("SELECT status FROM stages").fetchall()
    assert rows == [("interrupted",)]


def test_a_live_stage_is_not_marked_interrupted(tmp_path):
    store = RunStore(str(tmp_path))
    run = store.create_run(parse_config({}))
    store.stage_started(run.id, "train")  # this process is alive
    assert RunStore(str(tmp_path)).get(run.id).stage("train").status == "running"


def test_replace_dir_keeps_the_old_version_when_the_writer_fails(tmp_path):
    target = str(tmp_path / "model")
    replace_dir(target, lambda d: open(os.path.join(d, "v"), "w").write("1"))

    def broken(d):
        open(os.path.join(d, "v"), "w").write("2")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        replace_dir(target, broken)
    assert open(os.path.join(target, "v")).read() == "1"
    assert os.listdir(tmp_path) == ["model"]


def test_delete_removes_the_directory_and_the_history_and_refuses_a_live_run(tmp_path):
    from workbench.store import RunBusy

    store = RunStore(str(tmp_path))
    done = store.create_run(parse_config({"name": "done"}))
    with open(os.path.join(done.dir, "weights.bin"), "wb") as f:
        f.write(b"\0" * 5000)
    store.stage_started(done.id, "train")
    store.stage_finished(done.id, "train", {})
    store.run_finished(done.id)
    live = store.create_run(parse_config({"name": "live"}))
    store.stage_started(live.id, "train")  # this process is alive

    freed = store.delete_run(done.id)
    assert freed >= 5000 and not os.path.exists(done.dir)
    assert [r.id for r in RunStore(str(tmp_path)).list_runs()] == [live.id]
    assert sqlite3.connect(os.path.join(str(tmp_path), "registry.sqlite")).execute(
        "SELECT COUNT(*) FROM stages WHERE run_id=?", (done.id,)).fetchone() == (0,)
    with pytest.raises(RunBusy, match="still running: cancel it first"):
        store.delete_run(live.id)
    assert os.path.isdir(live.dir)
    with pytest.raises(KeyError):
        store.delete_run(done.id)


def test_delete_forgets_a_run_whose_directory_is_gone_and_never_removes_one_outside_the_store(tmp_path):
    store = RunStore(str(tmp_path / "runs"))
    gone = store.create_run(parse_config({"name": "gone"}))
    os.rename(gone.dir, str(tmp_path / "elsewhere"))
    assert store.delete_run(gone.id) == 0 and store.list_runs() == []
    outside = store.create_run(parse_config({"name": "outside"}))
    shutil.rmtree(outside.dir)  # recorded outside the store, none beside it
    store.db.execute("UPDATE runs SET dir=? WHERE id=?", (str(tmp_path / "elsewhere"), outside.id))
    assert store.delete_run(outside.id) == 0
    assert os.path.isfile(str(tmp_path / "elsewhere" / "config.yaml"))  # forgotten, not removed


KILLED_BETWEEN_STAGES = textwrap.dedent(
    """
    import os, signal, sys
    from pipelines.config import parse_config
    from workbench.store import RunStore
    store = RunStore(sys.argv[1])
    run = store.create_run(parse_config({"name": sys.argv[2]}))
    planned = sys.argv[3].split(",")
    store.run_started(run.id, planned)
    store.stage_started(run.id, planned[0])
    store.stage_finished(run.id, planned[0], {})
    print(run.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # before the next stage, or before the run is closed
    """
)


@pytest.mark.parametrize("planned, truth", [("train", "done"), ("train,eval", "interrupted")])
def test_a_run_killed_after_a_stage_finished_gets_its_true_state(tmp_path, planned, truth):
    """Killed after its last planned stage finished: done. After one of two: interrupted.
    Either way never 'running' forever (before, recovery looked only at running stages)."""
    proc = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_STAGES, str(tmp_path), "victim", planned],
                          capture_output=True, text=True)
    run_id = proc.stdout.strip()
    assert proc.returncode == -signal.SIGKILL and run_id
    raw = sqlite3.connect(os.path.join(str(tmp_path), "registry.sqlite"))
    assert raw.execute("SELECT status FROM runs").fetchone() == ("running",)  # what the dead process left

    # A read-only store (the TUI's pollers) shows the truth and writes nothing.
    readonly = RunStore(str(tmp_path), readonly=True)
    assert readonly.get(run_id).status == truth
    assert raw.execute("SELECT status FROM runs").fetchone() == ("running",)
    # A writer records it; `delete --unfinished` then sees an interrupted run.
    assert RunStore(str(tmp_path)).get(run_id).status == truth
    assert raw.execute("SELECT status FROM runs").fetchone() == (truth,)


def test_a_reused_pid_does_not_keep_a_dead_stage_running(tmp_path):
    """The stage's process died and the kernel gave its pid to another process (here:
    this one): the start time tells them apart."""
    from workbench.store import process_start

    store = RunStore(str(tmp_path))
    run = store.create_run(parse_config({"name": "reused"}))
    store.stage_started(run.id, "train")
    started = process_start(os.getpid())
    store.db.execute("UPDATE stages SET pid_start=? WHERE run_id=?", (started - 1, run.id))
    store.db.execute("UPDATE runs SET pid_start=? WHERE id=?", (started - 1, run.id))
    assert RunStore(str(tmp_path)).get(run.id).stage("train").status == "interrupted"


def test_a_readonly_store_needs_an_existing_registry_and_refuses_writes(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run store yet"):
        RunStore(str(tmp_path / "none"), readonly=True)
    RunStore(str(tmp_path)).create_run(parse_config({"name": "x"}))
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        RunStore(str(tmp_path), readonly=True).db.execute("DELETE FROM runs")


def test_an_old_registry_gains_the_new_columns(tmp_path):
    db = sqlite3.connect(os.path.join(str(tmp_path), "registry.sqlite"))
    db.executescript(
        "CREATE TABLE runs (id TEXT PRIMARY KEY, name TEXT NOT NULL, dir TEXT NOT NULL, created REAL NOT NULL,"
        " config_path TEXT, model TEXT, dataset TEXT, status TEXT NOT NULL);"
        "CREATE TABLE stages (run_id TEXT NOT NULL, stage TEXT NOT NULL, status TEXT NOT NULL, pid INTEGER,"
        " started REAL, finished REAL, metrics TEXT, error TEXT, PRIMARY KEY (run_id, stage));"
        "INSERT INTO runs VALUES ('old', 'old', '/nowhere', 1.0, NULL, 'tiny', 'msra', 'done');"
    )
    db.commit()
    store = RunStore(str(tmp_path))
    assert store.get("old").status == "done" and store.get("old").pid is None
    store.create_run(parse_config({"name": "new"}))
    assert len(store.list_runs()) == 2


CONCURRENT_WRITER = textwrap.dedent(
    """
    import sys, time
    from pipelines.config import parse_config
    from workbench.store import RunStore
    store = RunStore(sys.argv[1])
    deadline, n = time.monotonic() + float(sys.argv[3]), 0
    while time.monotonic() < deadline:
        run = store.create_run(parse_config({"name": f"{sys.argv[2]}-{n}"}))
        store.run_started(run.id, ["train"])
        store.stage_started(run.id, "train")
        store.stage_finished(run.id, "train", {"n": n})
        store.run_finished(run.id)
        n += 1
    print(n)
    """
)


def test_two_processes_writing_the_registry_at_once_lose_no_row(tmp_path):
    seconds = os.environ.get("STORE_CONCURRENCY_SECONDS", "5")  # the closing note of #18 quotes a 30 s run
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_WRITER, str(tmp_path), name, seconds],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    outputs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    written = [int(out) for out, _ in outputs]
    assert min(written) > 0
    runs = RunStore(str(tmp_path)).list_runs()
    assert len(runs) == sum(written)
    assert all(r.status == "done" and r.stage("train").status == "done" for r in runs)
    for prefix, n in zip("ab", written):
        assert sorted(int(r.name.split("-")[1]) for r in runs if r.name.startswith(prefix + "-")) == list(range(n))
