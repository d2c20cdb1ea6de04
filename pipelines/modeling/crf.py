"""A linear-chain CRF over a tagger's per-character scores (``model.crf``), as the
classic BiLSTM-CRF NER models use: training maximises the likelihood of the gold tag
sequence among all sequences, so the model learns which tags follow which (an I-ORG
run after B-ORG, no PER straight into ORG) instead of scoring each character alone.

Only the training loss lives here. The network still outputs the per-character scores
(the emissions) every engine computes; the CRF's scores (start, end, transition) are
saved into the model's ``workbench.json`` (``ModelMeta.crf``) and
``pipelines.runtime.predict`` decodes any engine's emissions with them in numpy.

Partially labelled text (People's Daily 1998 silver labels mark unsure characters
``IGNORE``) is handled the way partial-label CRFs do: the gold score is the sum over
every sequence that agrees with the known labels, so an unsure character constrains
nothing.
"""

from __future__ import annotations

import functools

from pipelines.data.encoding import IGNORE


@functools.cache
def crf_class():
    """The CRF module class, defined on first use: torch loads lazily."""
    import torch

    class Crf(torch.nn.Module):
        def __init__(self, num_labels: int) -> None:
            super().__init__()
            # zeros: the untrained CRF adds nothing, and decoding starts as the softmax tagger's
            self.start = torch.nn.Parameter(torch.zeros(num_labels))
            self.end = torch.nn.Parameter(torch.zeros(num_labels))
            self.transitions = torch.nn.Parameter(torch.zeros(num_labels, num_labels))  # [previous, next]

        def log_partition(self, emissions, lengths):
            """log of the summed exp-scores of every tag sequence of each row's length
            (rows of ``emissions [B, T, L]`` are real for their first ``lengths`` steps;
            a row of length 0 scores 0). Tags a row must not take are -inf there."""
            alpha = self.start + emissions[:, 0]
            for t in range(1, emissions.shape[1]):
                step = torch.logsumexp(alpha.unsqueeze(2) + self.transitions, dim=1) + emissions[:, t]
                alpha = torch.where((t < lengths).unsqueeze(1), step, alpha)
            total = torch.logsumexp(alpha + self.end, dim=1)
            return torch.where(lengths > 0, total, torch.zeros_like(total))

        def nll(self, emissions, labels, lengths):
            """Negative log-likelihood of ``labels [B, T]`` (``IGNORE``: any tag) per
            labelled character, the scale of a token cross-entropy. The gold and the
            all-sequences partitions run as one batch: one Python loop, not two."""
            emissions = emissions.float()
            unknown = labels == IGNORE
            known = torch.nn.functional.one_hot(labels.clamp(min=0), emissions.shape[-1]).bool() | unknown.unsqueeze(-1)
            gold = emissions.masked_fill(~known, float("-inf"))
            both = self.log_partition(torch.cat([emissions, gold]), torch.cat([lengths, lengths]))
            everything, agreeing = both.chunk(2)
            steps = torch.arange(labels.shape[1], device=labels.device).unsqueeze(0)
            counted = ((steps < lengths.unsqueeze(1)) & ~unknown).sum().clamp(min=1)
            return (everything - agreeing).sum() / counted

        def log_marginals(self, emissions, lengths):
            """``[B, T, L]`` log-probability of each tag at each step under the CRF
            (forward-backward; differentiable): per-character distributions, which is
            what distillation compares. Steps past a row's length repeat its last."""
            emissions = emissions.float()
            last = emissions.shape[1] - 1
            alphas = [self.start + emissions[:, 0]]
            for t in range(1, last + 1):
                step = torch.logsumexp(alphas[-1].unsqueeze(2) + self.transitions, dim=1) + emissions[:, t]
                alphas.append(torch.where((t < lengths).unsqueeze(1), step, alphas[-1]))
            end = self.end.expand_as(alphas[0])
            betas = [end]
            for t in range(last - 1, -1, -1):  # betas[0] is step `last`, built backwards
                step = torch.logsumexp(self.transitions + (emissions[:, t + 1] + betas[-1]).unsqueeze(1), dim=2)
                betas.append(torch.where((t < lengths - 1).unsqueeze(1), step, end))
            alpha, beta = torch.stack(alphas, 1), torch.stack(betas[::-1], 1)
            total = torch.logsumexp(alphas[-1] + self.end, dim=1)
            return alpha + beta - total[:, None, None]

        def scores(self) -> dict:
            """The decoder's scores as plain lists (``ModelMeta.crf``)."""
            return {name: getattr(self, name).detach().float().tolist() for name in ("start", "end", "transitions")}

    return Crf


def tagging_loss(model, logits, label_rows, attention_mask):
    """The training loss of a batch of windows (``[CLS] chars [SEP]`` and padding,
    ``label_rows`` ``IGNORE`` outside the characters): the CRF's negative log-likelihood
    over the characters for a model with one, else token cross-entropy."""
    import torch

    crf = getattr(model, "crf", None)
    if crf is None:
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), label_rows.reshape(-1), ignore_index=IGNORE)
    lengths = attention_mask.sum(1) - 2  # the characters sit between [CLS] and [SEP]
    return crf.nll(logits[:, 1:], label_rows[:, 1:], lengths)


def tag_log_probs(model, logits, attention_mask):
    """What distillation compares, ``[B, S, L]`` over windows (``[CLS] chars [SEP]``):
    a CRF model's log-marginals at the characters, or a softmax tagger's logits (whose
    log-softmax they are). What they hold past the characters means nothing."""
    import torch

    crf = getattr(model, "crf", None)
    if crf is None:
        return logits
    return torch.cat([logits[:, :1].float(), crf.log_marginals(logits[:, 1:], attention_mask.sum(1) - 2)], 1)


def crf_scores(model) -> dict | None:
    crf = getattr(model, "crf", None)
    return crf.scores() if crf is not None else None
