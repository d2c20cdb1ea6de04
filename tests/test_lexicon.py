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
        ("张伟", "PER"), ("巫婆", "PER"), ("王", "PER"), ("欧阳修文", "PER"),  # a name; no surname; too short; too long
        ("杭州市", "LOC"), ("龟年鹤寿", "LOC"), ("长江", "LOC"),
        ("北京大学", "ORG"), ("上进心", "ORG"), ("ABC公司", "ORG"),
        ("张三", "WORD"),  # not a name
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
    with pytest.raises(DataError, match="unknown lexicon 'hownet' \\(use jieba, file:PATH, peoples_daily_1998 or corpus:PATH"):
        load_gazetteer("hownet", [])


def test_a_tagged_corpus_adds_its_names_except_from_held_out_sentences(tmp_path):
    corpus = tmp_path / "tagged.txt"
    corpus.write_text(
        "中国/ns  人民/n  银行/n  行长/n  戴/nr  相龙/nr  在/p  杭州市/ns  讲话/v  。/w\n"
        "北京/ns  大学/n  校长/n  陈/nr  佳洱/nr  到/v  了/u  。/w\n",
        encoding="utf-8")
    jieba_like = tmp_path / "dict.txt"
    jieba_like.write_text("陈伟 12 nr\n张伟 12 nr\n", encoding="utf-8")
    train = [(list("陈佳在北京"), ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"])] * 5 + [(list("戴某"), ["B-PER", "I-PER"])] * 5
    gaz, dropped = load_gazetteer(f"file:{jieba_like}+corpus:{corpus}", train)
    assert dropped == 0
    # Kept by the shape filters: 张伟 (张 is no surname of train), 北京 (no place head) are not.
    assert gaz.names == {"PER": ["戴相龙", "陈伟", "陈佳洱"], "LOC": ["杭州市"], "ORG": ["中国人民银行", "北京大学"]}
    # A held-out (dev / test) sentence inside the second corpus sentence: its names stay out.
    gaz, dropped = load_gazetteer(f"corpus:{corpus}", train, held_out=["北京大学校长陈佳洱到了。"])
    assert dropped == 1
    assert gaz.names == {"PER": ["戴相龙"], "LOC": ["杭州市"], "ORG": ["中国人民银行"]}


def test_the_jieba_dictionary_gives_thousands_of_names_per_type():
    family = set("王李张刘陈杨黄赵吴周")
    gaz, _ = load_gazetteer("jieba", [(list(ch + "某"), ["B-PER", "I-PER"]) for ch in family] * 5)
    sizes = gaz.sizes()
    assert sizes["PER"] > 5_000 and sizes["LOC"] > 5_000 and sizes["ORG"] > 1_000, sizes
    assert "北京大学" in gaz.names["ORG"]
