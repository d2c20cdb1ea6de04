"""`ner-workbench report`: built from finished runs faked on disk (no training), checked
against the very numbers written into their metrics.json, eval and bench files."""

import base64
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, finished_run

from workbench.cli import main
from workbench.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TORCH_F1, ORT_F1 = 0.812345, 0.809876
PER_TYPE = {"PER": 0.7438, "LOC": 0.8100, "ORG": 0.6555}


@pytest.fixture
def store(tmp_path):
    from workbench.store import RunStore

    return RunStore(str(tmp_path / "runs"))


def write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def scores(engine, f1, errors=None):
    per_type = {t: {"precision": v, "recall": v, "f1": v + (0.001 if engine == "ort" else 0), "support": 10} for t, v in PER_TYPE.items()}
    found = {"f1": f1, "precision": f1, "recall": f1, "accuracy": 0.97, "per_type": per_type, "split": "test", "engine": engine, "decode": "bio"}
    return {**found, "errors": errors} if errors else found


def bench_result(engine, batch, seq, p50):
    samples = [p50 * (0.9 + 0.01 * i) for i in range(20)]
    return {
        "engine": engine, "batch": batch, "seq": seq, "latency_ms": {"mean": p50, "p50": p50, "p99": p50 * 3},
        "samples_ms": samples, "throughput": {"sentences_per_s": batch * 1000 / p50}, "artifact_mb": 12.0, "compile_s": None,
    }


def events(path):
    lines = [{"kind": "started", "stage": "train", "time": 0.0}]
    for step in range(10, 210, 10):
        lines.append({"kind": "progress", "stage": "train", "time": float(step), "n": step, "total": 200, "unit": "steps", "data": {"loss": 2.0 / step}})
        if step % 50 == 0:
            lines.append({"kind": "metric", "stage": "train", "time": float(step), "name": "dev_f1", "value": step / 250})
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)


def full_run(store, name="full", errors=None):
    """A run that trained, evaluated torch and ort, and benchmarked both at 2 × 2 shapes."""
    run = finished_run(store, name)
    torch = scores("torch", TORCH_F1)
    write_json(os.path.join(run.dir, "metrics.json"), {
        "train": {"best_dev_f1": 0.8, "epochs": 2.0, "train_seconds": 90.0, "parameters": 3_167_879, "precision": "fp32", "stop_reason": "completed"},
        "eval": torch,
    })
    write_json(os.path.join(run.dir, "eval", "test-torch.json"), torch)
    write_json(os.path.join(run.dir, "eval", "test-ort.json"), scores("ort", ORT_F1, errors))
    results = [bench_result(e, b, s, p50) for b in (1, 8) for s in (32, 64) for e, p50 in (("torch", 5.0 * b * s / 32), ("ort", 1.0 * b * s / 32))]
    write_json(os.path.join(run.dir, "bench.json"), {"results": results, "machine": {"cpu": "Test CPU", "cores": 4, "torch_version": "9.9"}})
    events(os.path.join(run.dir, "events.jsonl"))
    return run


def table(markdown, heading):
    """The first Markdown table under ``## heading`` as dicts (header -> cell)."""
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    first = section[section.index("\n|") + 1:].split("\n\n", 1)[0]
    rows = [line.strip().strip("|").split(" | ") for line in first.splitlines()]
    header = [h.strip() for h in rows[0]]
    return [dict(zip(header, (c.strip() for c in row))) for row in rows[2:]]


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_the_quality_and_engines_tables_carry_the_numbers_of_the_run(store, tmp_path):
    run = full_run(store)
    write_report([run.dir], str(tmp_path / "out"))
    md = read(tmp_path / "out" / "report.md")
    [quality] = table(md, "Model quality")
    assert quality["test entity F1"] == f"{TORCH_F1:.4f}" and quality["PER"] == "0.7438" and quality["ORG"] == "0.6555"
    assert quality["CPU training time"] == "1.5 min train (fp32)" and quality["parameters"] == "3.2 M"
    engines = {row["engine"]: row for row in table(md, "Engines")}
    assert list(engines) == ["torch", "ort"]  # the reference first
    assert engines["torch"]["F1"] == f"{TORCH_F1:.4f}" and engines["torch"]["ΔF1"] == "ref"
    assert engines["ort"]["F1"] == f"{ORT_F1:.4f}" and engines["ort"]["ΔF1"] == f"{ORT_F1 - TORCH_F1:+.4f}"
    assert engines["ort"]["LOC F1"] == f"{PER_TYPE['LOC'] + 0.001:.4f}"
    # Latency at the bench's first shape (batch 1, seq 32): torch p50 5 ms, p99 three times that.
    assert (engines["torch"]["shape"], engines["torch"]["p50 ms"], engines["torch"]["p99 ms"]) == ("1x32", "5.00", "15.00")
    assert engines["ort"]["sent/s"] == "1,000.0"
    env = {row[""]: row for row in table(md, "Environment")}
    assert f"bench.json of {run.id}" in env and "Test CPU, 4 cores" in env[f"bench.json of {run.id}"]["this machine, and where each bench ran"]
    assert "no benchmark" not in md and "no evaluation" not in md
    assert "## Errors by kind" not in md  # no eval file carries error counts


def test_the_figures_are_pngs_linked_from_the_markdown_and_embedded_in_the_html(store, tmp_path):
    run = full_run(store)
    out = tmp_path / "out"
    paths = write_report([run.dir], str(out))
    figures = ["training-train.png", "f1-by-type.png", f"latency-{run.id}.png", f"p50-{run.id}.png"]
    assert paths == [str(out / "report.md"), str(out / "report.html"), *(str(out / "figures" / name) for name in figures)]
    md, page = read(out / "report.md"), read(out / "report.html")
    for name in figures:
        png = (out / "figures" / name).read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 10_000, name
        assert f"](figures/{name})" in md
        assert "data:image/png;base64," + base64.b64encode(png).decode("ascii") in page
    assert 'src="figures/' not in page  # the HTML needs no file beside it
    assert "<table>" in page and f"<td>{TORCH_F1:.4f}</td>" in page


def test_error_counts_are_tabled_when_the_eval_wrote_them(store, tmp_path):
    errors = {
        "counts": {"missed": 5, "spurious": 3, "wrong_type": 2, "wrong_boundary": 1, "wrong_type_and_boundary": 0},
        "by_type": {"PER": {"missed": 4, "spurious": 1, "wrong_type": 0, "wrong_boundary": 1, "wrong_type_and_boundary": 0}},
    }
    run = full_run(store, errors=errors)
    write_report([run.dir], str(tmp_path / "out"))
    md = read(tmp_path / "out" / "report.md")
    [ort] = table(md, "Errors by kind")  # torch's eval file has none: no row
    assert (ort["engine"], ort["missed"], ort["spurious"], ort["wrong type and boundary"], ort["total"]) == ("ort", "5", "3", "0", "11")
    assert "| full | test | ort | PER | 4 | 1 | 0 | 1 | 0 |" in md


def test_a_run_without_bench_eval_or_training_says_what_is_missing_and_how_to_make_it(store, tmp_path):
    bare = finished_run(store, "bare")
    runs = store.runs_dir
    write_report([bare.dir], str(tmp_path / "out"))
    md = read(tmp_path / "out" / "report.md")
    assert f"no evaluation: `ner-workbench eval --model {bare.id} --runs-dir {runs}`" in md
    assert f"no benchmark: `ner-workbench bench --model {bare.id} --runs-dir {runs}`" in md
    assert f"no training stage in this run: `ner-workbench train {bare.dir}/config.yaml --resume {bare.id} --runs-dir {runs}`" in md
    assert os.listdir(tmp_path / "out" / "figures") == []
    assert "<code>ner-workbench bench" in read(tmp_path / "out" / "report.html")


def test_torn_files_are_reported_missing_not_a_failure(store, tmp_path):
    run = full_run(store)
    for name in ("metrics.json", "bench.json", os.path.join("eval", "test-ort.json")):
        with open(os.path.join(run.dir, name), "w", encoding="utf-8") as f:
            f.write("{torn")
    write_report([run.dir], str(tmp_path / "out"))
    md = read(tmp_path / "out" / "report.md")
    assert f"{run.id}: no benchmark" in md and f"{run.id}: no test scores in metrics.json" in md
    assert [row["engine"] for row in table(md, "Engines")] == ["torch"]


def test_runs_side_by_side(store, tmp_path):
    a, b = full_run(store, "a"), finished_run(store, "b")
    write_report([a.dir, b.dir], str(tmp_path / "out"))
    md = read(tmp_path / "out" / "report.md")
    assert [row["run"] for row in table(md, "Model quality")] == [a.id, b.id]
    assert [(row["run"], row["engine"]) for row in table(md, "Engines")] == [("a", "torch"), ("a", "ort")]
    assert f"{b.id}: no benchmark" in md and f"{a.id}: no benchmark" not in md


def test_the_cli_writes_into_the_run_and_prints_the_paths(store, capsys):
    run = full_run(store)
    assert main(["report", "full", "--runs-dir", store.runs_dir]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[:2] == [os.path.join(run.dir, "report", "report.md"), os.path.join(run.dir, "report", "report.html")]
    assert all(os.path.isfile(p) for p in printed)


def test_the_cli_refuses_an_unknown_run_in_one_line(store, capsys):
    assert main(["report", "no-such-run", "--runs-dir", store.runs_dir]) == 2
    err = capsys.readouterr().err.strip()
    assert "no run or directory 'no-such-run'" in err and len(err.splitlines()) == 1


def test_the_jobs_screen_starts_it_on_one_run():
    from workbench.backend import ACTIONS
    from workbench.commands import job_argv

    assert job_argv("report", "RUN", "/runs") == ["report", "RUN", "--runs-dir", "/runs"]
    assert next(a for a in ACTIONS if a.name == "report").needs == "run"


def test_importing_the_report_does_not_load_matplotlib():
    code = "import sys, workbench.report; assert 'matplotlib' not in sys.modules and 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False).returncode == 0
