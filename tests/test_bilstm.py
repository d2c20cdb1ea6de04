"""The BiLSTM tagger: it learns the toy corpus, reads the lexicon codes, tags a
sentence the same in any batch, saves and loads, teaches a BERT student, and exports
and compiles like BERT (TVM through its own LSTM kernel)."""

import os

import pytest

from pipelines.data.encoding import LEXICON_STRIDE, pad_batch
from pipelines.modeling.models import ModelError

from conftest import toy_bilstm_run


def write_lexicon(path, lines) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{line}\n" for line in lines))
    return f"file:{path}"


TOY_WORDS = ["张三 3 nr", "李四 3 nr", "北京 9 ns", "上海 9 ns", "新华社 9 nt", "人民日报 9 nt"]


@pytest.fixture(scope="module")
def bilstm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bilstm-run")
    return toy_bilstm_run(root, "bilstm", lexicon=write_lexicon(root / "words.txt", TOY_WORDS))


def test_it_learns_the_toy_corpus_and_keeps_its_lexicon(bilstm_run):
    import torch

    from pipelines.modeling.models import is_bilstm, load_model

    run, results, _ = bilstm_run
    assert results["eval"]["f1"] > 0.5  # held-out test sentences, names it never saw among them
    model, encoder, meta = load_model(os.path.join(run.dir, "model"))
    assert is_bilstm(model) and meta.preset == "bilstm" and "新华社" in encoder.lexicon.words
    ids = torch.tensor([[encoder.cls_id, *encoder.ids(list("张三在北京工作")), encoder.sep_id]])
    assert int((ids >= LEXICON_STRIDE).sum()) == 4  # 张三, 北京 carry codes
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        with_codes = model(input_ids=ids, attention_mask=mask).logits
        without = model(input_ids=ids % LEXICON_STRIDE, attention_mask=mask).logits
    assert (with_codes - without).abs().max() > 1e-3


def test_a_sentence_tags_the_same_alone_and_padded_in_a_batch(bilstm_run):
    """The right-to-left LSTM reverses each row within its length: padding never reaches
    a real character (a plain bidirectional LSTM would read the padding first)."""
    import torch

    from pipelines.modeling.models import load_model

    model, encoder, _ = load_model(os.path.join(bilstm_run[0].dir, "model"))
    short = [encoder.cls_id, *encoder.ids(list("李四在上海")), encoder.sep_id]
    long = [encoder.cls_id, *encoder.ids(list("新华社记者张三在北京报道")), encoder.sep_id]
    ids, mask = (torch.from_numpy(a) for a in pad_batch([long, short], encoder.pad_id))
    with torch.inference_mode():
        batched = model(input_ids=ids, attention_mask=mask).logits[1, : len(short)]
        alone = model(input_ids=torch.tensor([short]), attention_mask=torch.ones(1, len(short), dtype=torch.long)).logits[0]
    assert torch.allclose(batched, alone, atol=1e-5)


def test_it_teaches_a_bert_student_that_reads_the_same_codes(bilstm_run, tmp_path):
    from pipelines.config import parse_config
    from pipelines.data.loaders import data_for
    from pipelines.events import Reporter
    from pipelines.modeling.models import is_bilstm, load_model
    from pipelines.training.distill import DISTILLED_DIR, distill

    run, _, corpus = bilstm_run
    teacher = os.path.join(run.dir, "model")
    other = write_lexicon(tmp_path / "other.txt", ["银行 9 n"])
    cfg = parse_config({
        "name": "student", "data": corpus.data(),
        "model": {"preset": "tiny", "max_length": 16, "lexicon": other},
        "distill": {"teacher": teacher, "steps": 4, "batch_size": 4, "max_length": 16, "holdout": 4, "threads": 1},
    })
    data = data_for(cfg)
    sentences = [list(s) for s in ("新华社记者张三在北京报道", "李四在上海工作")] * 8
    with pytest.raises(ModelError, match="the student needs the same one"):
        distill(cfg, teacher, sentences, data, str(tmp_path / "refused"), Reporter())
    cfg.model.lexicon = write_lexicon(tmp_path / "same.txt", TOY_WORDS)
    result = distill(cfg, teacher, sentences, data, str(tmp_path / "student"), Reporter())
    assert result["steps"] == 4 and 0.0 <= result["teacher_agreement"] <= 1.0
    student, encoder, _ = load_model(os.path.join(tmp_path / "student", DISTILLED_DIR))
    assert not is_bilstm(student) and encoder.lexicon.words == load_model(teacher)[1].lexicon.words


def int8_logit_bound(quantization) -> float:
    """How far an int8 build's logits may be from torch's: 7-bit weights (the vpmaddubsw
    kernels of AVX2 CPUs without VNNI) have twice the step of 8-bit ones (measured on a
    Zen 3 EPYC: 0.104 static, 0.1085 symbolic length, against 0.1)."""
    return 0.1 if (quantization or {}).get("weight_bits", 8) == 8 else 0.2


def test_it_exports_and_compiles_and_every_engine_tags_as_eager_pytorch(bilstm_run):
    """TorchScript and ONNX (ORT) run torch's LSTM; TVM runs its own recurrence kernel
    (pipelines.compile.lstm). Rows of different lengths in one padded batch."""
    import numpy as np

    from pipelines.config import ConfigError, parse_config
    from pipelines.events import Reporter
    from pipelines.runtime.engines import open_engine
    from pipelines.stages import stage_compile, stage_export

    from conftest import evaluate_run

    run, results, corpus = bilstm_run
    cfg = parse_config({"data": corpus.data(), "export": {"shape": [1, 16]}, "compile": {"precisions": ["fp32", "int8"], "shapes": [[3, 16]]}})
    exported = stage_export(cfg, run.dir, Reporter())
    assert exported["torchscript_argmax_agreement"] == 1.0 and exported["torch_export_max_abs_diff"] < 1e-4
    built = stage_compile(cfg, run.dir, Reporter())
    assert set(built) == {"tvm-fp32-3x16", "tvm-int8-3x16"}
    ids = np.array([[101, *range(700, 714), 102], [101, 900, 901, 102, *[0] * 12], [101, *range(800, 808), 102, *[0] * 6]])
    ids[0, 3] += 3 * LEXICON_STRIDE  # a position with a lexicon code
    mask = (ids != 0).astype(np.int64)
    expected = open_engine("torch", run.dir).logits(ids, mask)
    real = mask.astype(bool)
    for engine in ("ort", "tvm-fp32"):
        got = open_engine(engine, run.dir).logits(ids, mask)
        assert np.abs(got - expected)[real].max() < 1e-4, engine
    scores = evaluate_run(run.dir, "tvm-fp32")
    assert scores["f1"] == results["eval"]["f1"] and scores["agreement_with_torch"] == 1.0
    # int8: both LSTMs' recurrences (int8 weights; h as u8 codes where the CPU has a
    # dot-product instruction) and both input projections (calibrated linear layers)
    int8 = open_engine("tvm-int8", run.dir)
    quantization = int8.meta["quantization"]
    assert quantization["int8_recurrences"] == 2 and quantization["int8_layers"] == 2
    assert sorted(quantization["layers"]) == ["backward_lstm.input", "forward_lstm.input"]
    assert np.abs(int8.logits(ids, mask) - expected)[real].max() < int8_logit_bound(quantization)
    assert evaluate_run(run.dir, "tvm-int8")["agreement_with_torch"] >= 0.98
    # fp16 is refused before any work, in one line
    fp16 = parse_config({"data": corpus.data(), "compile": {"precisions": ["fp16"], "shapes": [[3, 16]]}})
    with pytest.raises(ConfigError, match=r"^compile.precisions: fp16 is not built for a BiLSTM model .*: use fp32 or int8$"):
        stage_compile(fp16, run.dir, Reporter())


def test_an_ensemble_teaches_the_mean_of_its_logits_in_the_students_label_order(bilstm_run, toy_run):
    """A BiLSTM reading lexicon codes and a plain BERT: the BERT reads the ids with the
    codes taken off, both are put in the student's label order, then averaged."""
    import torch

    from pipelines.modeling.models import load_model
    from pipelines.training.distill import Teachers

    lstm_dir, bert_dir = (os.path.join(run[0].dir, "model") for run in (bilstm_run, toy_run))
    lstm, encoder, meta = load_model(lstm_dir)
    bert, _, bert_meta = load_model(bert_dir)
    assert bert_meta.labels == meta.labels
    student_labels = meta.labels[::-1]
    teachers = Teachers([lstm_dir, bert_dir], encoder, student_labels)
    ids = torch.tensor([[encoder.cls_id, *encoder.ids(list("新华社记者张三在北京报道")), encoder.sep_id]])
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        by_hand = (lstm(input_ids=ids, attention_mask=mask).logits
                   + bert(input_ids=ids % LEXICON_STRIDE, attention_mask=mask).logits).flip(-1) / 2
    assert torch.allclose(teachers.logits(ids, mask), by_hand, atol=1e-5)
    with pytest.raises(ModelError, match="differ from the data's"):
        Teachers([lstm_dir, bert_dir], encoder, student_labels[:-1])


def test_the_run_list_names_both_teachers_of_an_ensemble(tmp_path):
    from pipelines.config import parse_config
    from workbench.store import RunStore, model_label

    store = RunStore(str(tmp_path / "runs"))
    a = store.create_run(parse_config({"name": "lstm", "model": {"preset": "bilstm"}}))
    b = store.create_run(parse_config({"name": "bert", "model": {"preset": "mini"}}))
    student = store.create_run(parse_config({"name": "student", "model": {"pretrained": os.path.join(b.dir, "model")}}))
    store.stage_started(student.id, "distill")
    store.stage_finished(student.id, "distill", {"teacher": [os.path.join(a.dir, "model"), os.path.join(b.dir, "model")]})
    assert model_label(store.get(student.id), store.list_runs()) == "mini from bert taught by lstm"


def test_it_trains_under_bf16_autocast():
    """Training's `precision: auto` is bf16 on AMX hosts; CPU oneDNN has no bf16 LSTM
    primitive without AVX512-BF16, so the LSTMs run in fp32 inside the autocast."""
    import torch

    from pipelines.config import ModelConfig
    from pipelines.modeling.models import build_model

    model, _, _ = build_model(ModelConfig(preset="bilstm"), ["O", "B-PER", "I-PER"])
    ids = torch.randint(100, 2000, (4, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids, attention_mask=mask).logits
    logits.float().sum().backward()
    grad = model.forward_lstm.weight_ih_l0.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_model_hidden_size_sets_a_fresh_bilstms_width_and_nothing_else_takes_it():
    import pydantic

    from pipelines.config import ModelConfig
    from pipelines.modeling.models import build_model

    model, _, _ = build_model(ModelConfig(preset="bilstm", hidden_size=96), ["O", "B-PER", "I-PER"])
    assert model.forward_lstm.hidden_size == model.backward_lstm.hidden_size == 96
    assert model.classifier.in_features == 192
    assert build_model(ModelConfig(preset="bilstm"), ["O"])[0].forward_lstm.hidden_size == 256
    with pytest.raises(pydantic.ValidationError, match="model.hidden_size sets a fresh BiLSTM"):
        ModelConfig(preset="mini", hidden_size=96)


def test_calibration_takes_the_lstm_input_projections_and_simulates_them_in_int8(bilstm_run):
    """The LSTMs' input projections are int8 candidates (the compiler builds each as a
    linear layer); simulated int8 on one moves the logits a little, not at all elsewhere."""
    import torch

    from pipelines.compile.calibrate import linear_layers, observe, simulated_int8
    from pipelines.modeling.models import load_model

    run, _, _ = bilstm_run
    model, encoder, _ = load_model(os.path.join(run.dir, "model"))
    assert sorted(linear_layers(model)) == ["backward_lstm.input", "forward_lstm.input"]  # the 7-label head is too narrow
    rows = [[encoder.cls_id, *encoder.ids(list(text)), encoder.sep_id] for text in ("张三在北京工作", "新华社电")]
    ids, mask = (torch.from_numpy(a) for a in pad_batch(rows, encoder.pad_id))
    with torch.inference_mode():
        ranges = observe(model, lambda: model(input_ids=ids, attention_mask=mask), "max", 1.0)
        reference = model(input_ids=ids, attention_mask=mask).logits
        with simulated_int8(model, ranges, True, ["forward_lstm.input"]):
            simulated = model(input_ids=ids, attention_mask=mask).logits
        after = model(input_ids=ids, attention_mask=mask).logits
    assert ranges["forward_lstm.input"][0] < 0 < ranges["forward_lstm.input"][1]
    assert 1e-5 < (simulated - reference).abs().max() < 0.5
    assert torch.equal(after, reference)  # the hook is gone


def test_a_symbolic_length_build_tags_every_length_as_eager_pytorch(bilstm_run, tmp_path):
    """``profile.seq: any``: one build a batch size whose length is symbolic (the LSTMs
    kept whole through export as ``workbench::lstm``), fp32 and int8. Each batch runs
    at its own length, so rows of 1 to 16 characters and batches that fill the 32-row
    build (its GEMMs blocked by rows) or not, get torch's logits."""
    import shutil

    import numpy as np

    from pipelines.config import parse_config
    from pipelines.events import Reporter
    from pipelines.runtime.engines import ShapeProfile, open_engine
    from pipelines.stages import stage_compile

    run, _, corpus = bilstm_run
    run_dir = str(tmp_path / "run")
    shutil.copytree(os.path.join(run.dir, "model"), os.path.join(run_dir, "model"))
    cfg = parse_config({"data": corpus.data(), "compile": {"precisions": ["fp32", "int8"], "profile": {"batch": [1, 32], "seq": "any"}}})
    built = stage_compile(cfg, run_dir, Reporter())
    assert set(built) == {f"tvm-{p}-{b}xany" for p in ("fp32", "int8") for b in (1, 32)}
    torch_engine = open_engine("torch", run_dir)
    rng = np.random.default_rng(0)
    for precision in ("fp32", "int8"):
        profile = open_engine(f"tvm-{precision}", run_dir)
        quantization = next(iter(profile.any_length.values())).meta.get("quantization")
        tolerance = 1e-4 if precision == "fp32" else int8_logit_bound(quantization)
        assert isinstance(profile, ShapeProfile) and sorted(profile.any_length) == [1, 32] and profile.max_length == 16
        for rows, length in ((1, 1), (1, 9), (3, 2), (20, 11), (32, 16), (40, 5)):
            ids = rng.integers(700, 900, (rows, length))
            lengths = rng.integers(1, length + 1, rows)
            mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
            ids = ids * mask
            real = mask.astype(bool)
            got, expected = profile.logits(ids, mask), torch_engine.logits(ids, mask)
            assert got.shape == expected.shape
            assert np.abs(got - expected)[real].max() < tolerance, (precision, rows, length)
    int8 = open_engine("tvm-int8", run_dir).any_length[32]
    assert int8.lengths == (3, 16)
    assert int8.meta["quantization"]["int8_recurrences"] == 2 and int8.meta["quantization"]["int8_layers"] == 2


def test_a_symbolic_length_is_refused_for_a_bert(toy_run):
    from pipelines.config import ConfigError, parse_config
    from pipelines.events import Reporter
    from pipelines.stages import stage_compile

    cfg = parse_config({"compile": {"profile": {"batch": [1], "seq": "any"}}})
    with pytest.raises(ConfigError, match=r"^compile.profile.seq: `any` \(a symbolic length\) is built for BiLSTM models"):
        stage_compile(cfg, toy_run[0].dir, Reporter())
