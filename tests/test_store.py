import os
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
    store.db.execute("UPDATE runs SET dir=? WHERE id=?", (str(tmp_path / "elsewhere"), outside.id))
    assert store.delete_run(outside.id) == 0
    assert os.path.isfile(str(tmp_path / "elsewhere" / "config.yaml"))  # forgotten, not removed
