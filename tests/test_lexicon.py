"""The name gazetteer from a POS word list, and mention swapping with it."""

import random

import pytest

from conftest import tagged
from pipelines import resources
from pipelines.data import lexicon
from pipelines.data.loaders import DataError
from pipelines.data.lexicon import Gazetteer, gazetteer, load_gazetteer, read_pos_words, surnames, swap_mentions
from pipelines.data.loaders import entity_spans


def test_only_name_shaped_entries_of_each_type_are_kept():
    words = [
        ("张伟", "nr"), ("巫婆", "nr"), ("王", "nr"), ("欧阳修文", "nr"),  # a name; no surname; too short; too long
        ("杭州市", "ns"), ("龟年鹤寿", "ns"), ("长江", "ns"),
        ("北京大学", "nt"), ("上进心", "nt"), ("ABC公司", "nt"),
        ("张三", "n"),  # not a name's POS
    ]
    gaz = gazetteer(words, family_names={"张", "王", "欧"})
    assert gaz.names == {"PER": ["张伟"], "LOC": ["杭州市", "长江"], "ORG": ["北京大学"]}


def test_surnames_are_the_frequent_first_characters_of_person_names():
    often = [tagged("张三在北京工作", ("张三", "PER"), ("北京", "LOC"))] * 5
    once = [tagged("李四去了广州", ("李四", "PER"), ("广州", "LOC"))]
    assert surnames([(list(t), tags) for t, tags in often + once]) == {"张"}


def test_swapped_mentions_keep_the_context_and_retag_the_new_names():
    text, tags = tagged("张三在北京工作", ("张三", "PER"), ("北京", "LOC"))
    gaz = Gazetteer({"PER": ["李大钊"], "LOC": ["杭州市"], "ORG": []})
    chars, new_tags = swap_mentions((list(text), tags), gaz, rate=1.0, rng=random.Random(0))
    assert "".join(chars) == "李大钊在杭州市工作"
    assert new_tags == ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-LOC", "O", "O"]
    assert list(entity_spans(new_tags)) == [("PER", 0, 3), ("LOC", 4, 7)]
    # No ORG names to swap in, or nothing swapped at this rate: no new sentence.
    org = tagged("新华社报道", ("新华社", "ORG"))
    assert swap_mentions((list(org[0]), org[1]), gaz, rate=1.0, rng=random.Random(0)) is None
    assert swap_mentions((list(text), tags), gaz, rate=1e-9, rng=random.Random(0)) is None


def test_a_malformed_lexicon_line_names_file_and_line(tmp_path):
    path = tmp_path / "dict.txt"
    path.write_text("张伟 12 nr\n杭州市 ns\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{path}:2: expected 'WORD FREQUENCY POS', got '杭州市 ns'$"):
        read_pos_words(str(path))


def test_a_missing_lexicon_says_what_to_install(monkeypatch, tmp_path):
    def missing(package, dist, *parts):
        raise resources.MissingResource(f"embedded data package '{dist}' is not installed")

    monkeypatch.setattr(lexicon.resources, "package_file", missing)
    with pytest.raises(DataError, match="the jieba lexicon is missing: .*'jieba' is not installed"):
        load_gazetteer("jieba", [])
    with pytest.raises(DataError, match=r"nope\.txt: no such lexicon file"):
        load_gazetteer(f"file:{tmp_path}/nope.txt", [])
    with pytest.raises(DataError, match="unknown lexicon 'hownet'"):
        load_gazetteer("hownet", [])


def test_the_jieba_dictionary_gives_thousands_of_names_per_type():
    family = set("王李张刘陈杨黄赵吴周")
    gaz = gazetteer(read_pos_words(lexicon.jieba_dictionary()), family)
    sizes = gaz.sizes()
    assert sizes["PER"] > 5_000 and sizes["LOC"] > 5_000 and sizes["ORG"] > 1_000, sizes
    assert "北京大学" in gaz.names["ORG"]
