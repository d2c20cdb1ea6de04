"""The CRF (``model.crf``): its likelihood and partition against enumerating every tag
sequence, decoding and confidences from its scores, and a BiLSTM-CRF run whose
learned transitions every engine decodes with."""

import itertools
import math
import os

import numpy as np
import pytest

from pipelines.data.encoding import IGNORE
from pipelines.runtime.predict import bio_transitions, crf_marginals, decode, extract_entities, viterbi_bio

from conftest import toy_bilstm_run

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def sequence_score(path, emissions, start, end, transitions) -> float:
    return start[path[0]] + end[path[-1]] + sum(emissions[t, k] for t, k in enumerate(path)) + sum(
        transitions[a, b] for a, b in zip(path, path[1:])
    )


def random_crf(rng, labels: int = 3, steps: int = 4):
    return rng.normal(size=(steps, labels)), rng.normal(size=labels), rng.normal(size=labels), rng.normal(size=(labels, labels))


def test_the_likelihood_is_that_of_enumerating_every_sequence_with_unsure_characters_open():
    import torch

    from pipelines.modeling.crf import crf_class

    rng = np.random.default_rng(0)
    emissions, start, end, transitions = random_crf(rng)
    crf = crf_class()(3)
    with torch.no_grad():
        crf.start.copy_(torch.tensor(start))
        crf.end.copy_(torch.tensor(end))
        crf.transitions.copy_(torch.tensor(transitions))
    # row 0: 4 characters, the third unsure; row 1: 2 characters then padding
    labels = torch.tensor([[1, 2, IGNORE, 0], [2, 0, IGNORE, IGNORE]])
    lengths = torch.tensor([4, 2])
    batch = torch.tensor(np.stack([emissions, emissions]), dtype=torch.float32)
    expected = []
    for row, n in enumerate((4, 2)):
        scores = {p: sequence_score(p, emissions[:n], start, end, transitions) for p in itertools.product(range(3), repeat=n)}
        gold = [int(x) for x in labels[row, :n]]
        agreeing = [s for p, s in scores.items() if all(g in (IGNORE, k) for g, k in zip(gold, p))]
        log_z = math.log(sum(math.exp(s) for s in scores.values()))
        assert float(crf.log_partition(batch[row : row + 1, :n], torch.tensor([n])).detach()) == pytest.approx(log_z, abs=1e-4)
        expected.append(log_z - math.log(sum(math.exp(s) for s in agreeing)))
    # per labelled character: 3 + 2 of them
    assert float(crf.nll(batch, labels, lengths).detach()) == pytest.approx(sum(expected) / 5, abs=1e-4)


def test_the_marginals_are_those_of_enumerating_every_sequence():
    import torch

    from pipelines.modeling.crf import crf_class

    rng = np.random.default_rng(2)
    emissions, start, end, transitions = random_crf(rng, labels=3, steps=4)
    crf = crf_class()(3)
    with torch.no_grad():
        crf.start.copy_(torch.tensor(start))
        crf.end.copy_(torch.tensor(end))
        crf.transitions.copy_(torch.tensor(transitions))
    batch = torch.tensor(np.stack([emissions, emissions]), dtype=torch.float32)
    got = crf.log_marginals(batch, torch.tensor([4, 3])).detach().exp().numpy()
    for row, n in enumerate((4, 3)):
        paths = list(itertools.product(range(3), repeat=n))
        weights = np.exp([sequence_score(p, emissions[:n], start, end, transitions) for p in paths])
        expected = np.zeros((n, 3))
        for p, w in zip(paths, weights / weights.sum()):
            expected[np.arange(n), list(p)] += w
        assert np.allclose(got[row, :n], expected, atol=1e-5)


def test_viterbi_and_marginals_with_crf_scores_are_those_of_enumerating_valid_sequences():
    rng = np.random.default_rng(1)
    emissions, start, end, transitions = random_crf(rng, labels=len(LABELS), steps=4)
    crf = {"start": start.tolist(), "end": end.tolist(), "transitions": transitions.tolist()}
    first, allowed = bio_transitions(LABELS)
    valid = [p for p in itertools.product(range(len(LABELS)), repeat=4) if first[p[0]] and all(allowed[a, b] for a, b in zip(p, p[1:]))]
    scores = np.array([sequence_score(p, emissions, start, end, transitions) for p in valid])
    assert tuple(viterbi_bio(emissions, LABELS, crf)) == valid[int(scores.argmax())]
    weights = np.exp(scores - scores.max())
    weights /= weights.sum()
    expected = np.zeros((4, len(LABELS)))
    for p, w in zip(valid, weights):
        expected[np.arange(4), list(p)] += w
    marginals = crf_marginals(emissions, LABELS, crf)
    assert np.allclose(marginals, expected, atol=1e-9)
    assert np.allclose(marginals.sum(axis=1), 1.0)
    assert marginals[0, LABELS.index("I-PER")] == 0.0  # never valid first


def test_learned_transitions_change_the_tags_the_emissions_alone_give():
    """Hand-checked: the second character leans O (log-odds 0.5 over I-PER), but the CRF
    learned that B-PER is followed by I-PER (+2): the pair scores 1 + 2 + 0 = 3 against
    1 + 0 + 0.5 = 1.5, so 李鹏 is one name, with the CRF's confidence in it."""
    emissions = np.full((2, len(LABELS)), -5.0)
    emissions[0, LABELS.index("B-PER")] = 1.0
    emissions[1, LABELS.index("O")] = 0.5
    emissions[1, LABELS.index("I-PER")] = 0.0
    transitions = np.zeros((len(LABELS), len(LABELS)))
    transitions[LABELS.index("B-PER"), LABELS.index("I-PER")] = 2.0
    crf = {"start": [0.0] * len(LABELS), "end": [0.0] * len(LABELS), "transitions": transitions.tolist()}
    assert decode(emissions, LABELS, "bio") == ["B-PER", "O"]
    assert decode(emissions, LABELS, "bio", crf) == ["B-PER", "I-PER"]
    [entity] = extract_entities("李鹏", emissions, LABELS, "bio", crf)
    # the mean of P(B-PER first), nearly 1 (the rest score -5), and P(I-PER second) =
    # e^3 / (e^3 + e^1.5 + sequences scoring -4 or less) = 0.818: 0.909 (its softmax: 0.38)
    assert entity.text == "李鹏" and entity.confidence == pytest.approx((1 + math.exp(3) / (math.exp(3) + math.exp(1.5))) / 2, abs=0.005)


def test_a_crf_needs_the_bilstm():
    from pipelines.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="model.crf is the BiLSTM's: it needs preset: bilstm"):
        parse_config({"model": {"preset": "mini", "crf": True}})


@pytest.fixture(scope="module")
def crf_run(tmp_path_factory):
    return toy_bilstm_run(tmp_path_factory.mktemp("crf-run"), "bilstm-crf", crf=True)


def test_a_bilstm_crf_learns_which_tags_follow_which_and_saves_them_for_every_engine(crf_run):
    from pipelines.modeling.models import load_model
    from pipelines.runtime.tagger import Tagger

    run, results, _ = crf_run
    assert results["eval"]["f1"] > 0.5
    model, _, meta = load_model(os.path.join(run.dir, "model"))
    assert model.crf is not None and meta.crf == model.crf.scores()
    trans = np.array(meta.crf["transitions"])
    labels = meta.labels
    # learned from the gold sequences (they start at 0): an entity goes on after its
    # first character, an O never runs into one
    for etype in ("PER", "LOC", "ORG"):
        inside = labels.index(f"I-{etype}")
        assert trans[labels.index(f"B-{etype}"), inside] > trans[labels.index("O"), inside] + 0.1, etype
    entities = Tagger.open(run.dir, "torch", decoder="bio").tag("张三在北京工作")
    assert [(e.type, e.text) for e in entities] == [("PER", "张三"), ("LOC", "北京")]
    assert all(0.5 < e.confidence <= 1.0 for e in entities)


def test_a_compiled_bilstm_crf_scores_as_torch(crf_run):
    """The CRF is not in the compiled graph: TVM's emissions, decoded with the saved
    scores, give torch's F1 (the artifact's manifest carries them too)."""
    from pipelines.config import parse_config
    from pipelines.events import Reporter
    from pipelines.runtime.engines import open_engine
    from pipelines.stages import stage_compile

    from conftest import evaluate_run

    run, results, corpus = crf_run
    cfg = parse_config({"data": corpus.data(), "compile": {"precisions": ["fp32"], "shapes": [[4, 16]]}})
    stage_compile(cfg, run.dir, Reporter())
    assert open_engine("tvm-fp32", run.dir).meta["crf"]["transitions"] == results_scores(run)
    scores = evaluate_run(run.dir, "tvm-fp32")
    assert scores["f1"] == results["eval"]["f1"] and scores["agreement_with_torch"] == 1.0


def results_scores(run):
    from pipelines.modeling.models import ModelMeta

    return ModelMeta.load(os.path.join(run.dir, "model")).crf["transitions"]


def test_a_student_that_starts_as_its_crf_teacher_has_nothing_to_learn_from_it(crf_run):
    """Distillation compares CRF marginals, teacher's and student's: a student that is
    its teacher has a distillation loss of 0, and a changed CRF does not."""
    import torch

    from pipelines.data.encoding import pad_batch
    from pipelines.modeling.crf import tag_log_probs
    from pipelines.modeling.models import load_model
    from pipelines.training.distill import Teachers, kd_loss

    teacher_dir = os.path.join(crf_run[0].dir, "model")
    student, encoder, meta = load_model(teacher_dir)
    teachers = Teachers([teacher_dir], encoder, meta.labels)
    rows = [[encoder.cls_id, *encoder.ids(list(text)), encoder.sep_id] for text in ("张三在北京工作", "新华社报道")]
    ids, mask = (torch.from_numpy(a) for a in pad_batch(rows, encoder.pad_id))
    real = mask.bool() & (ids != encoder.cls_id) & (ids != encoder.sep_id)
    with torch.no_grad():
        targets = teachers.logits(ids, mask)[real]
        assert torch.allclose(targets.exp().sum(-1), torch.ones(int(real.sum())), atol=1e-5)  # distributions
        ours = tag_log_probs(student, student(input_ids=ids, attention_mask=mask).logits, mask)[real]
        assert float(kd_loss(ours, targets, 2.0)) == pytest.approx(0.0, abs=1e-6)
        student.crf.transitions.add_(torch.randn_like(student.crf.transitions))
        ours = tag_log_probs(student, student(input_ids=ids, attention_mask=mask).logits, mask)[real]
        assert float(kd_loss(ours, targets, 2.0)) > 1e-3
