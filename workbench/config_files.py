"""Config files for the editor: checking text as it is typed, templates, atomic saves.

UI-free. A check returns the same one-line error the CLI prints
(``FILE: key.path: message (allowed …)``) plus the key path and the line it is on.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import yaml

REPO_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
QUICKSTART = os.path.join(REPO_CONFIGS, "quickstart.yaml")
NEEDS_COMPILE = "not available yet: the compile stage isn't built"
# The quickstart, then compiled and benchmarked: TVM fp32 + fp16 against the other engines.
COMPILE_FP16 = """compile:
  precisions: [fp32, fp16]
bench:
  engines: [torch, torchscript, ort, tvm-fp32, tvm-fp16]
"""
# The same with int8 too: TVM fp32 / fp16 / int8 (int8 calibrated on train with
# compile.quantize's defaults) side by side with ONNX Runtime's dynamic int8.
COMPILE_ALL = """compile:
  precisions: [fp32, fp16, int8]
bench:
  engines: [torch, ort, ort-int8, tvm-fp32, tvm-fp16, tvm-int8]
"""


@dataclass(frozen=True)
class Template:
    name: str
    title: str
    path: str | None  # None: not available yet
    note: str = ""
    extra_stages: tuple[str, ...] = ()  # appended to the base config's stages
    extra_yaml: str = ""  # sections appended to the base config

    @property
    def available(self) -> bool:
        if self.path is None or not os.path.isfile(self.path):
            return False
        return all(stage in _stage_names() for stage in self.extra_stages)


def _stage_names() -> tuple[str, ...]:
    """The stages a config may list (its schema's ``stages`` literal)."""
    from typing import get_args

    from pipelines.config import RunConfig

    [item] = get_args(RunConfig.model_fields["stages"].annotation)
    return get_args(item)


TEMPLATES = (
    Template("quickstart", "Quickstart (BiLSTM tagger, embedded MSRA)", os.path.join(REPO_CONFIGS, "quickstart.yaml")),
    Template(
        "peoples_daily_bert_base",
        "People's Daily reference recipe (bert-base-chinese, hub)",
        os.path.join(REPO_CONFIGS, "peoples_daily_bert_base.yaml"),
    ),
    Template(
        "compile_fp16", "Compile fp16 (TVM): quickstart + compile fp32/fp16 + bench", QUICKSTART,
        NEEDS_COMPILE, ("compile", "bench"), COMPILE_FP16,
    ),
    Template(
        "compile_int8", "Compile fp32/fp16/int8 (TVM): quickstart + compile all three + bench", QUICKSTART,
        NEEDS_COMPILE, ("compile", "bench"), COMPILE_ALL,
    ),
)


@dataclass(frozen=True)
class ConfigProblem:
    message: str  # the one line, as the CLI prints it
    key_path: str | None = None
    line: int | None = None  # 1-based

    @property
    def summary(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


def check_config_text(text: str, source: str = "<config>") -> ConfigProblem | None:
    """None when ``text`` is a valid run config, else what is wrong and where."""
    from pipelines.config import ConfigError, parse_config

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        where = f":{line}" if line else ""
        return ConfigProblem(f"{source}{where}: invalid YAML: {problem}", None, line)
    try:
        parse_config(raw, source)
    except ConfigError as err:
        message = str(err)
        key_path = _key_path(message, source)
        return ConfigProblem(message, key_path, find_key_line(text, key_path) if key_path else None)
    return None


def _key_path(message: str, source: str) -> str | None:
    rest = message[len(source) + 2 :] if message.startswith(source + ": ") else message
    head = rest.split(": ", 1)[0]
    return head if re.fullmatch(r"[A-Za-z0-9_.]+", head) else None


def find_key_line(text: str, key_path: str) -> int | None:
    """1-based line of the deepest key of ``key_path`` that the YAML text has."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in key_path.split("."):
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line




def from_template(template: Template, name: str) -> str:
    """The template's text with its ``name:`` set to ``name`` (comments kept)."""
    if not template.available:
        raise ValueError(f"template {template.name}: {template.note or 'file missing'}")
    assert template.path is not None
    with open(template.path, encoding="utf-8") as f:
        text = f.read()
    new, count = re.subn(r"(?m)^name:.*$", f"name: {name}", text, count=1)
    text = new if count else f"name: {name}\n{text}"
    if template.extra_stages:
        text = re.sub(r"(?m)^stages: \[(.*)\]", lambda m: f"stages: [{m.group(1)}, {', '.join(template.extra_stages)}]", text, count=1)
    return text + template.extra_yaml


def config_name_ok(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name))
