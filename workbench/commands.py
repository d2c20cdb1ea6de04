"""The CLI's commands as data: the one table the CLI's parser and the jobs backend
both read, so the TUI builds a job's command line without importing the CLI.

The parser (``workbench.cli.build_parser``) adds each command's own options; a test
checks that it has a parser for every command here and no other.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    name: str
    help: str  # the CLI's one-line help
    takes: str | None = None  # what a job runs it on: "config" (a YAML path), "run" (--model RUN), "runs" (RUN…), None: no job
    title: str | None = None  # how the jobs screen offers it (None: not offered)
    engine: bool = False  # takes --engine
    runs_dir: bool = True  # takes --runs-dir

    @property
    def target(self) -> str | None:
        """What the jobs screen offers to start it on: a config or a run ("runs": one run)."""
        return "run" if self.takes == "runs" else self.takes


# In the order the jobs screen lists them.
COMMANDS = (
    Command("run", "run every configured stage of a config, in order", "config", "run: every stage of a config"),
    Command("train", "fine-tune the model of a config (a new run)", "config", "train: fine-tune a config's model"),
    Command("export", "TorchScript + torch.export of a run's model, with parity checks", "run", "export: TorchScript + torch.export of a run"),
    Command("eval", "entity-level P/R/F1 and token accuracy of a model on a split", "run", "eval: score a run's model", engine=True),
    Command(
        "compile", "compile a run's model with TVM (one artifact per precision and shape)", "run",
        "compile: TVM artifacts of a run (its config's precisions)",
    ),
    Command("bench", "latency / throughput of engines side by side, interleaved in one process", "run", "bench: latency / throughput of a run's engines"),
    Command(
        "report", "a Markdown + HTML report of runs: environment, quality, engines, errors, plots", "runs",
        "report: Markdown + HTML report of a run (tables and plots)",
    ),
    Command(
        "infer", "run an engine over a split and save its predictions (JSON lines)", "run",
        "infer: a run's engine over its eval split, predictions saved", engine=True,
    ),
    Command(
        "pretrain", "masked-LM pretraining of the config's preset on unlabeled text", "config",
        "pretrain: masked-LM pretraining of a config's preset",
    ),
    Command("validate", "check a config and print it fully resolved", "config", "validate: check a config", runs_dir=False),
    Command(
        "distill", "a compact student learns a fine-tuned teacher's soft labels on unlabeled text", "config",
        "distill: a config's student learns its teacher's soft labels",
    ),
    Command("tag", "print the entities in a text, or tag a file (one sentence a line) into JSON lines"),
    Command("import", "make a run directory from another store or machine a run of this one (copied, or --in-place)"),
    Command("runs", "the run history"),
    Command("devices", "the devices of a TVM RPC tracker, per key: how many, free, requests waiting", runs_dir=False),
    Command("delete", "delete runs: their directories and their entries in the history"),
    Command("tui", "open the terminal app (the default with no command)"),
)
BY_NAME = {c.name: c for c in COMMANDS}


def command_names() -> set[str]:
    return set(BY_NAME)


def job_argv(name: str, target: str, runs_dir: str, engine: str = "torch") -> list[str]:
    """The command line (less the program) that runs command ``name`` on a config path or a run."""
    command = BY_NAME.get(name)
    if command is None or command.takes is None:
        raise ValueError(f"{name}: not a command a job can run")
    argv = [name, target] if command.takes in ("config", "runs") else [name, "--model", target]
    if command.engine:
        argv += ["--engine", engine]
    if command.runs_dir:
        argv += ["--runs-dir", runs_dir]
    return argv


def display_path(path: str) -> str:
    """Relative to the working directory when inside it (shorter, and the same on every machine)."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def runs_dir_option(runs_dir: str) -> str:
    """`` --runs-dir DIR`` for a command a person reads, or nothing for the default store."""
    from .store import default_runs_dir

    if os.path.abspath(runs_dir) == os.path.abspath(default_runs_dir()):
        return ""
    return " --runs-dir " + shlex.quote(display_path(runs_dir))


def command_line(name: str, target: str, runs_dir: str) -> str:
    """What a person types to run command ``name`` on a run or a config."""
    argv = job_argv(name, target, runs_dir)
    if "--runs-dir" in argv:
        at = argv.index("--runs-dir")
        del argv[at : at + 2]
    return shlex.join(["ner-workbench", *argv]) + (runs_dir_option(runs_dir) if BY_NAME[name].runs_dir else "")
