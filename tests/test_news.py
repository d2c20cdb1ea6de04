"""Held-out news: People's Daily 1998 text that no training source reads, labelled in
MSRA's conventions (pipelines/data/news.py)."""

from pipelines.data.loaders import HUB_LABELS
from pipelines.data.silver import parse_line


def _words(line: str):
    return parse_line(line, "test", 1)


def test_news_sentences_keep_decided_unseen_sentences_with_msra_labels():
    from pipelines.data.news import news_sentences

    kept_line = "江/nr  泽民/nr  在/p  北京/ns  会见/v  新华社/nt  记者/n  。/w"
    numbered = [
        (1, _words(kept_line)),
        (2, _words("中国/ns  人民/n  银行/n  今天/t  发布/v  公告/n  。/w")),  # 中国人民银行: one ORG or LOC + O? undecided
        (3, _words("（/w  完/v  ）/w")),  # a dateline, not a sentence
        (4, _words(kept_line)),  # the same sentence again
        (5, _words("李/nr  鹏/nr  今天/t  抵达/v  上海/ns  进行/v  访问/v  。/w")),  # MSRA has it (below)
        (6, _words("王/nr  先生/n  说/v  ，/w  今年/t  的/u  收成/n  很/d  好/a  。/w")),
    ]
    msra_texts = ["新华社上海一月五日电李鹏今天抵达上海进行访问。"]
    split = news_sentences(numbered, msra_texts)
    assert split.counts == {"read": 6, "undecided": 1, "short": 1, "shares_msra_text": 1, "repeated": 1, "kept": 2}
    (chars, tags), (chars2, tags2) = split.sentences
    assert "".join(chars) == "江泽民在北京会见新华社记者。"
    assert tags == ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O", "B-ORG", "I-ORG", "I-ORG", "O", "O", "O"]
    assert "".join(chars2).startswith("王先生说") and tags2[:2] == ["B-PER", "O"]


def test_no_training_source_reads_the_held_out_lines():
    """The silver labels, the lexicon's and gazetteer's corpus sentences and the
    distillation / pretraining text all stop before the news; the line before it is read."""
    from pipelines.data.corpus import peoples_daily_1998
    from pipelines.data.lexicon import read_sources
    from pipelines.data.silver import news_first_line, peoples_daily_1998_file, peoples_daily_1998_sentences, peoples_daily_1998_silver

    first = news_first_line()
    news = ["".join(w for w, _ in words) for _, words in peoples_daily_1998_sentences("news")]
    train = peoples_daily_1998_sentences("train")
    assert min(line for line, _ in peoples_daily_1998_sentences("news")) >= first > max(line for line, _ in train)
    last_train = "".join(w for w, _ in train[-1][1])
    probe = next(text for text in news if len(text) > 15 and text not in {"".join(w for w, _ in s) for _, s in train})

    silver = {"".join(s.chars) for s in peoples_daily_1998_silver()}
    assert probe not in silver and last_train in silver
    lexicon = {"".join(w for w, _ in s) for s in read_sources("peoples_daily_1998").sentences}
    assert probe not in lexicon and last_train in lexicon
    paragraphs = ["".join(words) for words in peoples_daily_1998()]
    with open(peoples_daily_1998_file(), encoding="utf-8") as f:
        before = sum(1 for lineno, line in enumerate(f, 1) if lineno < first and line.strip())
    assert len(paragraphs) == before and not any(probe in p for p in paragraphs)


def test_the_news_split_loads_as_a_dataset_in_the_model_labels():
    from pipelines.data.news import held_out_news, news_dataset

    split = held_out_news()
    assert split.counts["kept"] == len(split.sentences) > 2000
    assert split.counts["shares_msra_text"] > 0  # some of the month is in MSRA: left out
    ds = news_dataset(HUB_LABELS)
    assert len(ds) == len(split.sentences)
    names = ds.features["ner_tags"].feature.names
    assert names == HUB_LABELS
    first_with_entity = next(i for i, (_, tags) in enumerate(split.sentences) if any(t != "O" for t in tags))
    assert [names[t] for t in ds[first_with_entity]["ner_tags"]] == split.sentences[first_with_entity][1]
