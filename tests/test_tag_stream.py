"""`ner-workbench tag --input`: files of any size, in chunks, in order; workers and Ray."""

import io
import json
import os
import sys

import pytest

from pipelines.data.loaders import DataError
from pipelines.events import Reporter
from pipelines.runtime.stream import TagSpec, read_lines, scan_file, tag_input, tag_stream
from workbench.cli import main

from conftest import TOY, TOY_TEST

pytestmark = pytest.mark.slow


def write_bytes(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


# -- reading: no model -------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"\n", b"a\nb\nc\n", b"a\nb\nc", b"a\r\nb\r\n\r\n", "一\n二\n\n三\n四\n五\n六".encode(), b"x\n" * 9],
)
def test_the_scan_counts_what_the_reader_reads_and_finds_each_chunk(tmp_path, data):
    path = write_bytes(tmp_path / "in.txt", data)
    scan = scan_file(path, chunk_lines=3, check_utf8=True)
    with open(path, "rb") as f:
        lines = list(read_lines(f, path))
    assert scan.lines == len(lines)
    assert len(scan.chunk_starts) == -(-len(lines) // 3)
    for k, start in enumerate(scan.chunk_starts):  # each chunk starts at its first line
        with open(path, "rb") as f:
            f.seek(start)
            assert list(read_lines(f, path))[:3] == lines[3 * k : 3 * k + 3]
    assert [line for line in lines if "\r" in line] == []


def test_a_line_that_is_not_utf8_is_named_by_its_number(tmp_path):
    lines = ["张三在北京工作".encode()] * 4 + ["李四".encode() + b"\xff\xfe"] + [b"ok"] * 3
    path = write_bytes(tmp_path / "bad.txt", b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match=r"bad\.txt: line 5 is not UTF-8 \(byte 7 of the line"):
        scan_file(path, check_utf8=True)
    with open(path, "rb") as f, pytest.raises(DataError, match=r"<stdin>: line 5 is not UTF-8"):
        list(read_lines(f))
    # the scan reads in 1 MiB blocks: a bad line far into the file still has its number
    big = write_bytes(tmp_path / "big.txt", "一二三四五六七八九十\n".encode() * 100_000 + b"\xc3(\n")
    with pytest.raises(DataError, match=r"line 100001 is not UTF-8 \(byte 1 of"):
        scan_file(big, check_utf8=True)


# -- tagging: the toy model ------------------------------------------------------------


def long_line(max_length: int) -> str:
    """3x the model's length: entities after the first window's end, and in the last."""
    filler = "的消息是"
    head = (filler * max_length)[: max_length + 4]
    line = head + "张三在北京工作" + filler * 3 + "新华社报道了上海的消息"
    return (line + filler * max_length)[: 3 * max_length - 6] + "李四去了广州"


@pytest.fixture(scope="module")
def toy(toy_run):
    from pipelines.runtime.tagger import Tagger

    run, _, _, _, runs_dir = toy_run
    return run.dir, runs_dir, Tagger.open(run.dir, "torch")


@pytest.fixture(scope="module")
def corpus(toy, tmp_path_factory):
    """~200 lines: the toy sentences over and over, empty lines, one line 3x the model's length."""
    _, _, tagger = toy
    texts = [text for text, _ in TOY + TOY_TEST]
    lines = [texts[i % len(texts)][: 3 + i % 9] if i % 5 else texts[i % len(texts)] for i in range(200)]
    lines[7] = lines[50] = lines[199] = ""
    lines[120] = long_line(tagger.meta.max_length)
    path = tmp_path_factory.mktemp("stream") / "in.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path), lines


def expected(tagger, lines):
    return [{"text": t, "entities": [e.as_dict() for e in tagger.tag(t)]} for t in lines]


def same(got: list[dict], want: list[dict]) -> None:
    """Equal, confidences to 1e-3 (a sentence batched with longer ones is padded: float noise)."""
    assert [(g["text"], [{**e, "confidence": None} for e in g["entities"]]) for g in got] == [
        (w["text"], [{**e, "confidence": None} for e in w["entities"]]) for w in want
    ]
    for g, w in zip(got, want):
        for a, b in zip(g["entities"], w["entities"]):
            assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-3)


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_a_file_through_the_cli_equals_tagging_each_line(toy, corpus, tmp_path, capsys):
    model, runs_dir, tagger = toy
    path, lines = corpus
    out = tmp_path / "out.jsonl"
    assert main(["tag", "--model", model, "--runs-dir", runs_dir, "--input", path, "--out", str(out), "--quiet"]) == 0
    got = read_jsonl(out)
    same(got, expected(tagger, lines))
    assert [g["text"] for g in got] == lines  # one object per line, in input order
    assert got[7] == {"text": "", "entities": []}
    # the long line is windowed: entities in its second and third windows are found
    long = got[120]
    span = tagger.meta.max_length - 2
    assert len(long["text"]) == 3 * tagger.meta.max_length
    found = {(e["text"], e["type"]) for e in long["entities"]}
    assert {("张三", "PER"), ("李四", "PER")} <= found, long["entities"]
    assert any(span <= e["start"] < 2 * span for e in long["entities"]) and any(e["start"] >= 2 * span for e in long["entities"])


def test_standard_input_through_the_cli_streams_json_lines_to_stdout(toy, monkeypatch, capsys):
    model, runs_dir, tagger = toy
    lines = ["张三在北京工作", "", "李四去了广州"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("\n".join(lines).encode()), encoding="utf-8"))
    assert main(["tag", "--model", model, "--runs-dir", runs_dir, "--input", "-"]) == 0
    captured = capsys.readouterr()
    same([json.loads(line) for line in captured.out.splitlines()], expected(tagger, lines))
    assert "3 sentences" in captured.err  # the summary goes to stderr, never into the data


def test_a_file_that_is_not_utf8_is_one_line_naming_the_line(toy, tmp_path, capsys):
    model, runs_dir, _ = toy
    bad = write_bytes(tmp_path / "bad.txt", "张三\n\n李四\n".encode() + b"\xe5\x8c\n")
    out = tmp_path / "out.jsonl"
    assert main(["tag", "--model", model, "--runs-dir", runs_dir, "--input", bad, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bad.txt: line 4 is not UTF-8" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()  # nothing half-written
    assert main(["tag", "--model", model, "--runs-dir", runs_dir, "--input", str(tmp_path / "none.txt")]) == 2
    assert "none.txt: No such file or directory" in capsys.readouterr().err


def test_the_text_form_still_tags_its_text(toy, capsys):
    model, runs_dir, _ = toy
    assert main(["tag", "--model", model, "--runs-dir", runs_dir, "--json", "张三在北京工作"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == "张三在北京工作"


class CountingLines:
    """A stream of lines that counts how many were pulled from it."""

    def __init__(self, lines):
        self.lines, self.pulled = lines, 0

    def __iter__(self):
        for line in self.lines:
            self.pulled += 1
            yield (line + "\n").encode()


class Out(io.StringIO):
    """Records, at each write, how far the reader was ahead of what was written."""

    def __init__(self, source: CountingLines) -> None:
        super().__init__()
        self.source, self.ahead, self.written = source, [], 0

    def write(self, text: str) -> int:
        self.written += text.count("\n")
        self.ahead.append(self.source.pulled - self.written)
        return super().write(text)


def test_the_reader_stays_within_chunks_of_the_writer_and_two_workers_write_what_one_writes(toy, corpus):
    model, _, tagger = toy
    _, lines = corpus
    outputs = []
    for workers in (1, 2):
        source = CountingLines(lines)
        out = Out(source)
        summary = tag_stream(TagSpec(model), source, out, Reporter(), workers=workers, chunk_lines=16)
        assert summary["sentences"] == len(lines)
        # the chunk being read, past those in flight (2 per worker)
        assert max(out.ahead) <= 16 * (1 if workers == 1 else 2 * workers + 1)
        outputs.append(out.getvalue())
    same([json.loads(line) for line in outputs[0].splitlines()], expected(tagger, lines))
    assert outputs[1] == outputs[0]


def test_the_cli_refuses_what_does_not_go_together(toy, corpus, capsys):
    model, runs_dir, _ = toy
    path, _ = corpus
    for argv in (["张三", "--workers", "2"], ["张三", "--out", "x.jsonl"], ["--input", path, "--json"], []):
        assert main(["tag", "--model", model, "--runs-dir", runs_dir, *argv]) == 2, argv
    assert "tag needs TEXT (or --input FILE)" in capsys.readouterr().err


def test_without_ray_the_ray_path_says_how_to_install_it(toy, corpus, monkeypatch, capsys):
    model, runs_dir, _ = toy
    path, _ = corpus
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert main(["tag", "--model", model, "--runs-dir", runs_dir, "--input", path, "--ray", "auto"]) == 2
    err = capsys.readouterr().err
    assert "--ray needs Ray Data" in err and "pip install 'ner-workbench[ray]'" in err and "Traceback" not in err


def test_ray_writes_what_the_local_path_writes(toy, tmp_path):
    ray = pytest.importorskip("ray")
    model, _, tagger = toy
    texts = [text for text, _ in TOY + TOY_TEST]
    lines = [texts[i % len(texts)] if i % 7 else "" for i in range(300)]
    lines[150] = long_line(tagger.meta.max_length)
    path = tmp_path / "in.txt"
    path.write_text("\n".join(lines), encoding="utf-8")  # no final newline
    local, remote = io.StringIO(), io.StringIO()
    tag_input(TagSpec(model), str(path), local, Reporter(), chunk_lines=64)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = tag_input(TagSpec(model), str(path), remote, Reporter(), ray="auto", chunk_lines=64)
    finally:
        ray.shutdown()
    assert summary["sentences"] == 300
    same([json.loads(line) for line in remote.getvalue().splitlines()], [json.loads(line) for line in local.getvalue().splitlines()])
    assert os.path.getsize(path) > 0
