"""An LSTM that ``torch.export`` keeps as one operator at a symbolic length.

Exported with a dynamic length, ``nn.LSTM`` is decomposed step by step, which fixes the
length to the example's. ``workbench::lstm`` (one layer, one direction, batch first,
with biases, zero initial state: the BiLSTM tagger's LSTMs) is a custom operator whose
shape function alone is traced, so the program keeps it whole at any length and the
compiler lowers it with its recurrence kernel (``pipelines.compile.lstm``). Eager, it
runs torch's own LSTM, so the exported program checks against the model.
"""

from __future__ import annotations

import contextlib
import functools

OP_NAME = "workbench::lstm"


@functools.cache
def register() -> None:
    """Define ``torch.ops.workbench.lstm`` (once a process): exporting and loading a
    program that uses it both need it."""
    import torch

    # the schema spelled out: this module's annotations are strings (__future__)
    @torch.library.custom_op(OP_NAME, mutates_args=(), schema="(Tensor x, Tensor w_ih, Tensor w_hh, Tensor b_ih, Tensor b_hh) -> Tensor")
    def lstm(x, w_ih, w_hh, b_ih, b_hh):
        zeros = x.new_zeros(1, x.shape[0], w_hh.shape[1])
        # (input, (h0, c0), weights, has_biases, layers, dropout, train, bidirectional, batch_first)
        return torch._VF.lstm(x, (zeros, zeros), [w_ih, w_hh, b_ih, b_hh], True, 1, 0.0, False, False, True)[0]

    @lstm.register_fake
    def _(x, w_ih, w_hh, b_ih, b_hh):
        return x.new_empty(x.shape[0], x.shape[1], w_hh.shape[1])


def _plain(module) -> bool:
    return (module.num_layers == 1 and not module.bidirectional and module.batch_first and module.bias
            and not getattr(module, "proj_size", 0))


@contextlib.contextmanager
def opaque_lstms(model):
    """Within the block, each plain ``nn.LSTM`` of ``model`` calls ``workbench::lstm``
    (returning ``(output, None)``: the models here read only the output)."""
    import torch

    register()
    swapped = []
    for module in model.modules():
        if isinstance(module, torch.nn.LSTM) and _plain(module):

            def forward(x, hx=None, lstm=module):
                if hx is not None:
                    raise ValueError("workbench::lstm starts from a zero state")
                weights = (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
                return torch.ops.workbench.lstm(x, *weights), None

            module.forward = forward
            swapped.append(module)
    try:
        yield len(swapped)
    finally:
        for module in swapped:
            del module.forward  # the class's forward again
