import random

import pytest

from pipelines.config import DataConfig
from pipelines.data.loaders import (
    HUB_LABELS,
    MSRA_TRAIN_CHUNKS,
    RECIPE_LABELS,
    DataError,
    load_data,
    load_split,
    parse_char_tag_lines,
    read_char_tag_file,
    to_bio,
)


@pytest.mark.parametrize(
    "tags, bio",
    [
        # BMES as in msra.txt: M is I, E continues, S opens a one-char entity
        (["B-LOC", "M-LOC", "E-LOC", "O", "S-PER"], ["B-LOC", "I-LOC", "I-LOC", "O", "B-PER"]),
        # BIOES with adjacent entities of one type: the second must open anew
        (["S-LOC", "S-LOC", "B-ORG", "E-ORG", "B-ORG", "E-ORG"], ["B-LOC", "B-LOC", "B-ORG", "I-ORG", "B-ORG", "I-ORG"]),
        # BIO passes through unchanged
        (["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),
        # a chunk cut mid-entity starts with a continuation: it opens the entity
        (["M-ORG", "E-ORG", "O"], ["B-ORG", "I-ORG", "O"]),
        # a continuation of another type opens its own entity
        (["B-PER", "I-LOC"], ["B-PER", "B-LOC"]),
    ],
)
def test_to_bio(tags, bio):
    assert to_bio(tags) == bio


def test_bioes_to_bio_is_lossless_on_well_formed_input():
    bioes = ["B-LOC", "I-LOC", "E-LOC", "S-PER", "O", "S-ORG", "B-ORG", "E-ORG"]
    bio = to_bio(bioes)
    # Rebuild BIOES from BIO: an entity's last char is E (or S when it has one char).
    rebuilt = []
    for i, tag in enumerate(bio):
        last = i + 1 == len(bio) or not bio[i + 1].startswith("I-")
        if tag == "O":
            rebuilt.append("O")
        elif tag.startswith("B-"):
            rebuilt.append(("S-" if last else "B-") + tag[2:])
        else:
            rebuilt.append(("E-" if last else "I-") + tag[2:])
    assert rebuilt == bioes


def test_parse_crlf_tabs_and_blank_lines():
    lines = ["我\tO\r\n", "去\tO\r\n", "北 B-LOC\r\n", "京 I-LOC\r\n", "\r\n", "\r\n", "张 S-PER\r\n"]
    assert parse_char_tag_lines(lines, "x") == [
        (["我", "去", "北", "京"], ["O", "O", "B-LOC", "I-LOC"]),
        (["张"], ["B-PER"]),
    ]


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("我 O\n去 O O\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.txt:2: malformed line '去 O O'"):
        read_char_tag_file(str(path))


def test_unknown_tag_shape_is_malformed(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("我 O\n\n去 X-\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.txt:3: malformed line"):
        read_char_tag_file(str(path))


@pytest.mark.parametrize(
    "lines, chars, bio",
    [
        # BIO: B opens the entity on the token's first character, I continues it.
        (["去 O", "北京 B-LOC", "市 I-LOC"], "去北京市", ["O", "B-LOC", "I-LOC", "I-LOC"]),
        (["人民 B-ORG", "日报 I-ORG", "社 I-ORG"], "人民日报社", ["B-ORG", "I-ORG", "I-ORG", "I-ORG", "I-ORG"]),
        (["我们 O", "张 B-PER"], "我们张", ["O", "O", "B-PER"]),
        # Two B tokens of one type: two entities, each token one.
        (["北京 B-LOC", "上海 B-LOC"], "北京上海", ["B-LOC", "I-LOC", "B-LOC", "I-LOC"]),
        # BIOES: S is an entity in one token, E closes it (what follows opens anew).
        (["中国 S-LOC", "中国 S-LOC"], "中国中国", ["B-LOC", "I-LOC", "B-LOC", "I-LOC"]),
        (["新华 B-ORG", "通讯 I-ORG", "社 E-ORG", "上海 S-ORG"], "新华通讯社上海", ["B-ORG"] + ["I-ORG"] * 4 + ["B-ORG", "I-ORG"]),
        (["北 B-LOC", "京市 E-LOC", "人 O"], "北京市人", ["B-LOC", "I-LOC", "I-LOC", "O"]),
        # BMES as in msra.txt: M continues whatever its length.
        (["中 B-ORG", "华人民 M-ORG", "共和国 E-ORG"], "中华人民共和国", ["B-ORG"] + ["I-ORG"] * 6),
        # A continuation with nothing to continue opens the entity, as for single characters.
        (["我 O", "北京 I-LOC", "京都 E-LOC"], "我北京京都", ["O", "B-LOC", "I-LOC", "I-LOC", "I-LOC"]),
        # Letters and digits in one token: a position each, as `tag` splits raw text.
        (["NBA B-ORG", "2024 O"], "NBA2024", ["B-ORG", "I-ORG", "I-ORG", "O", "O", "O", "O"]),
    ],
    ids=["bio-b", "bio-i", "o", "two-b", "bioes-s", "bioes-e", "e-token", "bmes-m", "dangling-continuation", "latin-digits"],
)
def test_a_token_of_several_characters_is_one_position_per_character(lines, chars, bio):
    [(got_chars, got_tags)] = parse_char_tag_lines([line + "\n" for line in lines], "x")
    assert got_chars == list(chars) and got_tags == bio


def test_a_multi_character_token_reads_as_its_characters_one_a_line(tmp_path):
    """The same sentence written by token and by character gives the same data."""
    by_token = tmp_path / "tokens.txt"
    by_token.write_text("王五 B-PER\n在 O\n北京 B-LOC\n工作 O\n\n人民日报 S-ORG\n", encoding="utf-8")
    by_char = tmp_path / "chars.txt"
    by_char.write_text("王 B-PER\n五 I-PER\n在 O\n北 B-LOC\n京 I-LOC\n工 O\n作 O\n\n人 B-ORG\n民 I-ORG\n日 I-ORG\n报 I-ORG\n", encoding="utf-8")
    assert read_char_tag_file(str(by_token)) == read_char_tag_file(str(by_char))


def test_a_file_that_is_not_utf8_names_the_line_and_the_byte_of_the_file(tmp_path):
    path = tmp_path / "gbk.txt"
    head = "我 O\n去 O\n\n".encode("utf-8")
    path.write_bytes(head + "北 B-LOC\n".encode("gbk") + "京 I-LOC\n".encode("utf-8"))
    with pytest.raises(DataError, match=rf"gbk\.txt:4: not UTF-8 text \(invalid start byte at byte {len(head)}; save it as UTF-8\)"):
        read_char_tag_file(str(path))


def test_a_bad_byte_far_into_a_file_is_placed_in_the_file_not_in_a_read_chunk(tmp_path):
    """Text is decoded chunk by chunk; the error's own offset counts from the chunk."""
    path = tmp_path / "late.txt"
    head = "我 O\n\n".encode("utf-8") * 5000  # 40,000 bytes, 10,000 lines
    path.write_bytes(head + b"\xff O\n")
    with pytest.raises(DataError, match=rf"late\.txt:10001: not UTF-8 text \(invalid start byte at byte {len(head)};"):
        read_char_tag_file(str(path))


def test_missing_file():
    with pytest.raises(DataError, match="nowhere.txt: no such data file"):
        read_char_tag_file("nowhere.txt")


def test_tag_outside_the_configured_label_scheme(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("微 B-PRODUCT\n软 I-PRODUCT\n", encoding="utf-8")
    cfg = DataConfig(source="conll", test=str(path), labels=RECIPE_LABELS)
    with pytest.raises(DataError, match="tag 'B-PRODUCT' is outside the label scheme"):
        load_data(cfg)


def test_new_entity_types_extend_the_default_labels(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("微 B-PRODUCT\n软 I-PRODUCT\n", encoding="utf-8")
    data = load_data(DataConfig(source="conll", test=str(path)))
    assert data.labels == HUB_LABELS + ["B-PRODUCT", "I-PRODUCT"]


def test_empty_split(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="the test split is empty"):
        load_data(DataConfig(source="conll", test=str(path)))


def test_local_people_daily_file_with_recipe_label_order(pd_sample):
    data = load_data(DataConfig(source="conll", train=pd_sample, test=pd_sample, labels=RECIPE_LABELS, dev_fraction=0.25))
    assert data.labels == RECIPE_LABELS
    test = data.splits["test"]
    assert len(test) == 12
    assert len(data.splits["train"]) == 9 and len(data.splits["dev"]) == 3  # dev carved from train
    first = test[0]
    assert "".join(first["tokens"]).startswith("相比之下，青岛海牛队")
    names = test.features["ner_tags"].feature.names
    assert [names[t] for t in first["ner_tags"][5:10]] == ["B-ORG", "I-ORG", "I-ORG", "I-ORG", "I-ORG"]
    # ids follow the recipe order: B-ORG is 5 there, 3 in the hub order
    assert first["ner_tags"][5] == RECIPE_LABELS.index("B-ORG") == 5


def test_load_split_spec(pd_sample):
    ds = load_split(f"conll:{pd_sample}", HUB_LABELS)
    assert len(ds) == 12 and ds.features["ner_tags"].feature.names == HUB_LABELS
    with pytest.raises(DataError, match="unknown data spec"):
        load_split("csv:x", HUB_LABELS)


def test_msra_standard_split():
    data = load_data(DataConfig(source="msra", dev_fraction=0.05))
    splits = data.splits
    assert len(splits["test"]) == 4631
    assert len(splits["train"]) + len(splits["dev"]) == MSRA_TRAIN_CHUNKS
    assert len(splits["dev"]) == round(MSRA_TRAIN_CHUNKS * 0.05)
    # The first standard test chunk, hand-checked against msra.txt (BMES there).
    first = splits["test"][0]
    assert "".join(first["tokens"]) == "中共中央致中国致公党十一大的贺词"
    tags = [data.labels[t] for t in first["ner_tags"]]
    assert tags[:4] == ["B-ORG", "I-ORG", "I-ORG", "I-ORG"] and tags[5:13] == ["B-ORG"] + ["I-ORG"] * 7
    # dev is a seeded slice: same seed, same dev; no sentence in both train and dev by index
    again = load_data(DataConfig(source="msra", dev_fraction=0.05))
    assert again.splits["dev"]["tokens"][:5] == splits["dev"]["tokens"][:5]


def test_a_blocked_dev_split_takes_whole_runs_of_consecutive_sentences(tmp_path):
    from pipelines.data.loaders import _split_off

    sentences = [([str(i)], ["O"]) for i in range(100)]
    train, dev = _split_off(sentences, 0.2, seed=3, block=10)
    dev_ids = sorted(int(s[0][0]) for s in dev)
    runs = sorted({i // 10 for i in dev_ids})
    assert len(runs) == 2 and dev_ids == [i for r in runs for i in range(10 * r, 10 * r + 10)]
    assert len(train) == 80
    # block 1 is the sentence-level split earlier runs were made with: a seeded shuffle's first 20
    order = list(range(100))
    random.Random(3).shuffle(order)
    assert sorted(int(s[0][0]) for s in _split_off(sentences, 0.2, seed=3, block=1)[1]) == sorted(order[:20])
    # a last run that overshoots is kept whole: a run is never cut
    assert len(_split_off(sentences, 0.15, seed=3, block=10)[1]) == 20


def test_hub_dataset_offline_fails_with_one_clear_line():
    # Tests run with HF_DATASETS_OFFLINE=1 (conftest): the hub cannot be reached.
    with pytest.raises(DataError) as err:
        load_data(DataConfig(source="hub", hub_id="peoples_daily_ner"))
    message = str(err.value)
    assert message.startswith("hub dataset 'peoples_daily_ner': ") and "\n" not in message
