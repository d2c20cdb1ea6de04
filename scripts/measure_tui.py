"""Measure the TUI: cold start to first paint, and highlighter update latency.

    python scripts/measure_tui.py                 # both; trains a toy model first (seconds)
    python scripts/measure_tui.py --runs-dir DIR  # highlighter on the newest run with a model in DIR
    python scripts/measure_tui.py --cold-only

Cold start: from spawning a fresh interpreter to the app's Ready event (its first
frame drawn, headless at 120x40), median of several starts; it also checks that
torch was not imported by then. Highlighter: with the model loaded, each sentence
is put in the text area and timed (a) inside the model (per-sentence latency)
and (b) from the edit to the table showing its entities (includes the debounce).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTENCES = [
    "张三在北京工作",
    "新华社北京三月五日电，国务院总理李鹏在人民大会堂作报告。",
    "李四去了广州，参观了中山大学。",
    "王五是人民日报的记者，常驻上海。",
    "联合国秘书长安南今天抵达日内瓦。",
    "中国科学院的专家在南京召开会议。",
    "赵六和钱七从深圳出发前往香港。",
    "外交部发言人在记者会上回答了提问。",
]


def child(runs_dir: str, out: str) -> None:
    """Runs in the measured process: `ner-workbench tui` (headless), noting the time of its first frame."""
    sys.path.insert(0, REPO)
    import workbench.app as tui

    def on_ready(app) -> None:
        with open(out, "w") as f:
            json.dump({"ready": time.time(), "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules}, f)
        app.exit()

    run = tui.WorkbenchApp.run
    tui.WorkbenchApp.on_ready = on_ready
    tui.WorkbenchApp.run = lambda app, **kw: run(app, headless=True, size=(120, 40))
    from workbench.cli import main

    main(["tui", "--runs-dir", runs_dir])


def cold_start(runs_dir: str, repeats: int) -> dict:
    times, heavy = [], False
    for _ in range(repeats):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            out = f.name
        t0 = time.time()
        subprocess.run([sys.executable, __file__, "--child", out, "--runs-dir", runs_dir], check=True, cwd=REPO)
        with open(out) as f:
            report = json.load(f)
        os.unlink(out)
        times.append(report["ready"] - t0)
        heavy = heavy or report["torch"] or report["transformers"]
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "torch_imported": heavy}


def train_toy(root: str) -> str:
    """A tiny model on a toy corpus through the CLI (the quickstart's size, max length 128)."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from conftest import write_toy_corpus

    corpus = os.path.join(root, "toy.txt")
    write_toy_corpus(corpus)
    config = os.path.join(root, "toy.yaml")
    with open(config, "w") as f:
        f.write(
            f"name: toy\nstages: [train]\ndata: {{source: conll, train: {corpus}, dev: {corpus}, test: {corpus}}}\n"
            "model: {preset: tiny, max_length: 128}\ntrain: {epochs: 4, batch_size: 8}\n"
        )
    runs = os.path.join(root, "runs")
    subprocess.run([sys.executable, "-m", "workbench.cli", "run", config, "--runs-dir", runs, "--quiet"], check=True, cwd=REPO)
    return runs


async def highlighter(runs_dir: str, rounds: int) -> dict:
    sys.path.insert(0, REPO)
    from workbench.app import WorkbenchApp

    app = WorkbenchApp(runs_dir=runs_dir)
    model_ms, update_ms = [], []
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f5")
        screen = app.screen
        t0 = time.perf_counter()
        while screen.tagger is None:
            await pilot.pause(0.01)
            if time.perf_counter() - t0 > 120:
                raise SystemExit("model did not load: " + str(screen.query_one("#status").content))
        load_s = time.perf_counter() - t0
        area = screen.query_one("#input")
        for i in range(rounds):
            for sentence in SENTENCES:
                text = f"{sentence}{'。' * (i % 3)}{i}"  # new text each round: no cache hits
                before = screen.result
                start = time.perf_counter()
                area.load_text(text)
                while screen.result is before:
                    await pilot.pause(0.001)
                update_ms.append((time.perf_counter() - start) * 1000)
                model_ms.extend(screen.result.latencies_ms)
        # Typing while a 10,000-character paste is being tagged: keys must not wait for the model.
        # The baseline is typing into a short text (the pilot's press() itself waits for idle).
        area.load_text(SENTENCES[0])
        area.focus()
        short_ms = []
        for _ in range(20):
            t0 = time.perf_counter()
            await pilot.press("a")
            short_ms.append((time.perf_counter() - t0) * 1000)
        big = ("".join(SENTENCES) * 200)[:10_000]
        area.load_text(big)
        area.focus()
        before, start, key_ms = screen.result, time.perf_counter(), []
        while screen.result is before or len(key_ms) < 5:
            t0 = time.perf_counter()
            await pilot.press("a")
            key_ms.append((time.perf_counter() - t0) * 1000)
            if len(key_ms) > 200:
                break
        paste_s = time.perf_counter() - start
    from screens.highlighter import TAG_DELAY_S

    def summary(values):
        values = sorted(values)
        return {"p50": round(statistics.median(values), 2), "p90": round(values[int(0.9 * (len(values) - 1))], 2), "n": len(values)}

    return {"model_load_s": round(load_s, 2), "model_ms_per_sentence": summary(model_ms),
            "edit_to_table_ms": summary(update_ms), "debounce_ms": TAG_DELAY_S * 1000,
            "key_while_tagging_ms": summary(key_ms), "key_short_text_ms": summary(short_ms), "paste_tagged_s": round(paste_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--runs-dir", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cold-only", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.runs_dir, args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.runs_dir or os.path.join(tmp, "empty-runs")
        cold = cold_start(runs, args.repeats)
        print(f"cold start to first frame: median {cold['median_s']:.3f} s (min {cold['min_s']:.3f}, max {cold['max_s']:.3f}, "
              f"{args.repeats} starts); torch imported by then: {cold['torch_imported']}")
        if args.cold_only:
            return
        runs = args.runs_dir or train_toy(tmp)
        result = asyncio.run(highlighter(runs, args.rounds))
        m, u = result["model_ms_per_sentence"], result["edit_to_table_ms"]
        print(f"highlighter: model load {result['model_load_s']} s; per sentence in the model p50 {m['p50']} ms, p90 {m['p90']} ms "
              f"({m['n']} sentences); edit → entities on screen p50 {u['p50']} ms, p90 {u['p90']} ms "
              f"(includes the {result['debounce_ms']:.0f} ms debounce)")
        k = result["key_while_tagging_ms"]
        b = result["key_short_text_ms"]
        print(f"typing during a 10,000-character paste: a key is handled in p50 {k['p50']} ms, p90 {k['p90']} ms "
              f"({k['n']} keys while the paste was tagged, {result['paste_tagged_s']} s until its entities showed); "
              f"into a short text: p50 {b['p50']} ms, p90 {b['p90']} ms (the pilot's press() waits for idle)")


if __name__ == "__main__":
    main()
