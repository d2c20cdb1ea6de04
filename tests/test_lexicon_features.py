"""Word-lexicon codes per character, their packing into the model's ids, and a model
that reads them, trained, saved, compiled and served like any other."""

import json
import os

import pytest

from pipelines.data.encoding import LEXICON_STRIDE, CharEncoder, load_tokenizer
from pipelines.data.lexicon_features import TYPES, WordLexicon, word_lexicon
from pipelines.data.loaders import DataError
from pipelines.modeling.models import ModelError

from conftest import ToyCorpus, evaluate_run


def code(*marks: str) -> int:
    """The code of a character from marks such as ``B-PER`` (begins a person name)."""
    out = 0
    for mark in marks:
        pos, etype = mark.split("-")
        out |= 1 << (4 * TYPES.index(etype) + "BMES".index(pos))
    return out


def write_lexicon(path, lines) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{line}\n" for line in lines))
    return f"file:{path}"


LEXICON = ["江泽民 3 nr", "中国 100 ns", "中国人民银行 5 nt", "人民 50 n", "银行 40 n", "在 900 p", "新华社 9 nt", "北京 80 ns"]


@pytest.fixture
def lexicon(tmp_path):
    return word_lexicon(write_lexicon(tmp_path / "words.txt", LEXICON))


def test_each_character_marks_the_words_it_begins_continues_ends_or_is(lexicon):
    # 江泽民 / 在 / 中国人民银行, with 中国, 人民 and 银行 inside the organisation.
    assert lexicon.codes(list("江泽民在中国人民银行")) == [
        code("B-PER"), code("M-PER"), code("E-PER"),
        code("S-WORD"),
        code("B-LOC", "B-ORG"), code("E-LOC", "M-ORG"),
        code("M-ORG", "B-WORD"), code("M-ORG", "E-WORD"),
        code("M-ORG", "B-WORD"), code("E-ORG", "E-WORD"),
    ]  # fmt: skip
    assert lexicon.codes(list("张三")) == [0, 0]  # no word, no code
    assert lexicon.codes([]) == []


def test_a_corpus_at_once_codes_each_sentence_as_alone_and_no_word_spans_two(lexicon):
    """``codes_many`` finds words over a whole corpus in numpy: the same codes as one
    sentence at a time; 中国 split over two sentences is no word, nor is a word across
    a position that holds a whole token; 中国人民银行 (six characters: keys of more than
    three are hashed, then checked) still marks its middle."""
    corpus = [list("江泽民在中国人民银行"), list("在中"), list("国"), [], ["中", "[UNK]", "国"], list("北京")]
    each = [lexicon.codes(s) for s in corpus]
    assert lexicon.codes_many(corpus) == each
    assert each[1] == [code("S-WORD"), 0] and each[2] == [0] and each[4] == [0, 0, 0]
    assert each[0][6] == code("M-ORG", "B-WORD") and each[5] == [code("B-LOC"), code("E-LOC")]


def test_a_word_with_two_tags_carries_both_types(tmp_path):
    lex = word_lexicon(write_lexicon(tmp_path / "w.txt", ["黄山 10 ns", "黄山 5 nr"]))
    assert lex.codes(list("黄山")) == [code("B-LOC", "B-PER"), code("E-LOC", "E-PER")]


def test_the_encoder_packs_codes_above_the_token_ids(lexicon):
    tokenizer = load_tokenizer()
    plain, packed = CharEncoder(tokenizer), CharEncoder(tokenizer, lexicon)
    chars = list("在北京")
    ids = packed.ids(chars)
    assert [i % LEXICON_STRIDE for i in ids] == plain.ids(chars)
    assert [i // LEXICON_STRIDE for i in ids] == [code("S-WORD"), code("B-LOC"), code("E-LOC")]


def test_the_encoder_packs_a_corpus_as_it_packs_each_sentence(lexicon):
    """``ids_many`` packs the codes of the whole corpus in numpy and cuts them into
    sentences: the same ids as one sentence at a time, empty sentences and positions
    holding a whole token included."""
    encoder = CharEncoder(load_tokenizer(), lexicon)
    corpus = [list("江泽民在中国人民银行"), [], ["中", "[UNK]", "国"], list("在北京"), []]
    many = encoder.ids_many(corpus)
    assert many == [encoder.ids(s) for s in corpus]
    assert [len(ids) for ids in many] == [10, 0, 3, 3, 0]
    assert [i // LEXICON_STRIDE for i in many[3]] == [code("S-WORD"), code("B-LOC"), code("E-LOC")]


def test_a_saved_lexicon_reads_back_and_a_bad_line_names_file_and_line(lexicon, tmp_path):
    lexicon.save(str(tmp_path))
    again = WordLexicon.load(str(tmp_path))
    assert again.words == lexicon.words and again.source == lexicon.source
    assert WordLexicon.load(str(tmp_path / "elsewhere")) is None
    with open(tmp_path / "lexicon.tsv", "a", encoding="utf-8") as f:
        f.write("坏行\n")
    with pytest.raises(DataError, match=r"lexicon\.tsv:\d+: expected 'WORD<TAB>MASK'"):
        WordLexicon.load(str(tmp_path))


def test_a_malformed_source_line_names_file_and_line(tmp_path):
    source = write_lexicon(tmp_path / "bad.txt", ["中国 100 ns", "人民 n"])
    with pytest.raises(DataError, match=r"bad\.txt:2: expected 'WORD FREQUENCY POS'"):
        word_lexicon(source)


def test_the_jieba_lexicon_types_names_places_and_organisations():
    lex = word_lexicon("jieba")
    assert len(lex) > 300_000
    codes = lex.codes(list("毛泽东在北京大学"))
    assert codes[0] & code("B-PER") and codes[2] & code("E-PER")
    assert codes[4] & code("B-LOC") and codes[5] & code("E-LOC")


def test_a_tagged_corpus_lexicon_leaves_out_sentences_sharing_held_out_text(tmp_path):
    corpus = tmp_path / "tagged.txt"
    corpus.write_text(
        "新华社/nt  记者/n  报道/v  ，/w  国家/n  主席/n  江/nr  泽民/nr  会见/v  了/u  客人/n  。/w\n"
        "中国/ns  人民/n  银行/n  行长/n  戴/nr  相龙/nr  今天/t  在/p  北京/ns  发表/v  讲话/n  。/w\n",
        encoding="utf-8",
    )
    # The second sentence is (part of) a held-out one: nothing of it may enter.
    held_out = ["据报道，中国人民银行行长戴相龙今天在北京发表讲话。"]
    lex = word_lexicon(f"corpus:{corpus}+{write_lexicon(tmp_path / 'w.txt', ['上海 9 ns'])}", held_out)
    assert lex.held_out_dropped == 1
    assert set(lex.words) == {"新华社", "记者", "报道", "国家", "主席", "江泽民", "会见", "客人", "上海"}
    assert lex.words["江泽民"] == 1 << TYPES.index("PER") and lex.words["新华社"] == 1 << TYPES.index("ORG")
    assert lex.words["记者"] == 1 << TYPES.index("WORD")
    # Without held-out text, the phrase and the names of the second sentence are in.
    lex = word_lexicon(f"corpus:{corpus}")
    assert lex.held_out_dropped == 0
    assert lex.words["中国人民银行"] == 1 << TYPES.index("ORG") and lex.words["戴相龙"] == 1 << TYPES.index("PER")


def test_a_bad_corpus_line_or_lexicon_name_is_named(tmp_path):
    corpus = tmp_path / "tagged.txt"
    corpus.write_text("新华社/nt  记者/n\n报道  了/u\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"tagged\.txt:2: cannot read '报道' as word/POS"):
        word_lexicon(f"corpus:{corpus}")
    with pytest.raises(DataError, match=r"missing\.txt: no such corpus file"):
        word_lexicon(f"corpus:{tmp_path / 'missing.txt'}")
    with pytest.raises(DataError, match=r"unknown lexicon 'hownet' \(use jieba, file:PATH, peoples_daily_1998 or corpus:PATH"):
        word_lexicon("jieba+hownet")


# -- a model that reads the codes: trained, saved, compiled -------------------------------
@pytest.fixture(scope="module")
def lexicon_run(tmp_path_factory):
    """The toy model trained with a lexicon of its names (not all: 王五 and 广州 are missing)."""
    from pipelines.config import parse_config
    from workbench.runner import execute
    from workbench.store import RunStore

    root = tmp_path_factory.mktemp("lexicon-run")
    corpus = ToyCorpus.write(root)
    source = write_lexicon(root / "words.txt", ["张三 3 nr", "李四 3 nr", "北京 9 ns", "上海 9 ns", "新华社 9 nt", "人民日报 9 nt", "记者 9 n", "工作 9 vn"])
    cfg = parse_config(
        {
            "name": "toy-lexicon",
            "stages": ["train", "export", "eval"],
            "data": corpus.data(),
            "model": {"preset": "tiny", "max_length": 16, "dropout": 0.0, "lexicon": source},
            "train": {"epochs": 20, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.1, "threads": 1, "eval_every": 10},
            "export": {"shape": [1, 16], "parity_sentences": 8},
        }
    )
    store = RunStore(str(root / "runs"))
    run = store.create_run(cfg)
    results = execute(cfg, store, run, cfg.stages, [lambda event: None])
    return run, results


def test_the_model_reads_the_codes_and_keeps_its_lexicon(lexicon_run):
    import torch

    from pipelines.modeling.models import load_model

    run, results = lexicon_run
    model, encoder, _ = load_model(os.path.join(run.dir, "model"))
    assert os.path.isfile(os.path.join(run.dir, "model", "lexicon.tsv"))
    assert encoder.lexicon is not None and "人民日报" in encoder.lexicon.words
    ids = torch.tensor([[encoder.cls_id, *encoder.ids(list("张三在北京工作")), encoder.sep_id]])
    assert (ids[0, 1:-1] >= LEXICON_STRIDE).tolist() == [True, True, False, True, True, True, True]  # 在: in no word
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        with_codes = model(input_ids=ids, attention_mask=mask).logits
        without = model(input_ids=ids % LEXICON_STRIDE, attention_mask=mask).logits
    assert (with_codes - without).abs().max() > 1e-3  # the codes change what it computes
    for kind in ("torchscript", "torch_export"):  # the traced graphs unpack the codes too
        assert results["export"][f"{kind}_argmax_agreement"] == 1.0
        assert results["export"][f"{kind}_max_abs_diff"] < 1e-4
    assert results["eval"]["f1"] > 0.5


def test_a_model_started_from_a_lexicon_model_keeps_its_weights_and_lexicon(lexicon_run):
    import torch

    from pipelines.config import ModelConfig
    from pipelines.modeling.models import build_model, load_model

    model_dir = os.path.join(lexicon_run[0].dir, "model")
    trained, trained_encoder, meta = load_model(model_dir)
    fresh, encoder, _ = build_model(ModelConfig(pretrained=model_dir, max_length=16), meta.labels)
    assert encoder.lexicon.words == trained_encoder.lexicon.words
    state = fresh.state_dict()
    assert "bert.embeddings.word_embeddings.lexicon.weight" in state
    for name, value in trained.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_a_lexicon_model_without_its_lexicon_file_is_refused(lexicon_run, tmp_path):
    import shutil

    from pipelines.modeling.models import load_model

    model_dir = str(tmp_path / "model")
    shutil.copytree(os.path.join(lexicon_run[0].dir, "model"), model_dir)
    os.remove(os.path.join(model_dir, "lexicon.tsv"))
    with pytest.raises(ModelError, match="reads lexicon codes but its lexicon.tsv is missing"):
        load_model(model_dir)


def test_onnx_runtime_and_the_tvm_build_read_the_codes_as_torch_does(lexicon_run):
    from pipelines.config import parse_config
    from pipelines.events import Reporter
    from pipelines.stages import stage_compile

    run, results = lexicon_run
    stage_compile(parse_config({"export": {"shape": [1, 16]}, "compile": {"precisions": ["fp32"]}}), run.dir, Reporter())
    artifact = os.path.join(run.dir, "compiled", "tvm-fp32-1x16")
    assert os.path.isfile(os.path.join(artifact, "lexicon.tsv"))  # the artifact reads text on its own
    assert json.load(open(os.path.join(artifact, "artifact.json")))["lexicon_stride"] == LEXICON_STRIDE
    torch_scores = evaluate_run(run.dir, "torch")
    for engine in ("ort", "tvm-fp32"):
        scores = evaluate_run(run.dir, engine)
        assert scores["f1"] == pytest.approx(torch_scores["f1"], abs=1e-9), engine
        assert scores["agreement_with_torch"] == 1.0, engine


def test_a_student_without_the_teachers_lexicon_is_refused(lexicon_run, tmp_path):
    from pipelines.modeling.models import load_model
    from pipelines.training.distill import check_same_lexicon

    _, teacher_encoder, _ = load_model(os.path.join(lexicon_run[0].dir, "model"))
    plain = CharEncoder(teacher_encoder.tokenizer)
    with pytest.raises(ModelError, match="the student needs the same one"):
        check_same_lexicon(teacher_encoder, plain, "teacher-run")
    check_same_lexicon(plain, teacher_encoder, "teacher-run")  # a plain teacher reads any student's ids

