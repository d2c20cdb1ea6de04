"""LSTMs for TVM: the input projection as one GEMM over every step, then the recurrence
as one hand-written kernel.

TVM's own importer unrolls ``aten.lstm`` into 10 graph operators per step, so a
BiLSTM at length 128 became ~2,600 small kernels: 260 ms at 1x128 against torch's
9.6 ms (measured here, AVX2 EPYC). Here the per-step work is a loop inside one TIR
function: for each step, the gates are the step's precomputed input projection plus
``h @ W_hh^T``, accumulated in registers a tile at a time (the four gates of 16
hidden units, ``W_hh`` packed ``[H/16, H, 64]`` ahead of time, each weight row serving
a block of batch rows), then the tile's cell update with a rational ``tanh`` that
vectorises (``sigmoid(x) = (1 + tanh(x / 2)) / 2``) instead of a libm call per element.
Groups of batch rows run in parallel.

Only the LSTMs the models here use are lowered this way (one layer, one direction,
batch first, with biases); any other LSTM goes to TVM's own converter.
"""

from __future__ import annotations

import math

# Hidden units per tile: a tile's 4 x 16 gate sums (8 AVX2 / 4 AVX-512 registers) are
# accumulated in registers, then its units' cell and output updated, all in one thread.
UNITS = 16
GROUPS = 4  # batch rows split into up to this many groups, run in parallel

# Eigen's and TVM's ``fast_tanh``: a 13/6 rational approximation, exact to float32
# rounding on [-9, 9] and +-1 outside.
_ALPHA = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
          1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03)
_BETA = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)


def fast_tanh(x):
    """tanh of a float32 TIR expression, with multiplies, adds and one divide."""
    from tvm import tirx

    x = tirx.max(tirx.min(x, tirx.const(9.0, "float32")), tirx.const(-9.0, "float32"))
    x2 = x * x
    p = tirx.const(_ALPHA[0], "float32")
    for a in _ALPHA[1:]:
        p = p * x2 + tirx.const(a, "float32")
    q = tirx.const(_BETA[0], "float32")
    for b in _BETA[1:]:
        q = q * x2 + tirx.const(b, "float32")
    return x * p / q


def fast_sigmoid(x):
    half = 0.5
    return fast_tanh(x * half) * half + half


def recurrence_kernel(batch: int, steps: int, hidden: int, weight_dtype: str = "float32"):
    """The TIR function ``(xw [B, S, 4H], wp [H/U, H, 4U], scale [H/U, 4U], h0 [B, H],
    c0 [B, H]) -> out [B, S, H]``: the LSTM over ``S`` steps given every step's input
    projection (bias included) and ``W_hh`` packed by ``pack_recurrent_weight``, in
    float32 (scales of 1) or int8 (a scale per gate column)."""
    from tvm.script import tirx as T

    if hidden % UNITS:
        raise ValueError(f"LSTM hidden size {hidden} is not a multiple of {UNITS}")
    tiles, lanes = hidden // UNITS, 4 * UNITS
    groups = math.gcd(batch, GROUPS)
    rows = batch // groups
    # Rows a weight row serves while in registers: the accumulators of `block` rows x
    # `sub` gate columns fit AVX2's 16 registers with one to spare for the broadcast.
    block = next(n for n in (4, 3, 2, 1) if rows % n == 0)
    sub = {1: 64, 2: 32, 3: 32, 4: 16}[block]

    @T.prim_func(private=True, s_tir=True)
    def lstm_recurrence(
        xw: T.Buffer((batch, steps, 4 * hidden), "float32"),
        wp: T.Buffer((tiles, hidden, lanes), weight_dtype),
        scale: T.Buffer((tiles, lanes), "float32"),
        h0: T.Buffer((batch, hidden), "float32"),
        c0: T.Buffer((batch, hidden), "float32"),
        out: T.Buffer((batch, steps, hidden), "float32"),
    ):
        T.func_attr({"tir.noalias": True})
        with T.sblock("root"):
            with T.sblock("recurrence"):  # opaque: passes that look for a block find one
                T.reads(xw[0:batch, 0:steps, 0 : 4 * hidden], wp[0:tiles, 0:hidden, 0:lanes], scale[0:tiles, 0:lanes], h0[0:batch, 0:hidden], c0[0:batch, 0:hidden])
                T.writes(out[0:batch, 0:steps, 0:hidden])
                h = T.alloc_buffer((2, batch, hidden), "float32")  # step t reads h[t % 2], writes the other
                c = T.alloc_buffer((batch, hidden), "float32")
                for b, j in T.grid(batch, hidden):
                    h[0, b, j] = h0[b, j]
                    c[b, j] = c0[b, j]
                # Row groups in parallel, each through every step: no fork per step (a
                # fork per step cost more than it saved: 32.6 us a step against 19.4 in
                # one thread at 1x128). Each weight row loaded serves a block of rows
                # (64x48 in one thread: 26.4 ms in blocks of 4 rows, 46.9 row by row).
                for g in T.parallel(groups):
                    for t, tile, rb in T.grid(steps, tiles, rows // block):
                        with T.sblock("tile"):
                            T.reads(xw[g * rows + rb * block : g * rows + rb * block + block, t, 0 : 4 * hidden], wp[tile, 0:hidden, 0:lanes], scale[tile, 0:lanes], h[t % 2, g * rows + rb * block : g * rows + rb * block + block, 0:hidden], c[g * rows + rb * block : g * rows + rb * block + block, tile * UNITS : tile * UNITS + UNITS])
                            T.writes(c[g * rows + rb * block : g * rows + rb * block + block, tile * UNITS : tile * UNITS + UNITS], h[1 - t % 2, g * rows + rb * block : g * rows + rb * block + block, tile * UNITS : tile * UNITS + UNITS], out[g * rows + rb * block : g * rows + rb * block + block, t, tile * UNITS : tile * UNITS + UNITS])
                            # global scope: under 1 KB, stack arrays (kept in registers); "local" would be heap workspaces
                            acc = T.alloc_buffer((block, sub), "float32")
                            gates = T.alloc_buffer((block, lanes), "float32")
                            for part in T.serial(lanes // sub):
                                for r in T.unroll(block):
                                    for lane in T.vectorized(sub):
                                        acc[r, lane] = T.float32(0)
                                for k in T.serial(hidden):
                                    for r in T.unroll(block):
                                        for lane in T.vectorized(sub):
                                            acc[r, lane] = acc[r, lane] + h[t % 2, g * rows + rb * block + r, k] * T.Cast("float32", wp[tile, k, part * sub + lane])
                                for r in T.unroll(block):
                                    for lane in T.vectorized(sub):
                                        gates[r, part * sub + lane] = acc[r, lane]
                            for r in T.serial(block):
                                for gate in T.serial(4):
                                    for u in T.vectorized(UNITS):
                                        gates[r, gate * UNITS + u] = gates[r, gate * UNITS + u] * scale[tile, gate * UNITS + u] + xw[g * rows + rb * block + r, t, gate * hidden + tile * UNITS + u]
                                # torch's gate order: input, forget, cell, output
                                for u in T.vectorized(UNITS):
                                    c[g * rows + rb * block + r, tile * UNITS + u] = fast_sigmoid(gates[r, UNITS + u]) * c[g * rows + rb * block + r, tile * UNITS + u] + fast_sigmoid(gates[r, u]) * fast_tanh(gates[r, 2 * UNITS + u])
                                    h[1 - t % 2, g * rows + rb * block + r, tile * UNITS + u] = fast_sigmoid(gates[r, 3 * UNITS + u]) * fast_tanh(c[g * rows + rb * block + r, tile * UNITS + u])
                                    out[g * rows + rb * block + r, t, tile * UNITS + u] = h[1 - t % 2, g * rows + rb * block + r, tile * UNITS + u]

    # scheduled by hand (default schedules skip it) and opaque (fusion leaves it whole)
    return lstm_recurrence.with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8)


def pack_recurrent_weight(w_hh, int8: bool = False):
    """``W_hh`` [4H, H] (gates i, f, g, o stacked) -> (weight [H/U, H, 4U], scale
    [H/U, 4U]): tile ``n`` holds the four gates of hidden units nU .. nU+U-1, each row
    k contiguous. int8: symmetric, a scale per gate column (weight-only: the
    recurrence reads 1 byte a weight instead of 4, converting as it goes)."""
    import numpy as np

    hidden = w_hh.shape[1]
    tiles = hidden // UNITS
    w = w_hh.reshape(4, tiles, UNITS, hidden).transpose(1, 3, 0, 2).reshape(tiles, hidden, 4 * UNITS)
    if not int8:
        return np.ascontiguousarray(w, dtype=np.float32), np.ones((tiles, 4 * UNITS), np.float32)
    scale = np.maximum(np.abs(w).max(axis=1), 1e-12) / 127.0
    return np.clip(np.round(w / scale[:, None, :]), -127, 127).astype(np.int8), scale.astype(np.float32)


def lstm_converter(weights: dict, int8: bool = False):
    """A ``custom_convert_map`` entry for ``lstm.input``: projection GEMM + recurrence
    kernel, ``W_hh`` in int8 if asked. ``weights``: the program's parameters by the
    name of the graph input that carries them (the importer binds them only at the end,
    and the recurrent weight is packed here, ahead of time)."""

    def convert_lstm(node, importer):
        from tvm import relax

        args = importer.retrieve_args(node)
        x, hx, params = args[0], args[1], args[2]
        has_biases, layers = args[3], args[4]
        bidirectional, batch_first = args[7], args[8]
        plain = layers == 1 and not bidirectional and batch_first and has_biases and len(params) == 4
        recurrent = weights.get(getattr(node.args[2][1], "name", None)) if plain else None
        if recurrent is None:
            return importer._lstm(node)  # TVM's own unrolled LSTM
        bb = importer.block_builder
        batch, steps, _ = (int(d) for d in importer.shape_of(x))
        w_ih, w_hh, b_ih, b_hh = params
        hidden = int(importer.shape_of(w_hh)[1])
        # every step's input projection at once: [B, S, E] @ [E, 4H] + both biases
        xw = bb.emit(relax.op.matmul(x, bb.emit(relax.op.permute_dims(w_ih, [1, 0]))))
        xw = bb.emit(relax.op.add(xw, bb.emit(relax.op.add(b_ih, b_hh))))
        h0, c0 = (bb.emit(relax.op.squeeze(state, [0])) for state in hx[:2])  # [1, B, H] -> [B, H]
        weight, scale = pack_recurrent_weight(recurrent.detach().float().numpy(), int8)
        kernel = bb.add_func(recurrence_kernel(batch, steps, hidden, str(weight.dtype)), "lstm_recurrence")
        out = relax.TensorType((batch, steps, hidden), "float32")
        return bb.emit(relax.call_tir(kernel, [xw, relax.const(weight), relax.const(scale), h0, c0], out))

    return convert_lstm


def import_program(program, cpu: bool = True, int8_lstm: bool = False):
    """A ``torch.export`` program as a Relax module: PyTorch's core-ATen decompositions,
    except that on a CPU target LSTMs stay whole for ``convert_lstm`` (decomposed, they
    unroll). The recurrence kernel is CPU code; other targets get TVM's unrolled LSTM.
    ``int8_lstm``: the recurrent weights in int8."""
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    if not cpu:
        return from_exported_program(program, keep_params_as_input=False)
    table = torch.export.default_decompositions()
    table.pop(torch.ops.aten.lstm.input, None)
    program = program.run_decompositions(table)
    tensors = {**program.state_dict, **program.constants}
    weights = {spec.arg.name: tensors[spec.target] for spec in program.graph_signature.input_specs if spec.target in tensors}
    converter = lstm_converter(weights, int8_lstm)
    return from_exported_program(program, keep_params_as_input=False, run_ep_decomposition=False, custom_convert_map={"lstm.input": converter})


def recurrence_weights(mod) -> list[str]:
    """The dtype of each recurrence kernel call's weight in ``mod``'s main, in order."""
    from tvm import relax

    found = []

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            callee, args = expr.args[0], expr.args[1]
            if callee.name_hint.startswith("lstm_recurrence"):
                found.append(str(args[1].ty.dtype))

    relax.analysis.post_order_visit(mod["main"], visit)
    return found
