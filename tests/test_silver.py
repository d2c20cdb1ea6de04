"""People's Daily 1998 -> silver NER labels, and extra training text kept apart from dev and test."""

import pytest

from conftest import ToyCorpus, tagged, TOY_DEV, TOY_TEST, write_toy_corpus
from pipelines.config import DataConfig
from pipelines.data.encoding import IGNORE
from pipelines.data.extra import extra_training
from pipelines.data.loaders import DataError, load_data
from pipelines.data.silver import UNSURE, char_tags, name_candidates, parse_line, read_pos_corpus, split_sentences


def tags_of(line: str) -> tuple[str, list[str]]:
    chars, tags = char_tags(parse_line(line, "test", 1))
    return "".join(chars), tags


def entities(text: str, tags: list[str]) -> list[tuple[str, str]]:
    """(surface, TYPE) of each entity, and (surface, '?') for each unsure stretch."""
    out, i = [], 0
    while i < len(tags):
        if tags[i] == "O":
            i += 1
            continue
        kind = UNSURE if tags[i] == UNSURE else tags[i][2:]
        assert tags[i] in (UNSURE, "B-" + kind), f"stretch at {i} opens with {tags[i]}"
        j = i + 1
        while j < len(tags) and tags[j] == (UNSURE if kind == UNSURE else "I-" + kind):
            j += 1
        out.append((text[i:j], kind))
        i = j
    return out


@pytest.mark.parametrize(
    "line, expected",
    [
        # A surname and given name are two nr words: one person. Two people apart stay two.
        ("国家/n  主席/n  江/nr  泽民/nr  会见/v  克林顿/nr", [("江泽民", "PER"), ("克林顿", "PER")]),
        # MSRA tags 中国政府 as LOC + O: a place before a common noun stays a place.
        ("中国/ns  政府/n  认为/v", [("中国", "LOC")]),
        ("新华社/nt  记者/n  兰/nr  红光/nr  摄/Vg", [("新华社", "ORG"), ("兰红光", "PER")]),
        # A place opening a phrase that ends in an organisation's head noun may be one
        # organisation (MSRA: 中国人民银行 ORG): no label, no loss.
        ("中国/ns  人民/n  银行/n  行长/n  戴/nr  相龙/nr", [("中国人民银行", UNSURE), ("戴相龙", "PER")]),
        ("通过/p  中央/n  电视台/n  ，/w  向/p  香港/ns  特别/a  行政区/n  同胞/n", [("中央电视台", UNSURE), ("香港特别行政区", UNSURE)]),
        # One place or two? Abbreviations and other proper nouns: unsure.
        ("浙江/ns  杭州/ns  的/u  中/j  美/j  关系/n", [("浙江杭州", UNSURE), ("中美", UNSURE)]),
        ("阅读/v  人民日报/nz", [("人民日报", UNSURE)]),
        # Full-width digits and letters as MSRA writes them; punctuation stays full-width.
        ("１９９８年/t  ，/w  ＷＴＯ/nx", []),
    ],
)
def test_pos_words_become_msra_style_entities(line, expected):
    text, tags = tags_of(line)
    assert len(text) == len(tags)
    assert entities(text, tags) == expected


@pytest.mark.parametrize(
    "line, expected",
    [
        # The names a lexicon takes from the POS tags: a person's words joined, a surname
        # alone left out; a place or organisation, and the phrase it opens when that ends
        # in an organisation's head (ORG) or a place's (LOC).
        ("国家/n  主席/n  江/nr  泽民/nr  会见/v  克林顿/nr  和/c  王/nr", [("江泽民", "PER"), ("克林顿", "PER")]),
        ("中国/ns  人民/n  银行/n  行长/n  戴/nr  相龙/nr", [("中国", "LOC"), ("中国人民银行", "ORG"), ("戴相龙", "PER")]),
        ("向/p  香港/ns  特别/a  行政区/n  同胞/n", [("香港", "LOC"), ("香港特别行政区", "LOC")]),
        ("新华社/nt  记者/n  报道/v", [("新华社", "ORG")]),
        ("中央/n  电视台/n  播出/v", []),  # no proper noun opens it: not a lexicon name
    ],
)
def test_pos_words_give_lexicon_names(line, expected):
    assert list(name_candidates(parse_line(line, "test", 1))) == expected


def test_ascii_forms_and_length():
    text, tags = tags_of("１９９８年/t  ，/w  ＷＴＯ/nx")
    assert text == "1998年，WTO" and tags == ["O"] * 9


def test_paragraphs_are_cut_into_sentences_after_their_closing_quote():
    words = parse_line("他/r  说/v  ：/w  “/w  好/a  。/w  ”/w  我/r  走/v  了/y  ！/w  再见/v", "test", 1)
    sentences = ["".join(w for w, _ in s) for s in split_sentences(words)]
    assert sentences == ["他说：“好。”", "我走了！", "再见"]


def test_unreadable_pos_line_names_file_and_line():
    lines = ["江/nr  泽民/nr\n", "\n", "他/r  说/v  好\n"]
    with pytest.raises(DataError, match=r"^pd\.txt:3: cannot read '好' as word/POS$"):
        read_pos_corpus(lines, "pd.txt")


def test_pos_corpus_keeps_its_line_numbers():
    sentences = read_pos_corpus(["江/nr  泽民/nr  。/w  李/nr  鹏/nr  。/w\n", "\n", "新华社/nt\n"], "pd.txt")
    assert [("".join(s.chars), s.line) for s in sentences] == [("江泽民。", 1), ("李鹏。", 1), ("新华社", 3)]


def test_extra_text_sharing_dev_or_test_text_is_dropped_and_counted(tmp_path):
    toy = ToyCorpus.write(tmp_path)
    data = load_data(DataConfig(**toy.data()))
    planted_test = TOY_TEST[4]  # 王三在北海工作: 7 characters, under the 12-character window
    # 北京的张三去了广州 (9 characters) inside a longer sentence
    long_test = "".join(t for t, _ in TOY_TEST[6:8])  # holds two test sentences in one
    planted_dev = TOY_DEV[0]
    new = tagged("赵六在深圳工作", ("赵六", "PER"), ("深圳", "LOC"))
    extra_file = tmp_path / "extra.txt"
    write_toy_corpus(str(extra_file), copies=1, sentences=[planted_test, (long_test, ["O"] * len(long_test)), planted_dev, new])
    extra = extra_training([f"conll:{extra_file}"], data)
    assert extra.counts == {f"conll:{extra_file}": {"kept": 1, "dropped_test": 2, "dropped_dev": 1}}
    assert ["".join(t) for t in extra.tokens] == [new[0]]
    assert extra.label_ids == [[data.labels.index(t) for t in new[1]]]


def test_unsure_characters_train_with_no_loss(tmp_path, monkeypatch):
    import pipelines.data.extra as extra_module
    from pipelines.data.silver import SilverSentence

    toy = ToyCorpus.write(tmp_path)
    data = load_data(DataConfig(**toy.data()))
    chars, tags = char_tags(parse_line("中国/ns  人民/n  银行/n  行长/n  戴/nr  相龙/nr", "t", 1))
    monkeypatch.setattr(extra_module, "peoples_daily_1998_silver", lambda: [SilverSentence(chars, tags, 1)])
    extra = extra_training(["peoples_daily_1998"], data)
    per_b, per_i = data.labels.index("B-PER"), data.labels.index("I-PER")
    assert extra.label_ids == [[IGNORE] * 6 + [0, 0, per_b, per_i, per_i]]


def test_unknown_extra_source_is_named():
    with pytest.raises(DataError, match="unknown extra_train source 'wiki'"):
        extra_training(["wiki"], load_data(DataConfig(source="msra", max_sentences=10)))


def test_embedded_peoples_daily_never_trains_on_an_msra_test_sentence():
    data = load_data(DataConfig(source="msra"))
    extra = extra_training(["peoples_daily_1998"], data)
    counts = extra.counts["peoples_daily_1998"]
    test_texts = {"".join(t) for t in data.splits["test"]["tokens"]}
    kept = ["".join(t) for t in extra.tokens]
    assert not test_texts & set(kept)
    # Some of its sentences are MSRA test sentences (21 found when the corpus was
    # checked by hand): the check had work to do.
    assert counts["dropped_test"] >= 21
    # Nine tenths of the corpus: the last tenth is held-out news (tests/test_news.py).
    assert counts["kept"] > 35_000 and sum(map(len, kept)) > 1_300_000
    # The silver labels: persons and places in quantity, unsure stretches a minority.
    flat = [i for ids in extra.label_ids for i in ids]
    assert flat.count(data.labels.index("B-PER")) > 15_000
    assert flat.count(data.labels.index("B-LOC")) > 15_000
    assert flat.count(IGNORE) < 0.1 * len(flat)
