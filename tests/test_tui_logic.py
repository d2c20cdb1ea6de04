"""The TUI's UI-free parts: progress folding, config checking, sentence tagging."""

import os
import threading
import time

import pytest

from pipelines.events import Event
from workbench.config_files import TEMPLATES, Template, check_config_text, find_key_line, from_template
from pipelines.files import write_text
from workbench.highlight import SentenceTagger, percentile, split_sentences
from workbench.progress import ProgressTracker, describe, format_duration


def test_tracker_follows_stages_with_eta_from_event_times():
    tracker = ProgressTracker()
    lines = tracker.feed(
        [
            Event("started", "train", time=100.0, message="run x"),
            Event("progress", "train", time=101.0, n=10, total=110, unit="steps", data={"epoch": 1, "loss": 0.51234}),
            Event("log", "train", time=102.0, message="dev F1 0.5"),
            Event("progress", "train", time=111.0, n=60, total=110, unit="steps", data={"epoch": 2}),
        ]
    )
    assert lines == ["▶ train run x", "train dev F1 0.5"]
    stage = tracker.current
    assert stage.stage == "train" and stage.unit == "steps" and abs(stage.fraction - 60 / 110) < 1e-9
    assert stage.eta_s == 10.0  # 50 steps in 10 s, 50 to go
    assert stage.extras() == "epoch 2"
    tracker.feed([Event("finished", "train", time=120.0), Event("started", "eval", time=120.0)])
    assert tracker.stages["train"].fraction == 1.0 and tracker.current.stage == "eval"
    assert tracker.current.fraction is None and tracker.current.eta_s is None


def test_a_time_budget_that_ends_first_sets_the_eta_in_the_tui_and_the_cli():
    import io

    from rich.console import Console

    from workbench.render import RichRenderer

    events = [
        Event("progress", "pretrain", time=100.0, n=10, total=5000, unit="steps", data={"lr": 0.0003, "time_left_s": 1700.0}),
        Event("progress", "pretrain", time=110.0, n=20, total=5000, unit="steps", data={"lr": 0.0003, "time_left_s": 1690.0}),
    ]
    tracker = ProgressTracker()
    tracker.feed(events)
    assert tracker.current.eta_s == 1690.0  # not the 4,980 s the 4,980 steps left would take
    assert "lr 0.0003" in tracker.current.extras()
    out = io.StringIO()
    renderer = RichRenderer(Console(file=out, width=160, force_terminal=False))
    for event in events:
        renderer(event)
    renderer.close()
    assert "eta 28:10" in out.getvalue() and "lr 0.0003" in out.getvalue()
    # Steps that end first keep the rate's ETA.
    tracker = ProgressTracker()
    tracker.feed([Event("progress", "train", time=0.0, n=0, total=20, data={"time_left_s": 900.0}),
                  Event("progress", "train", time=10.0, n=10, total=20, data={"time_left_s": 890.0})])
    assert tracker.current.eta_s == 10.0


def test_describe_and_durations():
    assert describe(Event("failed", "eval", message="boom")) == "✘ eval: boom"
    assert describe(Event("metric", "eval", name="test_f1", value=0.5)) == "eval test_f1 = 0.5000"
    assert describe(Event("progress", "eval", n=1, total=2)) is None
    assert format_duration(None) == "—" and format_duration(65) == "1:05" and format_duration(3725) == "1:02:05"


def test_config_problem_names_key_path_allowed_values_and_line():
    text = "name: x\ntrain:\n  epochs: 2\n  lr: 0.1\n"
    problem = check_config_text(text, "x.yaml")
    assert problem.key_path == "train.lr" and problem.line == 4
    assert problem.message.startswith("x.yaml: train.lr: unknown key (allowed: epochs, batch_size")
    problem = check_config_text("model:\n  preset: huge\n", "x.yaml")
    assert problem.key_path == "model.preset" and problem.line == 2 and "'tiny'" in problem.message
    assert check_config_text("name: ok\n", "x.yaml") is None


def test_invalid_yaml_and_odd_inputs_never_raise():
    problem = check_config_text("train:\n  epochs: [1,\n", "x.yaml")
    assert "invalid YAML" in problem.message and problem.line is not None
    assert check_config_text("", "x.yaml") is None  # all defaults
    assert "top level must be a mapping" in check_config_text("- a\n- b\n", "x.yaml").message
    assert find_key_line("a: [", "a") is None


def test_atomic_write_and_templates(tmp_path):
    path = tmp_path / "c.yaml"
    write_text(str(path), "name: a\n")
    write_text(str(path), "name: b\n")
    assert path.read_text() == "name: b\n" and os.listdir(tmp_path) == ["c.yaml"]
    quick = next(t for t in TEMPLATES if t.name == "quickstart")
    text = from_template(quick, "mine")
    assert "name: mine" in text and "name: quickstart" not in text and check_config_text(text, "mine.yaml") is None
    assert all(t.available for t in TEMPLATES)
    compiled = from_template(next(t for t in TEMPLATES if t.name == "compile_fp16"), "c16")
    assert "stages: [train, export, eval, compile, bench]" in compiled and "precisions: [fp32, fp16]" in compiled
    assert check_config_text(compiled, "c16.yaml") is None
    every = from_template(next(t for t in TEMPLATES if t.name == "compile_int8"), "c8")
    assert "precisions: [fp32, fp16, int8]" in every and "tvm-int8" in every and check_config_text(every, "c8.yaml") is None
    missing = Template("later", "Later", str(tmp_path / "nowhere.yaml"), "not available yet: later")
    assert not missing.available
    with pytest.raises(ValueError, match="template later: not available yet: later"):
        from_template(missing, "x")


def test_split_sentences_covers_mixed_text():
    text = "张三在北京。李四去了上海！\n\nHello 👋 world"
    spans = split_sentences(text)
    assert [text[a:b] for a, b in spans] == ["张三在北京。", "李四去了上海！\n\n", "Hello 👋 world"]
    assert split_sentences("") == [] and split_sentences("  \n ") == []


class FakeTagger:
    def __init__(self):
        self.calls = []

    def tag(self, text):
        from pipelines.runtime.predict import Entity

        self.calls.append(text)
        i = text.find("北京")
        return [Entity("LOC", i, i + 2, "北京", 0.9)] if i >= 0 else []


def test_sentence_tagger_offsets_cache_and_cancel():
    fake = FakeTagger()
    tagger = SentenceTagger(fake)
    result = tagger.tag_text("你好。我在北京。")
    assert [(e.type, e.start, e.end, e.text) for e in result.entities] == [("LOC", 5, 7, "北京")]
    assert result.sentences == 2 and len(result.latencies_ms) == 2
    again = tagger.tag_text("你好。我在北京。再见")
    assert fake.calls[-1] == "再见" and len(again.latencies_ms) == 1  # only the new sentence ran
    assert tagger.tag_text("a。b。", cancelled=lambda: True).cancelled
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0 and percentile([], 50) is None


class SharedBufferTagger:
    """Stateful as a compiled engine is: each call writes its input into one buffer
    that every call shares (an engine that reuses its input arrays, as TVM's can),
    gives the other threads the GIL, then tags what the buffer holds. Two calls at
    once tag each other's text."""

    def __init__(self):
        self.buffer = []
        self.active = self.most_active = 0

    def tag(self, text):
        from pipelines.runtime.predict import Entity

        self.active += 1
        self.most_active = max(self.most_active, self.active)
        self.buffer[:] = text
        time.sleep(0.005)  # the forward pass
        seen = "".join(self.buffer)
        self.active -= 1
        i = seen.find("北京")
        return [Entity("LOC", i, i + 2, seen[i : i + 2], 0.9)] if i >= 0 else []


def test_sentence_tagger_serialises_threads():
    engine = SharedBufferTagger()
    tagger = SentenceTagger(engine)
    texts = ["你" * i + "北京" for i in range(8)]  # 北京 at a different place in each
    results = {}
    threads = [threading.Thread(target=lambda t=t: results.setdefault(t, tagger.tag_text(t))) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for text in texts:
        assert [(e.start, e.end, e.text) for e in results[text].entities] == [(text.index("北京"), text.index("北京") + 2, "北京")]
    assert engine.most_active == 1


def test_a_stage_row_shows_scalar_metrics_and_the_held_out_news_f1():
    from workbench.backend import _metrics_line

    eval_metrics = {"f1": 0.79612, "sentences": 4631, "engine": "torch", "per_type": {"PER": {"f1": 0.85}},
                    "news": {"f1": 0.78141, "sentences": 2495, "per_type": {}}}
    assert _metrics_line(eval_metrics) == "f1 0.7961  news_f1 0.7814  sentences 4631  engine torch"
    assert _metrics_line({"steps": 10, "news": {"f1": 0.5}}) == "steps 10  news_f1 0.5"
