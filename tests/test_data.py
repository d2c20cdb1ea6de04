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


def test_hub_dataset_offline_fails_with_one_clear_line():
    # Tests run with HF_DATASETS_OFFLINE=1 (conftest): the hub cannot be reached.
    with pytest.raises(DataError) as err:
        load_data(DataConfig(source="hub", hub_id="peoples_daily_ner"))
    message = str(err.value)
    assert message.startswith("hub dataset 'peoples_daily_ner': ") and "\n" not in message
