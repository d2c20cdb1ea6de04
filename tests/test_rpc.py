"""Remote devices through TVM RPC: a tracker and two servers on 127.0.0.1, started here,
and the toy model compiled at 1x16 into a copy of its run: a remote bench, a remote eval,
tuning measured on both devices, and the errors of a tracker that cannot serve."""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import copy_run, free_port, rpc_tracker, wait_free

KEY = "test"


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    """An RPC tracker and two servers of key "test" (``conftest.rpc_tracker``)."""
    with rpc_tracker(tmp_path_factory.mktemp("rpc"), servers=2, key=KEY) as rpc:
        yield rpc


@pytest.fixture(scope="module")
def remote_run(toy_run, tmp_path_factory):
    """A copy of the toy run with tvm-fp32 compiled at 1x16, registered in a store of its own:
    (run directory, runs directory)."""
    from pipelines.config import parse_config
    from pipelines.events import Reporter
    from pipelines.stages import stage_compile

    root = tmp_path_factory.mktemp("remote-run")
    run_dir = copy_run(toy_run[0].dir, root)
    cfg = parse_config({"export": {"shape": [1, 16]}, "compile": {"precisions": ["fp32"]}})
    stage_compile(cfg, run_dir, Reporter())
    return run_dir, str(root / "runs")


def _cli(*argv) -> tuple[int, float]:
    from workbench.cli import main

    t0 = time.monotonic()
    rc = main(list(argv))
    return rc, time.monotonic() - t0


def test_devices_lists_the_key_with_both_servers(tracker, capsys):
    assert _cli("devices", "--rpc", tracker.tracker, "--json")[0] == 0
    assert json.loads(capsys.readouterr().out) == [{"key": KEY, "total": 2, "free": 2, "pending": 0}]
    assert _cli("devices", "--rpc", tracker.tracker)[0] == 0
    out = capsys.readouterr().out
    assert f"RPC tracker {tracker.tracker}" in out and KEY in out


def test_a_remote_bench_times_the_artifact_on_the_device_like_here(tracker, remote_run, capsys):
    """Same machine, same thread pool: the device's p50 is the local one within a
    generous factor (the local time also holds this process's call overhead)."""
    from pipelines.evaluate.bench import benchmark
    from workbench.store import RunStore

    run_dir, runs_dir = remote_run
    rc, _ = _cli("bench", "--model", run_dir, "--runs-dir", runs_dir, "--engines", "tvm-fp32", "--batch", "1", "--seq", "16",
                 "--iterations", "40", "--corpus-sentences", "0", "--rpc", tracker.tracker, "--rpc-key", KEY, "--quiet")
    assert rc == 0
    assert "timed on rpc:test, on its clock" in capsys.readouterr().out
    with open(os.path.join(run_dir, "bench.json"), encoding="utf-8") as f:
        [row] = json.load(f)["results"]
    assert (row["engine"], row["device"], row["batch"], row["seq"]) == ("tvm-fp32+rpc-test", "rpc:test", 1, 16)
    assert row["iterations"] == 40 and row["peak_memory_mb"] is None and row["artifact_mb"] > 0
    assert row["roundtrip_ms"] > row["latency_ms"]["p50"] > 0  # the network is not in the device's time
    [bench] = [s for s in RunStore(runs_dir).find(run_dir).stages if s.stage == "bench"]
    assert bench.status == "done"

    [local] = benchmark(run_dir, ["tvm-fp32"], [1], [16], warmup=5, iterations=40)["results"]
    assert local["device"] == "local" and "roundtrip_ms" not in local
    ratio = row["latency_ms"]["p50"] / local["latency_ms"]["p50"]
    assert 0.2 < ratio < 3, (row["latency_ms"], local["latency_ms"])


def test_a_remote_eval_tags_as_the_local_engine_and_keeps_its_own_files(tracker, remote_run, capsys):
    from conftest import evaluate_run
    from pipelines.evaluate.errors import read_predictions
    from workbench.compare import collect_rows

    run_dir, runs_dir = remote_run
    wait_free(tracker, 1)
    local = evaluate_run(run_dir, "tvm-fp32")
    rc, _ = _cli("eval", "--model", run_dir, "--runs-dir", runs_dir, "--engine", "tvm-fp32",
                 "--rpc", tracker.tracker, "--rpc-key", KEY, "--json", "-", "--quiet")
    assert rc == 0
    remote = json.loads(capsys.readouterr().out)
    assert remote["engine"] == "tvm-fp32+rpc-test" and remote["f1"] == local["f1"]
    eval_dir = os.path.join(run_dir, "eval")
    pred = {name: [r.pred for r in read_predictions(os.path.join(eval_dir, f"test-{name}.predictions.jsonl"))]
            for name in ("tvm-fp32", "tvm-fp32+rpc-test")}
    assert pred["tvm-fp32+rpc-test"] == pred["tvm-fp32"]
    assert os.path.isfile(os.path.join(eval_dir, "test-tvm-fp32.json"))  # the local scores are still there
    rows = {r.engine: r for r in collect_rows([("r", "toy", run_dir)])}
    assert rows["tvm-fp32+rpc-test"].precision == "fp32" and rows["tvm-fp32+rpc-test"].f1 == rows["tvm-fp32"].f1


def test_tuning_measures_on_both_devices_and_the_compile_uses_its_records(tracker, remote_run, tmp_path):
    from pipelines.config import parse_config
    from pipelines.events import Reporter
    from pipelines.runtime.engines import compiled_artifacts
    from pipelines.stages import stage_compile

    run_dir, _ = remote_run
    wait_free(tracker, 2)
    database = str(tmp_path / "tuning-db")
    rpc = tracker.model_dump()
    cfg = parse_config({"export": {"shape": [1, 16]},
                        "compile": {"tuning": {"trials": 8, "max_minutes": 1.5, "database": database, "rpc": rpc}}})
    events = []
    stage_compile(cfg, run_dir, Reporter(events.append, stage="compile"))
    logs = [e.message for e in events if e.kind == "log"]
    assert any(m.startswith("measuring on rpc:test at ") and ": 2 workers (2 of 2 devices free)" in m for m in logs), logs
    assert any(m.startswith("end to end on rpc:test: ") for m in logs), logs
    [art] = compiled_artifacts(run_dir, "tvm-fp32")
    with open(os.path.join(art, "artifact.json"), encoding="utf-8") as f:
        tuning = json.load(f)["tuning"]
    assert tuning["measured_on"] == "rpc:test" and tuning["records"] > 0 and set(tuning["p50_ms"]) == {"tuned", "default"}
    [db] = os.listdir(database)
    assert db.endswith("+rpc-test")  # the devices' times, apart from this machine's
    with open(os.path.join(database, db, "database_tuning_record.json"), encoding="utf-8") as f:
        assert len(f.read().splitlines()) == tuning["records"]


def test_an_unreachable_tracker_fails_in_seconds_with_its_address(remote_run, capsys):
    """The bench stage is recorded failed, eval exits 2, and a compile that would tune
    there fails before any child starts: each with one line naming the address."""
    from workbench.store import RunStore

    run_dir, runs_dir = remote_run
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    rc, seconds = _cli("bench", "--model", run_dir, "--runs-dir", runs_dir, "--engines", "tvm-fp32", "--batch", "1", "--seq", "16",
                       "--corpus-sentences", "0", "--rpc", address, "--rpc-key", KEY, "--quiet")
    err = capsys.readouterr().err
    assert rc == 1 and seconds < 10
    assert err.strip().splitlines()[-1] == f"failed: bench: RPC tracker {address} unreachable (connection refused)"
    bench = RunStore(runs_dir).find(run_dir).stage("bench")
    assert bench.status == "failed" and address in bench.error

    rc, seconds = _cli("eval", "--model", run_dir, "--runs-dir", runs_dir, "--engine", "tvm-fp32", "--rpc", address, "--rpc-key", KEY)
    err = capsys.readouterr().err
    assert rc == 2 and seconds < 10 and f"RPC tracker {address} unreachable" in err and len(err.strip().splitlines()) == 1

    rc, seconds = _cli("compile", "--model", run_dir, "--runs-dir", runs_dir, "--shape", "1x16", "--tune-trials", "8",
                       "--rpc", address, "--rpc-key", KEY, "--quiet")
    assert rc == 1 and seconds < 10 and address in capsys.readouterr().err
    assert RunStore(runs_dir).find(run_dir).stage("compile").status == "failed"


def test_no_device_of_the_key_or_none_free_in_time_says_so(tracker):
    from pipelines.runtime.remote import RemoteDevice, RemoteError

    with pytest.raises(RemoteError, match=r"has no device with key 'nope' \(keys: test \(2\)\)"):
        RemoteDevice(tracker.model_copy(update={"key": "nope"})).session  # noqa: B018 - the property opens it
    wait_free(tracker, 2)
    held = [RemoteDevice(tracker) for _ in range(2)]
    try:
        for device in held:
            device.session  # noqa: B018 - both devices taken
        t0 = time.monotonic()
        with pytest.raises(RemoteError, match=r"no free device with key 'test' on RPC tracker 127\.0\.0\.1:\d+ within 1 s \(0 of 2 free"):
            RemoteDevice(tracker.model_copy(update={"wait_s": 1.0})).session  # noqa: B018
        assert time.monotonic() - t0 < 5
    finally:
        for device in held:
            device.close()
    wait_free(tracker, 2)


def test_remote_names_parse_back_where_eval_files_are_read():
    from pipelines.config import ConfigError, RpcConfig, parse_config
    from pipelines.evaluate.scoring import parse_stem
    from pipelines.runtime.remote import device_label, remote_name, split_remote

    assert remote_name("tvm-int8", "pi-4.b") == "tvm-int8+rpc-pi-4.b"
    assert split_remote("tvm-int8+rpc-pi-4.b") == ("tvm-int8", "pi-4.b") and split_remote("ort") == ("ort", None)
    assert device_label("tvm-fp32+rpc-x") == "rpc:x" and device_label("tvm-fp32") == "local"
    assert parse_stem("test-tvm-fp32+rpc-pi") == ("test", "tvm-fp32+rpc-pi")
    assert parse_stem("test-tvm-fp32+rpc-pi@argmax") == ("test", "tvm-fp32+rpc-pi")
    assert parse_stem("conll-my-set-tvm-int8+rpc-a_b") == ("conll-my-set", "tvm-int8+rpc-a_b")
    assert parse_stem("test-ort-int8") == ("test", "ort-int8") and parse_stem("odd+rpc-x") == ("odd+rpc-x", "")
    assert parse_config({"bench": {"rpc": {"tracker": "h:9190", "key": "k"}}}).bench.rpc.address == ("h", 9190)
    with pytest.raises(ConfigError, match=r"bench\.rpc\.tracker: must be HOST:PORT"):
        parse_config({"bench": {"rpc": {"tracker": "h", "key": "k"}}})
    with pytest.raises(ConfigError, match=r"--rpc: key: must be letters"):
        RpcConfig.of("h:1", "a/b")


def test_rpc_and_its_key_go_together(remote_run, capsys):
    run_dir, runs_dir = remote_run
    assert _cli("bench", "--model", run_dir, "--runs-dir", runs_dir, "--rpc", "127.0.0.1:9190")[0] == 2
    assert "--rpc HOST:PORT and --rpc-key KEY go together" in capsys.readouterr().err
    assert _cli("eval", "--model", run_dir, "--runs-dir", runs_dir, "--engine", "torch", "--rpc", "127.0.0.1:1", "--rpc-key", KEY)[0] == 2
    assert "torch runs here only" in capsys.readouterr().err


def test_a_session_uploads_each_artifact_once_whatever_shapes_it_serves(tmp_path):
    """A symbolic-length build serves every bench shape of its batch size: opened again
    for another shape, it is the engine already on the device (uploading its library
    again over the loaded one killed the server)."""
    from pipelines.config import RpcConfig
    from pipelines.runtime.remote import RemoteDevice

    artifacts = []
    for name in ("tvm-int8-1xany", "tvm-int8-64xany"):
        path = tmp_path / name
        path.mkdir()
        (path / "artifact.json").write_text(json.dumps({
            "engine": "tvm-int8", "library": "model.so", "target": "llvm", "lengths": [3, 128],
            "inputs": [{"name": "input_ids", "shape": [int(name.split("-")[2].split("x")[0]), 128], "dtype": "int64"}],
        }))
        artifacts.append(str(path))
    device = RemoteDevice(RpcConfig(tracker="127.0.0.1:1", key=KEY))
    uploads = []

    def engine(library, shape, name, target, upload_as, lengths):
        uploads.append((upload_as, tuple(shape), lengths))
        return object()

    device._engine = engine
    first = device._open_artifact(artifacts[0])
    assert device._open_artifact(artifacts[0]) is first and device._open_artifact(artifacts[1]) is not first
    assert uploads == [("tvm-int8-1xany-model.so", (1, 128), [3, 128]), ("tvm-int8-64xany-model.so", (64, 128), [3, 128])]
