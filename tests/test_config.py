import os
import re

import pytest

from pipelines.config import ConfigError, load_config, parse_config
from conftest import REPO


def write(tmp_path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_shipped_configs_are_valid():
    for name in os.listdir(os.path.join(REPO, "configs")):
        if name.endswith(".yaml"):
            load_config(os.path.join(REPO, "configs", name))


def test_reference_recipe_keeps_its_hyperparameters_and_selects_on_dev():
    cfg = load_config(os.path.join(REPO, "configs", "peoples_daily_bert_base.yaml"))
    assert cfg.model.pretrained == "bert-base-chinese"
    assert (cfg.data.source, cfg.data.hub_id) == ("hub", "peoples_daily_ner")
    assert cfg.model.max_length == 256
    assert (cfg.train.epochs, cfg.train.batch_size) == (10, 16)
    assert (cfg.train.learning_rate, cfg.train.warmup_steps, cfg.train.weight_decay) == (5e-5, 500, 0.01)
    assert cfg.eval.split == "test"  # scored once on test; the checkpoint is chosen on dev by train


def test_defaults_fill_missing_sections(tmp_path):
    cfg = load_config(write(tmp_path, "name: x\n"))
    assert cfg.data.source == "msra" and cfg.model.preset == "tiny" and cfg.export.shape == [1, 256]


def test_yaml_float_without_dot_is_accepted(tmp_path):
    # PyYAML reads 5e-5 as a string; it must still be a learning rate.
    assert load_config(write(tmp_path, "train:\n  learning_rate: 5e-5\n")).train.learning_rate == 5e-5


@pytest.mark.parametrize(
    "text, expected",
    [
        ("train:\n  lr: 0.1\n", "train.lr: unknown key (allowed: epochs, batch_size, learning_rate"),
        ("train:\n  learning_rate: fast\n", "train.learning_rate: Input should be a valid number"),
        ("train:\n  learning_rate: -1\n", "train.learning_rate: Input should be greater than 0"),
        ("model:\n  preset: huge\n", "model.preset: Input should be 'tiny', 'mini', 'small', 'medium', 'base' or 'bilstm' (got 'huge')"),
        ("data:\n  source: hub\n", "data: hub_id is required when source is 'hub'"),
        ("export:\n  shape: [1]\n", "export.shape: must be [batch, sequence]"),
        ("stages: [train, fly]\n", "stages.1: Input should be 'pretrain', 'distill', 'train', 'export', 'eval', 'compile' or 'bench' (got 'fly')"),
        ("colour: blue\n", "colour: unknown key (allowed: name, description, seed, stages, data, model"),
        ("- just\n- a list\n", "the top level must be a mapping"),
    ],
)
def test_errors_name_file_key_and_allowed_values(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_invalid_yaml_reports_the_line(tmp_path):
    path = write(tmp_path, "train:\n  epochs: 3\n   bad: [\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:\d+: invalid YAML"):
        load_config(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="nope.yaml: no such config file"):
        load_config("nope.yaml")


def test_overrides_use_dotted_keys_and_are_validated(tmp_path):
    path = write(tmp_path, "train:\n  epochs: 3\n")
    assert load_config(path, {"train.epochs": 1}).train.epochs == 1
    with pytest.raises(ConfigError, match="train.epoch: unknown key"):
        load_config(path, {"train.epoch": 1})


def test_digest_changes_with_content():
    assert parse_config({}).digest() == parse_config({}).digest()
    assert parse_config({}).digest() != parse_config({"seed": 1}).digest()


def test_reference_recipe_compiler_keys_map_onto_ours_with_notices():
    cfg = load_config(os.path.join(REPO, "configs", "compile_vendor_fp16.yaml"))
    assert cfg.compile.precisions == ["fp16"] and cfg.compile.shapes == [[1, 256]]
    notices = "\n".join(cfg.compile.notices)
    assert "backend.type tvm_vacc: compiled with Apache TVM" in notices
    assert "frontend.checkpoint: not read" in notices and "workspace.path: not used" in notices


@pytest.mark.parametrize(
    "compile_section, expected",
    [
        ("backend: {colour: red}", "compile: backend.colour: unknown key (allowed: compile, dtype, quantize, type)"),
        ("backend: {type: tensorrt}", "backend.type: 'tensorrt' is not supported"),
        ("backend: {quantize: {calibrate_method: max}}", "backend.quantize.calibrate_method: unknown key (allowed: calibrate_mode"),
        ("backend: {dtype: int8, quantize: {calibrate_mode: minmax}}", "compile.quantize.calibrate_mode: Input should be 'max', 'percentile' or 'entropy'"),
        ("frontend: {type: onnx}", "frontend.type: 'onnx' is not supported (pytorch)"),
    ],
)
def test_vendor_key_errors(tmp_path, compile_section, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(write(tmp_path, f"compile:\n  {compile_section}\n"))
