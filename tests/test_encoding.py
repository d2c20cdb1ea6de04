import numpy as np
import pytest

from pipelines.data.encoding import CharEncoder, load_tokenizer, stitch, window_spans
from pipelines.data.encoding import make_windows


@pytest.fixture(scope="module")
def encoder():
    return CharEncoder(load_tokenizer())


def test_embedded_vocab_is_bert_base_chinese(encoder):
    tok = encoder.tokenizer
    assert len(tok) == 21128
    assert tok.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) == [0, 100, 101, 102, 103]


def test_one_id_per_character_and_unknowns_keep_their_place(encoder):
    text = "我在北京AB 😀é，"
    ids = encoder.ids(list(text))
    assert len(ids) == len(text)
    vocab = encoder.tokenizer.get_vocab()
    assert ids[:4] == [vocab[c] for c in "我在北京"]
    assert ids[4] == vocab["a"]  # lower-cased, as bert-base-chinese was trained
    assert ids[6] == encoder.unk_id and ids[7] == encoder.unk_id  # space and emoji: [UNK], position kept
    assert ids[8] == vocab["e"]  # accent stripped
    assert ids[9] == vocab["，"]


def test_full_width_digits_and_letters_read_as_ascii_but_full_width_punctuation_stays(encoder):
    vocab = encoder.tokenizer.get_vocab()
    # People's Daily prints dates and acronyms full-width; MSRA (the training data) never does.
    assert "１" in vocab and vocab["１"] != vocab["1"]  # without the fold they would be different ids
    assert encoder.ids(list("１９９８年ＷＴＯｗ")) == encoder.ids(list("1998年WTOw"))
    assert encoder.ids(list("％，（）")) == [vocab[c] for c in "％，（）"]


@pytest.mark.parametrize("length, window, stride", [(0, 10, None), (7, 10, None), (10, 10, 3), (11, 10, 3), (257, 126, 63), (1000, 254, None)])
def test_windows_cover_every_position_within_the_window(length, window, stride):
    spans = window_spans(length, window, stride)
    covered = set()
    for start, end in spans:
        assert 0 <= start < end <= length or (length == 0 and (start, end) == (0, 0))
        assert end - start <= window
        covered |= set(range(start, end))
    assert covered == set(range(length))


@pytest.mark.parametrize("length", [1, 10, 11, 99, 300])
def test_split_then_stitch_round_trip(length):
    rows = np.random.default_rng(0).normal(size=(length, 7)).astype(np.float32)
    spans = window_spans(length, 10, 4)
    assert np.array_equal(stitch(length, spans, [rows[a:b] for a, b in spans]), rows)


def test_stitch_prefers_the_window_with_more_context():
    # Position 9 is the last of window (0,10) but sits mid-window in (4,14): take the latter.
    spans = [(0, 10), (4, 14)]
    pieces = [np.zeros((10, 1)), np.ones((10, 1))]
    out = stitch(14, spans, pieces)
    assert out[9, 0] == 1 and out[2, 0] == 0 and out[13, 0] == 1


def test_long_text_is_windowed_not_truncated(encoder):
    text = list("中" * 300)
    windows = make_windows([text], encoder, max_length=128)
    assert len(windows) > 1
    assert all(len(w.ids) <= 128 and w.ids[0] == encoder.cls_id and w.ids[-1] == encoder.sep_id for w in windows)
    assert windows[0].start == 0 and windows[-1].end == 300


def test_priming_a_corpus_gives_the_ids_of_one_tokenizer_call_a_character():
    # ``prime`` looks characters up in one batch call; each must get the id the
    # tokenizer gives it alone (its one piece, else [UNK]).
    text = "我在北京AB 😀é，１９ＷＴＯ％\u3000\t\u200b①㊣ﬁ"
    primed = CharEncoder(encoder_tokenizer := load_tokenizer())
    primed.prime([list(text), list("北京")])
    one_by_one = []
    for c in text:
        pieces = encoder_tokenizer.tokenize({"１": "1", "９": "9", "Ｗ": "W", "Ｔ": "T", "Ｏ": "O"}.get(c, c)) if c.strip() else []
        one_by_one.append(encoder_tokenizer.convert_tokens_to_ids(pieces[0]) if len(pieces) == 1 else encoder_tokenizer.unk_token_id)
    assert primed.ids(list(text)) == one_by_one
    assert one_by_one.count(encoder_tokenizer.unk_token_id) >= 4  # space, emoji, ideographic space, tab at least
