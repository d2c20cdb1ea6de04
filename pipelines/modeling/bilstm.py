"""A character BiLSTM tagger with bigram and word-lexicon features: it learns NER
several times faster than BERT on a CPU (issue #20), the quickstart model and a
teacher, read through the same inputs as the BERT students so it distils into them
and runs on every engine here.

Per character: its embedding, a hashed embedding of the bigram it starts (the
character and the next), and one learned vector per (type, B/M/E/S) of its
lexicon code, unpacked from the ``input_ids`` ``CharEncoder`` packs, as the BERT
students do. A forward LSTM reads the text left to right and a second one right
to left, then a linear layer scores the labels: a softmax tagger, or with ``crf`` the
emissions of a linear-chain CRF (``pipelines.modeling.crf``) whose scores decode them.

The right-to-left pass reverses each row within its own length, so padding never
reaches a real character: a sentence tags the same alone or in any batch, on any
padded shape. It is a Hugging Face ``PreTrainedModel``, so saving, loading and the
training loop treat it as they treat BERT. TorchScript and ONNX export torch's LSTM;
TVM compiles it with its own recurrence kernel (``pipelines.compile.lstm``).
"""

from __future__ import annotations

import functools

from pipelines.data.lexicon_features import GROUP_BITS
from pipelines.modeling.codes import const, split_codes
from pipelines.modeling.crf import crf_class, tagging_loss

MODEL_TYPE = "ner-bilstm"


@functools.cache
def bilstm_classes():
    """(config class, model class), defined on first use: torch and transformers load lazily."""
    import torch
    from transformers import AutoConfig, PretrainedConfig, PreTrainedModel
    from transformers.modeling_outputs import TokenClassifierOutput

    class BiLstmConfig(PretrainedConfig):
        model_type = MODEL_TYPE  # fields as transformers 5 declares them (BertConfig)

        # The defaults are the `bilstm` preset: 7.7M parameters, 6.9M of them the
        # character table and the bigram table (bigrams hashed into 32k rows: AdamW
        # updates every row each step).
        vocab_size: int = 21128
        embedding_size: int = 128
        hidden_size: int = 256
        bigram_buckets: int = 1 << 15
        lexicon_types: int = 0
        dropout: float = 0.5
        crf: bool = False
        pad_token_id: int | None = 0

    class BiLstmForTokenClassification(PreTrainedModel):
        config_class = BiLstmConfig
        base_model_prefix = "bilstm"

        def __init__(self, config) -> None:
            super().__init__(config)
            e, h = config.embedding_size, config.hidden_size
            self.chars = torch.nn.Embedding(config.vocab_size, e, padding_idx=config.pad_token_id)
            self.bigrams = torch.nn.Embedding(config.bigram_buckets, e) if config.bigram_buckets else None
            self.lexicon = torch.nn.Embedding(config.lexicon_types << GROUP_BITS, e) if config.lexicon_types else None
            self.forward_lstm = torch.nn.LSTM(e, h, batch_first=True)
            self.backward_lstm = torch.nn.LSTM(e, h, batch_first=True)
            self.dropout = torch.nn.Dropout(config.dropout)
            self.classifier = torch.nn.Linear(2 * h, config.num_labels)
            self.crf = crf_class()(config.num_labels) if config.crf else None
            self.post_init()

        def _init_weights(self, module) -> None:
            if isinstance(module, torch.nn.Embedding):
                torch.nn.init.normal_(module.weight, std=0.1)
            elif isinstance(module, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(module.weight)
                torch.nn.init.zeros_(module.bias)
            elif isinstance(module, crf_class()):  # also a CRF added to a saved BiLSTM without one
                for p in module.parameters():
                    torch.nn.init.zeros_(p)

        def recur(self, x, reversal):
            """Both LSTMs over ``x``; the backward one reads it rows reversed by ``reversal``."""
            ahead, _ = self.forward_lstm(x)
            behind, _ = self.backward_lstm(torch.gather(x, 1, reversal))
            return ahead, behind

        def embed(self, input_ids):
            ids, groups = split_codes(input_ids, self.config.lexicon_types if self.lexicon is not None else 0)
            x = self.chars(ids)
            if self.bigrams is not None:
                # the next character, padding after the last: a roll, where a slice and a
                # pad give a length TVM cannot follow when it is symbolic (opaque_lstm)
                steps = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
                following = torch.where(steps < ids.shape[1] - 1, torch.roll(ids, -1, 1), const(ids, self.config.pad_token_id))
                bigram = ids * const(ids, self.config.vocab_size) + following
                x = x + self.bigrams(torch.remainder(bigram, const(ids, self.config.bigram_buckets)))
            for index in groups:
                x = x + self.lexicon(index)
            return x

        def forward(self, input_ids, attention_mask=None, labels=None, **_):
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            x = self.dropout(self.embed(input_ids))
            lengths = attention_mask.sum(1, keepdim=True)
            steps = torch.arange(x.shape[1], device=x.device, dtype=lengths.dtype).unsqueeze(0)
            # each row's real positions reversed in place, padding left where it is
            mirror = torch.where(steps < lengths, lengths - const(lengths, 1) - steps, steps)
            gather = mirror.unsqueeze(-1).expand(-1, -1, x.shape[-1])
            if torch.is_autocast_enabled(x.device.type):
                # The LSTMs in fp32 under bf16 autocast (training's precision: auto on AMX
                # hosts): oneDNN has no bf16 LSTM primitive on CPUs without AVX512-BF16.
                with torch.autocast(x.device.type, enabled=False):
                    ahead, behind = self.recur(x.float(), gather)
            else:  # exported: no autocast region for the importers to read
                ahead, behind = self.recur(x, gather)
            # The label head over [ahead; behind] as two halves, the backward half's scores
            # put back in reading order: gathering 7 scores a position instead of 256
            # states, and no concatenation (compiled at 64x48: 1.2 ms of those copies).
            w = self.classifier.weight
            hidden = ahead.shape[-1]
            behind = torch.nn.functional.linear(self.dropout(behind), w[:, hidden:])
            behind = torch.gather(behind, 1, mirror.unsqueeze(-1).expand(-1, -1, behind.shape[-1]))
            logits = torch.nn.functional.linear(self.dropout(ahead), w[:, :hidden], self.classifier.bias) + behind
            loss = tagging_loss(self, logits, labels, attention_mask) if labels is not None else None
            return TokenClassifierOutput(loss=loss, logits=logits)

    # Known to AutoConfig, so AutoTokenizer reading a saved BiLSTM's directory knows its config.
    AutoConfig.register(MODEL_TYPE, BiLstmConfig)
    return BiLstmConfig, BiLstmForTokenClassification

