"""What a config's ``distill.teacher`` and ``model.pretrained`` name, made concrete.

Either may be a path (kept; a run directory given as ``model.pretrained`` means its
model), a run id or name (its newest run's directory; for ``model.pretrained``, that
run's model), a hub id (kept), or a run config file: the
newest finished run of that config, which is run first when there is none (a
relative path is looked up from the working directory, then beside the config that
names it). So one config can chain the whole recipe (``configs/best_offline.yaml``:
train a teacher, then distil it) and a second invocation reuses what the first
trained.
"""

from __future__ import annotations

import os
from typing import Callable

from pipelines.config import ConfigError, RunConfig, load_config

# (config, its path) -> the directory of a new run that executed all its stages
RunConfigFn = Callable[[RunConfig, str], str]


def resolve_references(
    cfg: RunConfig, stages, store, run_config: RunConfigFn, config_dir: str = ".", _chain: tuple[str, ...] = ()
) -> None:
    from pipelines.modeling.models import resolve_model_dir

    resolved: dict[tuple, str] = {}  # teacher and student often name the same config: look it up once

    def run_dir(ref: str | None, seed: int | None = None) -> str | None:
        if (ref, seed) in resolved:
            return resolved[ref, seed]
        if _names_config(ref):
            for path in (ref, os.path.join(config_dir, ref)):
                if os.path.isfile(path):
                    resolved[ref, seed] = _config_run(path, store, run_config, _chain, seed)
                    return resolved[ref, seed]
        found = store.find(ref) if ref and not os.path.exists(ref) else None
        return found.dir if found else ref

    if "distill" in stages:
        teacher, seeds = cfg.distill.teacher, cfg.distill.teacher_seeds
        if seeds:
            # each config file once per seed; a directory or run name is one run already
            refs = teacher if isinstance(teacher, list) else [teacher]
            cfg.distill.teacher = [run_dir(ref, s) for ref in refs for s in (seeds if _names_config(ref) else [None])]
        else:
            cfg.distill.teacher = [run_dir(t) for t in teacher] if isinstance(teacher, list) else run_dir(teacher)
    if cfg.model.pretrained:
        found = run_dir(cfg.model.pretrained)
        if found != cfg.model.pretrained or os.path.isdir(found):  # a hub id stays as it is
            cfg.model.pretrained = resolve_model_dir(found)


def _names_config(ref: str | None) -> bool:
    return bool(ref) and ref.endswith((".yaml", ".yml"))


def _config_run(path: str, store, run_config: RunConfigFn, chain: tuple[str, ...], seed: int | None = None) -> str:
    """The newest finished run whose recorded config is ``path``'s (at ``seed`` where
    given; references resolved); else a new run of it."""
    key = os.path.abspath(path)
    if key in chain:
        raise ConfigError(f"{path}: the configs refer to each other in a loop ({' -> '.join(chain + (key,))})")
    cfg = load_config(path)
    if seed is not None and seed != cfg.seed:  # named for its seed in the run list
        cfg.seed, cfg.name = seed, f"{cfg.name}-s{seed}"
    resolve_references(cfg, cfg.stages, store, run_config, os.path.dirname(key), chain + (key,))
    for run in store.list_runs():  # newest first
        if run.name == cfg.name and run.status == "done" and _recorded_digest(run.dir) == cfg.digest():
            return run.dir
    return run_config(cfg, key)


def _recorded_digest(run_dir: str) -> str | None:
    try:
        return load_config(os.path.join(run_dir, "config.yaml")).digest()
    except ConfigError:  # missing or from an older version of the schema
        return None
