"""``ner-workbench``: the command line. Every stage is also a subcommand.

Exit codes: 0 done · 1 a stage failed · 2 bad input (config, data, model, usage) · 130 cancelled.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Sequence

from .commands import BY_NAME

# Quiet the libraries' own progress bars and notices: the CLI renders our events.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

class CliError(Exception):
    """Bad input: printed as one line, exit code 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from pipelines.config import ConfigError
    from pipelines.data.loaders import DataError
    from pipelines.runtime.engines import EngineError
    from pipelines.modeling.models import ModelError
    from pipelines.resources import MissingResource

    from .run_import import NotARunDir

    return (CliError, ConfigError, DataError, EngineError, ModelError, MissingResource, NotARunDir)


def build_parser() -> argparse.ArgumentParser:
    from pipelines.config import INT8_KERNELS, TARGET_PRESETS
    from pipelines.runtime.engines import ENGINE_NAMES

    parser = argparse.ArgumentParser(
        prog="ner-workbench",
        description="Fine-tune, export, evaluate and tag with a Chinese BERT NER model (PER/LOC/ORG).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add_command(name: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=BY_NAME[name].help)

    def runs_dir_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--runs-dir", default=None, help="run store directory (default: ./runs or $NER_WORKBENCH_RUNS)")

    def run_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", help="run config YAML (see configs/)")
        runs_dir_arg(p)
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. train.epochs=1")
        p.add_argument("--quiet", action="store_true", help="no progress bars or logs, just the result")
        p.add_argument("--resume", default=None, metavar="RUN", help="continue in an existing run (train, pretrain and distill resume from their last checkpoint)")

    p = add_command("run")
    run_args(p)
    p.add_argument("--stages", default=None, help="comma-separated subset of the configured stages")

    p = add_command("train")
    run_args(p)

    p = add_command("pretrain")
    run_args(p)

    p = add_command("distill")
    run_args(p)

    def rpc_args(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--rpc", default=None, metavar="HOST:PORT", help=f"a TVM RPC tracker: {what}")
        p.add_argument("--rpc-key", default=None, metavar="KEY", help="the key of the tracker's devices to use (see `ner-workbench devices --rpc HOST:PORT`)")

    def model_command(name: str, model_help: str = "run id, name or directory", required: bool = True) -> argparse.ArgumentParser:
        p = add_command(name)
        p.add_argument("--model", required=required, help=model_help)
        runs_dir_arg(p)
        p.add_argument("--quiet", action="store_true", help="no progress bars or logs, just the result")
        return p

    p = model_command("export")
    p.add_argument("--shape", default=None, help="BATCHxSEQ, default from the run's config (1x256)")

    p = model_command("compile")
    p.add_argument("--precision", default=None, help="comma-separated: fp32,fp16,int8 (default: the run's config)")
    p.add_argument("--shape", default=None, help="comma-separated BATCHxSEQ list, e.g. 1x128,1x256 (default: the export shape; a BiLSTM: batch 1 and 64 at a symbolic length)")
    p.add_argument("--profile", default=None, metavar="BATCHESxLENGTHS",
                   help="a shape profile, one engine of any batch and length: e.g. 1,8,32x32,64,128 builds all nine; "
                        "1,64xany builds batch 1 and 64 at a symbolic length (BiLSTM models)")
    p.add_argument("--target", default=None, help=f"host (this CPU, default), {', '.join(TARGET_PRESETS)}, or a TVM target as JSON")
    p.add_argument("--int8-kernel", default=None, choices=INT8_KERNELS,
                   help="the int8 GEMM kernel (default auto: the fastest the target runs; avx2-pairs: 6-bit weights, fewer multiplies)")
    p.add_argument("--int8-attention", action="store_true", default=None,
                   help="attention's softmax @ V in int8 too (u8 probabilities, V per column; no faster with AVX2's kernel)")
    p.add_argument("--tune-trials", type=_at_least(0, int), default=None, help="MetaSchedule trials in all (0: default schedules plus earlier records)")
    p.add_argument("--tune-minutes", type=_at_least(0.01, float), default=None, help="stop tuning after this long, keeping what was measured")
    rpc_args(p, "tuning measures on the tracker's devices of --rpc-key, as many at once as are free")

    p = model_command("bench")
    p.add_argument("--engines", default=None, help=f"comma-separated: {', '.join(ENGINE_NAMES)}")
    p.add_argument("--batch", default=None, help="comma-separated batch sizes, e.g. 1,8")
    p.add_argument("--seq", default=None, help="comma-separated sequence lengths, e.g. 128,256")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--instances", type=_at_least(1, int), default=None, metavar="N",
                   help="also run N processes per engine over the whole split at once, the cores split between them (aggregate sentences/s)")
    p.add_argument("--corpus-sentences", type=_at_least(0, int), default=None, metavar="N",
                   help="whole-split throughput over the eval split's first N sentences only (0: skip it; default: the config's bench.corpus_sentences, all)")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="also write the report as JSON (- for stdout)")
    rpc_args(p, "the TVM engines run on a device of --rpc-key (rows tvm-fp32+rpc-KEY), timed on its clock; the others here")

    data_help = "conll:PATH, msra[:SPLIT], hub:ID[:SPLIT] or news: held-out People's Daily news (default: the run's eval split)"
    model_or_dir = "run id, name or directory, or a model directory"
    p = model_command("infer", model_or_dir)
    p.add_argument("--data", default=None, help=data_help)
    p.add_argument("--engine", default="torch", help=", ".join(ENGINE_NAMES))
    p.add_argument("--out", default=None, help="predictions file (default: the run's eval/SPLIT-ENGINE.predictions.jsonl)")

    p = model_command("eval", model_or_dir, required=False)
    p.add_argument("--data", default=None, help=data_help)
    p.add_argument("--engine", default="torch", help=", ".join(ENGINE_NAMES))
    p.add_argument("--predictions", default=None, metavar="FILE", help="score saved predictions (from infer) instead of running a model")
    p.add_argument("--strict", action="store_true", help="seqeval strict IOB2 mode")
    p.add_argument("--decode", choices=("argmax", "bio"), default=None, help="argmax, or bio: valid BIO only (default: the run's eval.decode)")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="also write the scores as JSON (- for stdout)")
    p.add_argument("--errors", action="store_true", help="also print the entity errors per kind and type (missed, spurious, wrong type / boundary)")
    rpc_args(p, "a TVM --engine runs on a device of --rpc-key, the tags decoded here (files test-tvm-fp32+rpc-KEY.*)")

    p = add_command("tag")
    p.add_argument("--model", required=True, help="run id, name or directory, or a model directory")
    p.add_argument("--engine", default="torch", help=", ".join(ENGINE_NAMES))
    p.add_argument("--json", action="store_true", help="print entities as JSON")
    p.add_argument("--decode", choices=("argmax", "bio"), default=None, help="argmax, or bio: valid BIO only (default: the run's eval.decode)")
    p.add_argument("text", nargs="*", help="text to tag (- reads standard input)")
    p.add_argument("--input", default=None, metavar="FILE", help="tag each line of FILE (- for standard input), of any size, into JSON lines")
    p.add_argument("--out", default=None, metavar="FILE", help="with --input: write the JSON lines to FILE (default: standard output)")
    p.add_argument("--workers", type=_at_least(1, int), default=1, help="with --input: local processes (with --ray: Ray actors, default one per CPU)")
    p.add_argument("--ray", default=None, metavar="auto|ADDRESS", help="with --input FILE: tag on Ray (auto: Ray's own rules, else the cluster at ADDRESS)")
    p.add_argument("--quiet", action="store_true", help="with --input: no progress bar")
    runs_dir_arg(p)

    p = add_command("report")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run id, name or directory; several runs go side by side")
    p.add_argument("--out", default=None, metavar="DIR", help="where report.md, report.html and figures/ go (default: the first run's report/)")
    runs_dir_arg(p)

    p = add_command("import")
    p.add_argument("dir", metavar="DIR", help="a run directory (config.yaml and model/), e.g. copied from the machine that trained it")
    p.add_argument("--in-place", action="store_true", help="register the directory where it is instead of copying it into the store")
    runs_dir_arg(p)

    p = add_command("runs")
    p.add_argument("--json", action="store_true")
    runs_dir_arg(p)

    p = add_command("devices")
    p.add_argument("--rpc", required=True, metavar="HOST:PORT", help="the TVM RPC tracker")
    p.add_argument("--json", action="store_true")

    p = add_command("delete")
    p.add_argument("runs", nargs="*", metavar="RUN", help="run id, name (the newest such run) or directory")
    p.add_argument("--prefix", action="store_true", help="also match RUN as an id prefix")
    p.add_argument("--unfinished", action="store_true", help="every failed or interrupted run")
    runs_dir_arg(p)

    p = add_command("validate")
    p.add_argument("config")

    p = add_command("tui")
    runs_dir_arg(p)
    return parser


def _cancel(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in (None, "tui"):
        from .app import run_app  # the terminal app: Textual only, torch loads lazily in its workers

        return run_app(getattr(args, "runs_dir", None))
    # A cancel from the job runner (SIGTERM) unwinds like Ctrl-C: stages get marked interrupted.
    signal.signal(signal.SIGTERM, _cancel)
    from rich.console import Console

    err = Console(stderr=True, soft_wrap=True)  # one line per error, never wrapped
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        err.print("[yellow]cancelled[/]")
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        from .runner import StageFailed, one_line

        if isinstance(exc, _user_errors()):
            err.print(f"[red]error:[/] {one_line(exc)}", highlight=False, markup=True)
            return 2
        if isinstance(exc, StageFailed):
            err.print(f"[red]failed:[/] {exc}", highlight=False)
            return 1
        if os.environ.get("NER_WORKBENCH_DEBUG"):
            raise
        where = _save_traceback(args)
        err.print(f"[red]error:[/] {type(exc).__name__}: {one_line(exc)} (traceback: {where})", highlight=False)
        return 1


def _save_traceback(args) -> str:
    """A command that is not a stage has no run to keep its error.log: its traceback goes
    to the store's errors/ folder, so one line on the terminal loses nothing."""
    import time
    import traceback

    from pipelines.files import write_text

    from .commands import display_path
    from .store import default_runs_dir

    runs_dir = getattr(args, "runs_dir", None) or default_runs_dir()
    path = os.path.join(runs_dir, "errors", f"{time.strftime('%Y%m%d-%H%M%S')}-{args.command}.log")
    try:
        write_text(path, f"ner-workbench {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    except OSError as why:
        return f"not saved: {why}"
    return display_path(path)


# -- commands ---------------------------------------------------------------------


def _parse_overrides(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--set needs KEY=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


class _Sinks(list):
    """The Rich renderer, plus a JSON-lines copy of every event when run as a job."""

    def __init__(self, quiet: bool) -> None:
        from pipelines.events import JsonlSink

        from .jobs import EVENTS_ENV
        from .render import RichRenderer

        super().__init__([RichRenderer(quiet=quiet)])
        if os.environ.get(EVENTS_ENV):
            self.append(JsonlSink(os.environ[EVENTS_ENV]))

    def close(self) -> None:
        for sink in self:
            sink.close()


def cmd_run(args, stages: list[str] | None = None) -> int:
    from pipelines.config import load_config

    from .references import resolve_references
    from .store import RunStore

    cfg = load_config(args.config, _parse_overrides(args.set))
    if stages is None:
        stages = cfg.stages
        if getattr(args, "stages", None):
            stages = [s.strip() for s in args.stages.split(",") if s.strip()]
            unknown = [s for s in stages if s not in cfg.stages]
            if unknown:
                raise CliError(f"--stages: {', '.join(unknown)} not among the configured stages ({', '.join(cfg.stages)})")
    store = RunStore(args.runs_dir)

    def run_upstream(upstream, path):  # a config that a reference names, run first
        record = store.create_run(upstream, path)
        _execute(args, record, upstream, upstream.stages, store)
        return record.dir

    resolve_references(cfg, stages, store, run_upstream, os.path.dirname(os.path.abspath(args.config)))
    if args.resume:
        run = store.find(args.resume)
        if run is None:
            raise CliError(f"--resume: no run {args.resume!r} (see `ner-workbench runs`)")
    else:
        run = store.create_run(cfg, os.path.abspath(args.config))
    _print_summary(run.dir, _execute(args, run, cfg, stages, store))
    return 0


def cmd_train(args) -> int:
    return cmd_run(args, ["train"])


def cmd_pretrain(args) -> int:
    return cmd_run(args, ["pretrain"])


def cmd_distill(args) -> int:
    return cmd_run(args, ["distill"])


def _in(stage_result: dict) -> str:
    """' in bf16' for a training stage that recorded its precision."""
    return f" in {stage_result['precision']}" if stage_result.get("precision") else ""


def _took(stage_result: dict) -> str:
    """'95 s', or '95 s (1,800 s across resumes)' for a resumed pretrain or distill."""
    total = stage_result.get("total_seconds")
    resumed = f" ({total:,.0f} s across resumes)" if total is not None and total - stage_result["seconds"] > 1 else ""
    return f"{stage_result['seconds']:.0f} s{resumed}"


def _print_summary(run_dir: str, results: dict) -> None:
    from rich.console import Console

    out = Console()
    if "eval" in results:
        _print_scores(results["eval"], out)
    if "pretrain" in results:
        p = results["pretrain"]
        out.print(f"pretrain: {p['steps']} steps, held-out MLM accuracy {p['mlm_accuracy']:.4f}, {_took(p)}, {p['tokens_per_s']} tokens/s{_in(p)}")
    if "distill" in results:
        d = results["distill"]
        out.print(f"distill: {d['steps']} steps, agreement with the teacher {d['teacher_agreement']:.4f}, {_took(d)}, {d['tokens_per_s']} tokens/s{_in(d)}")
    if "compile" in results:
        for name, info in results["compile"].items():
            out.print(f"compile {name}: {info['artifact_mb']:.1f} MB in {info['compile_s']:.1f} s")
    if "train" in results:
        t = results["train"]
        out.print(f"train: best dev F1 {t['best_dev_f1']:.4f} after {t['epochs']} epochs, {t['train_seconds']:.0f} s, {t['tokens_per_s']} tokens/s{_in(t)}")
    if "export" in results:
        e = results["export"]
        parts = [f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}" for k, v in e.items()]
        out.print("export parity: " + ", ".join(parts))
    out.print(f"results: {run_dir}")


def _print_scores(scores: dict, out) -> None:
    from rich.table import Table

    table = Table(title=f"{scores.get('split', '')} · {scores.get('engine', '')} · {scores.get('sentences', '?')} sentences ({scores.get('mode', 'default')} mode, {scores.get('decode', 'argmax')} decoding)")
    for col in ("type", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="right" if col != "type" else "left")
    for name, row in scores["per_type"].items():
        table.add_row(name, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", str(row["support"]))
    table.add_row("[bold]micro", f"[bold]{scores['precision']:.4f}", f"[bold]{scores['recall']:.4f}", f"[bold]{scores['f1']:.4f}", "")
    out.print(table)
    out.print(f"entity F1 {scores['f1']:.4f} · token accuracy {scores['accuracy']:.4f}")
    news = scores.get("news")
    if news:
        per_type = " · ".join(f"{t} {row['f1']:.4f}" for t, row in news["per_type"].items())
        out.print(f"held-out news ({news['sentences']:,} sentences): entity F1 {news['f1']:.4f} ({per_type})")


def _print_errors(scores: dict, out) -> None:
    """The entity errors per kind and type (``errors`` of the scores: see pipelines/evaluate/errors.py)."""
    from rich.table import Table

    errors = scores["errors"]
    types = list(errors["by_type"])
    table = Table(title="entity errors", caption="by gold type (spurious: by predicted type)")
    for col in ("kind", "all", *types):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for kind, n in errors["counts"].items():
        table.add_row(kind, f"[bold]{n}", *(str(errors["by_type"][t][kind]) for t in types))
    table.add_row("[bold]errors", f"[bold]{sum(errors['counts'].values())}", *(f"[bold]{sum(errors['by_type'][t].values())}" for t in types))
    out.print(table)


def _resolve_model(ref: str, runs_dir: str | None, register: bool = True) -> tuple[str, "RunRecord | None"]:  # noqa: F821
    """A run (by id, name or directory) or a bare model directory. A run directory this
    store does not know (made on another machine) becomes one of its runs, registered
    in place, unless not ``register`` (a command that only reads it)."""
    from .run_import import import_run, missing_parts
    from .store import RunStore

    store = RunStore(runs_dir)
    run = store.find(ref)
    if run is not None:
        return run.dir, run
    if os.path.isdir(ref):
        if register and not missing_parts(ref):
            run, new, how = import_run(store, ref, in_place=True)
            elsewhere = "" if new or os.path.samefile(run.dir, ref) else f"; its directory {run.dir} is the one used"
            print(f"imported {ref} as run {run.id} ({how})" if new else f"{ref}: run {run.id} of this store ({how}){elsewhere}", file=sys.stderr)
            return run.dir, run
        return ref, None
    raise CliError(f"no run or directory {ref!r} (see `ner-workbench runs`)")


def _run_config(run) -> "RunConfig":  # noqa: F821
    from pipelines.config import load_config

    return load_config(os.path.join(run.dir, "config.yaml"))


def _run_of(args, verb: str):
    from .run_import import missing_parts

    path, run = _resolve_model(args.model, args.runs_dir)
    if run is None:
        missing = " or ".join(missing_parts(path))
        raise CliError(f"{path}: {verb} works on a run, and this directory has no {missing} (train one with `ner-workbench train CONFIG`)")
    return run, _run_config(run)


def cmd_export(args) -> int:
    run, cfg = _run_of(args, "export")
    if args.shape:
        [cfg.export.shape] = _shapes(args.shape, "--shape")[:1]
    _print_summary(run.dir, _execute(args, run, cfg, ["export"]))
    return 0


def _at_least(low, kind):
    """An argparse type: a number of ``kind`` no smaller than ``low``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} is below {low}")
        return value

    return parse


def _shapes(text: str, flag: str) -> list[list[int]]:
    try:
        return [[int(x) for x in part.lower().split("x")] for part in text.split(",") if part.strip()]
    except ValueError:
        raise CliError(f"{flag} must be BATCHxSEQ[,BATCHxSEQ...], e.g. 1x256, got {text!r}") from None


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CliError(f"{flag} must be comma-separated integers, got {text!r}") from None


def _rpc(args):
    """--rpc HOST:PORT with --rpc-key KEY, as an ``RpcConfig``."""
    from pipelines.config import RpcConfig

    if not args.rpc or not args.rpc_key:
        raise CliError("--rpc HOST:PORT and --rpc-key KEY go together (`ner-workbench devices --rpc HOST:PORT` lists the keys)")
    return RpcConfig.of(args.rpc, args.rpc_key)


def cmd_devices(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from pipelines.config import RpcConfig
    from pipelines.runtime.remote import tracker_devices

    devices = tracker_devices(RpcConfig.of(args.rpc, "any"))
    if args.json:
        print(json.dumps(devices, indent=2))
        return 0
    table = Table("key", "devices", "free", "requests waiting", title=f"RPC tracker {args.rpc}")
    for d in devices:
        table.add_row(d["key"], str(d["total"]), str(d["free"]), str(d["pending"]))
    Console().print(table if devices else f"RPC tracker {args.rpc}: no devices")
    return 0


def _execute(args, run, cfg, stages: list[str], store=None) -> dict:
    """Run stages of a run in this process, rendering their events."""
    from .runner import execute
    from .store import RunStore

    sinks = _Sinks(args.quiet)
    try:
        return execute(cfg, store or RunStore(args.runs_dir), run, stages, sinks)
    finally:
        sinks.close()


def cmd_compile(args) -> int:
    from rich.console import Console

    from pipelines.files import read_json

    run, cfg = _run_of(args, "compile")
    if args.precision:
        cfg.compile.precisions = [p.strip() for p in args.precision.split(",")]
    if args.shape:
        cfg.compile.shapes = _shapes(args.shape, "--shape")
    if args.profile:
        from pipelines.config import ANY_LENGTH, ProfileConfig

        batches, _, lengths = args.profile.lower().partition("x")
        seq = ANY_LENGTH if lengths.strip() == ANY_LENGTH else _ints(lengths, "--profile")
        cfg.compile.profile = ProfileConfig(batch=_ints(batches, "--profile"), seq=seq)
        if not args.shape:
            cfg.compile.shapes = None  # the profile replaces the config's shapes
    if args.target:
        from pipelines.config import parse_target

        try:
            cfg.compile.target = parse_target(args.target)
        except ValueError as err:
            raise CliError(f"--target: {err}") from None
    if args.int8_kernel:
        cfg.compile.quantize.kernel = args.int8_kernel
    if args.int8_attention:
        cfg.compile.quantize.attention = True
    if args.tune_trials is not None:
        cfg.compile.tuning.trials = args.tune_trials
    if args.tune_minutes is not None:
        cfg.compile.tuning.max_minutes = args.tune_minutes
    if args.rpc or args.rpc_key:
        cfg.compile.tuning.rpc = _rpc(args)
    results = _execute(args, run, cfg, ["compile"])["compile"]
    out = Console()
    for name, info in results.items():
        out.print(f"{name}: {info['artifact_mb']:.1f} MB, compiled in {info['compile_s']:.1f} s → {run.dir}/compiled/{name}")
        meta = read_json(os.path.join(run.dir, "compiled", name, "artifact.json"), {}) or {}
        if (meta.get("tuning") or {}).get("records"):
            t = meta["tuning"]
            out.print(f"  tuning: {t['trials']} trials this compile, {t['records']} records in the database used")
            if t.get("kept"):  # the tuned build must beat the default one end to end
                times = ", ".join(f"{build} {ms:.2f} ms" for build, ms in t["p50_ms"].items())
                where = f" on {t['measured_on']}" if t.get("measured_on", "local") != "local" else ""
                out.print(f"  end to end{where}: {times} → kept the {t['kept']} build")
        if meta.get("quantization"):  # int8: which layers are int8, which the budget kept fp32, and why
            from workbench.int8_report import quantization_table

            out.print(quantization_table(meta["quantization"]))
    return 0


def cmd_bench(args) -> int:
    from rich.console import Console

    run, cfg = _run_of(args, "bench")
    if args.engines:
        cfg.bench.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
        from pipelines.runtime.engines import ENGINE_NAMES

        unknown = [e for e in cfg.bench.engines if e not in ENGINE_NAMES]
        if unknown:
            raise CliError(f"--engines: unknown {', '.join(unknown)} (one of: {', '.join(ENGINE_NAMES)})")
    if args.batch:
        cfg.bench.batch = _ints(args.batch, "--batch")
    if args.seq:
        cfg.bench.seq = _ints(args.seq, "--seq")
    if args.iterations:
        cfg.bench.iterations = args.iterations
    if args.instances:
        cfg.bench.instances = args.instances
    if args.corpus_sentences == 0:
        cfg.bench.corpus = False
    elif args.corpus_sentences:
        cfg.bench.corpus, cfg.bench.corpus_sentences = True, args.corpus_sentences
    if args.rpc or args.rpc_key:
        cfg.bench.rpc = _rpc(args)
    _execute(args, run, cfg, ["bench"])
    from pipelines.files import read_json

    report = read_json(os.path.join(run.dir, "bench.json"))
    if args.json_out == "-":
        print(json.dumps(report, indent=2))
        return 0
    if args.json_out:
        from pipelines.files import write_json

        write_json(args.json_out, report)
    _print_bench(report, Console())
    return 0


def _print_bench(report: dict, out) -> None:
    from rich.table import Table

    table = Table(title=f"latency on {report['machine'].get('cpu', '?')} ({report['machine'].get('cores')} cores)")
    for col in ("engine", "batch", "seq", "mean ms", "p50 ms", "p99 ms", "sent/s", "tokens/s", "size MB", "compile s"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for r in report["results"]:
        lat = r["latency_ms"]
        table.add_row(
            r["engine"], str(r["batch"]), str(r["seq"]), f"{lat['mean']:.2f}", f"{lat['p50']:.2f}", f"{lat['p99']:.2f}",
            f"{r['throughput']['sentences_per_s']:.1f}", f"{r['throughput']['tokens_per_s']:.0f}",
            f"{r['artifact_mb']:.1f}" if r["artifact_mb"] is not None else "—",
            f"{r['compile_s']:.1f}" if r["compile_s"] is not None else "—",
        )
    out.print(table)
    for s in report.get("skipped", []):
        out.print(f"[dim]skipped {s['engine']} at {s['batch']}x{s['seq']}: {s['reason']}[/]")
    for r in report["results"]:
        if r.get("device", "local") != "local":
            trip = f"; a call from here, inputs and logits sent: {r['roundtrip_ms']:.2f} ms p50" if r.get("roundtrip_ms") is not None else ""
            out.print(f"[dim]{r['engine']} at {r['batch']}x{r['seq']}: timed on {r['device']}, on its clock{trip}[/]")
    _print_corpus(report, out)


def _print_corpus(report: dict, out) -> None:
    """The whole-test-set throughput table: one row per engine and instance count."""
    from rich.table import Table

    rows = report.get("corpus") or []
    if rows:
        first = rows[0]
        table = Table(
            title=f"whole-test-set throughput: {report.get('corpus_split', '?')}, {first['sentences']:,} sentences",
            caption=f"{first['characters']:,} chars, batch {first['batch_size']}, median of {first['passes']} passes; "
            "N instances: each runs the whole split, sent/s of all together",
        )
        for col in ("engine", "instances", "threads each", "pass s", "sent/s", "chars/s", "vs 1 instance", "padding eff"):
            table.add_column(col, justify="left" if col == "engine" else "right")
        engines = list(dict.fromkeys(r["engine"] for r in rows))
        single = {r["engine"]: r["sentences_per_s"] for r in rows if r["instances"] == 1}
        for r in sorted(rows, key=lambda r: (engines.index(r["engine"]), r["instances"])):
            base = single.get(r["engine"])
            table.add_row(
                r["engine"], str(r["instances"]), str(r["threads"]), f"{r['seconds']:.2f}",
                f"{r['sentences_per_s']:,.1f}", f"{r['chars_per_s']:,.0f}",
                f"{r['sentences_per_s'] / base:.2f}x" if base and r["instances"] > 1 else "—",
                f"{r['padding_efficiency']:.0%}" if r.get("padding_efficiency") is not None else "—",
            )
        out.print(table)
    for s in report.get("corpus_skipped", []):
        out.print(f"[dim]skipped {s['engine']} x{s['instances']} over the corpus: {s['reason']}[/]")


def _split_for(args, path: str, run):
    """(dataset, split name, strict by default) from --data, else the run's eval split, else MSRA test."""
    from pipelines.data.loaders import data_for
    from pipelines.evaluate.scoring import split_from_spec

    if args.data or run is None:
        return (*split_from_spec(path, args.data or "msra:test"), False)
    cfg = _run_config(run)
    return data_for(cfg).splits[cfg.eval.split], cfg.eval.split, cfg.eval.strict


def cmd_infer(args) -> int:
    from rich.console import Console

    from pipelines.events import Reporter
    from pipelines.evaluate.scoring import infer, predictions_path

    path, run = _resolve_model(args.model, args.runs_dir)
    dataset, split, _ = _split_for(args, path, run)
    out = args.out or (predictions_path(path, split, args.engine) if run else None)
    if out is None:
        raise CliError("--out is needed for a model directory outside a run")
    sinks = _Sinks(args.quiet)
    try:
        sentences, _, _, seconds = infer(path, dataset, split, Reporter(*sinks, stage="infer"), args.engine, out_path=out)
    finally:
        sinks.close()
    Console().print(f"{len(sentences)} sentences of {split} through {args.engine} in {seconds:.1f} s → {out}")
    return 0


def cmd_eval(args) -> int:
    from rich.console import Console

    from pipelines.events import Reporter
    from pipelines.evaluate.scoring import evaluate, score_predictions

    if args.predictions:
        if args.rpc:
            raise CliError("--predictions scores a saved file: no --rpc")
        scores = score_predictions(args.predictions, args.strict)
    else:
        if not args.model:
            raise CliError("eval needs --model RUN (or --predictions FILE)")
        rpc = _rpc(args) if args.rpc or args.rpc_key else None
        path, run = _resolve_model(args.model, args.runs_dir)
        dataset, split, strict = _split_for(args, path, run)
        sinks = _Sinks(args.quiet)
        try:
            reporter = Reporter(*sinks, stage="eval")
            scores = evaluate(path, dataset, split, reporter, engine_name=args.engine, strict=args.strict or strict, decoder=args.decode, rpc=rpc)
        finally:
            sinks.close()
    if args.json_out == "-":
        print(json.dumps(scores, ensure_ascii=False, indent=2))
    else:
        out = Console()
        _print_scores(scores, out)
        if args.errors:
            _print_errors(scores, out)
        if args.json_out:
            from pipelines.files import write_json

            write_json(args.json_out, scores)
    return 0

def cmd_tag(args) -> int:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from pipelines.runtime.tagger import Tagger

    path, _ = _resolve_model(args.model, args.runs_dir, register=False)  # reads the model only
    if args.input:
        return _tag_input(args, path)
    if not args.text:
        raise CliError("tag needs TEXT (or --input FILE)")
    if args.out or args.ray or args.workers > 1:
        raise CliError("--out, --workers and --ray go with --input FILE")
    text = sys.stdin.read() if args.text == ["-"] else " ".join(args.text)
    tagger = Tagger.open(path, args.engine, args.decode)
    entities = tagger.tag(text)
    if args.json:
        print(json.dumps({"text": text, "entities": [e.as_dict() for e in entities]}, ensure_ascii=False, indent=2))
        return 0
    out = Console()
    styled = Text(text)
    for e in entities:
        styled.stylize(ENTITY_STYLES.get(e.type, "bold"), e.start, e.end)
    out.print(styled)
    table = Table("type", "start", "end", "text", "confidence")
    for e in entities:
        table.add_row(Text(e.type, style=ENTITY_STYLES.get(e.type, "bold")), str(e.start), str(e.end), e.text, f"{e.confidence:.3f}")
    out.print(table if entities else "[dim]no entities[/]")
    return 0


def _tag_input(args, path: str) -> int:
    """`tag --input`: the JSON lines go to --out or stdout, the progress to stderr."""
    from contextlib import ExitStack

    from pipelines.events import Reporter
    from pipelines.files import atomic_path
    from pipelines.runtime.stream import RayMissing, TagSpec, tag_input

    if args.text or args.json:
        raise CliError("--input tags a file: no TEXT, and its output is always JSON lines")
    sinks = _Sinks(args.quiet)
    try:
        with ExitStack() as stack:
            out = sys.stdout
            if args.out:
                out = stack.enter_context(open(stack.enter_context(atomic_path(args.out)), "w", encoding="utf-8"))
            spec = TagSpec(path, args.engine, args.decode)
            tag_input(spec, args.input, out, Reporter(*sinks, stage="tag"), workers=args.workers, ray=args.ray)
    except RayMissing as exc:
        from rich.markup import escape

        raise CliError(escape(str(exc))) from None  # printed as markup: keep its [ray]
    except BrokenPipeError:  # the reader of stdout went away (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        sinks.close()
    return 0


ENTITY_STYLES = {"PER": "bold black on #f4a261", "LOC": "bold black on #8ecae6", "ORG": "bold black on #b5e48c"}


def cmd_runs(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .store import RunStore, model_label

    runs = RunStore(args.runs_dir).list_runs()
    if args.json:
        from dataclasses import asdict

        print(json.dumps([asdict(r) for r in runs], ensure_ascii=False, indent=2))
        return 0
    table = Table("run", "status", "model", "data", "stages", "test F1")
    colors = {"done": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}
    for r in runs:
        stages = " ".join(f"[{colors.get(s.status, 'white')}]{s.stage}[/]" for s in r.stages)
        f1 = r.test_f1()
        table.add_row(r.id, f"[{colors.get(r.status, 'white')}]{r.status}[/]", model_label(r, runs), r.dataset or "", stages, f"{f1:.4f}" if f1 is not None else "")
    Console().print(table if runs else "no runs yet: try `ner-workbench run configs/quickstart.yaml`")
    return 0


def cmd_delete(args) -> int:
    from .store import UNFINISHED, RunBusy, RunStore

    store = RunStore(args.runs_dir)
    targets = []
    for ref in args.runs:
        run = store.find(ref, prefix=args.prefix)
        if run is None:
            hint = " (an id prefix deletes only with --prefix)" if not args.prefix and store.find(ref) else ""
            raise CliError(f"no run {ref!r}{hint} (see `ner-workbench runs`)")
        targets.append(run)
    if args.unfinished:
        targets += [r for r in store.list_runs() if r.status in UNFINISHED]
    if not targets:
        raise CliError("name the runs to delete, or pass --unfinished")
    for run in {r.id: r for r in targets}.values():
        try:
            freed = store.delete_run(run.id)
        except RunBusy as err:
            raise CliError(str(err)) from None
        print(f"deleted {run.id} ({run.status}, {freed / 1e6:.1f} MB)")
    return 0


def cmd_import(args) -> int:
    """The run's id on stdout (for scripts), what was done on stderr."""
    from .commands import display_path
    from .run_import import import_run
    from .store import RunStore

    run, new, how = import_run(RunStore(args.runs_dir), args.dir, in_place=args.in_place)
    if new:
        stages = ", ".join(s.stage for s in run.stages) or "none"
        print(f"imported {args.dir} as run {run.id}: {how} ({display_path(run.dir)}); finished stages: {stages}", file=sys.stderr)
    else:
        print(f"{args.dir}: already run {run.id} of this store ({how}), nothing imported", file=sys.stderr)
    print(run.id)
    return 0


def cmd_validate(args) -> int:
    from pipelines.config import load_config

    cfg = load_config(args.config)
    print(cfg.to_yaml(), end="")
    for notice in cfg.compile.notices:
        print(f"# notice: compile.{notice}", file=sys.stderr)
    print(f"# {args.config}: valid (config hash {cfg.digest()})", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    run_dirs = []
    for ref in args.runs:
        path, run = _resolve_model(ref, args.runs_dir)
        if run is None:
            raise CliError(f"{path}: a directory, not a run of this run store (see `ner-workbench runs`, or pass --runs-dir)")
        run_dirs.append(run.dir)
    for path in write_report(run_dirs, args.out):
        print(path)
    return 0


COMMANDS = {
    "run": cmd_run,
    "train": cmd_train,
    "pretrain": cmd_pretrain,
    "distill": cmd_distill,
    "export": cmd_export,
    "compile": cmd_compile,
    "bench": cmd_bench,
    "report": cmd_report,
    "infer": cmd_infer,
    "eval": cmd_eval,
    "tag": cmd_tag,
    "import": cmd_import,
    "runs": cmd_runs,
    "devices": cmd_devices,
    "delete": cmd_delete,
    "validate": cmd_validate,
}

if __name__ == "__main__":
    sys.exit(main())
