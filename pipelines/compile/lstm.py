"""LSTMs for TVM: the recurrence as one hand-written kernel.

TVM's own importer unrolls ``aten.lstm`` into 10 graph operators per step, so a
BiLSTM at length 128 became ~2,600 small kernels: 260 ms at 1x128 against torch's
9.6 ms (measured here, AVX2 EPYC). Here the per-step work is a loop inside one TIR
function: for each step, the gates are ``h @ W_hh^T`` plus the step's input
projection ``x_t @ W_ih^T`` and the bias, accumulated in registers a tile at a time
(the four gates of 16 hidden units, the weights packed ``[H/16, K, 64]`` ahead of
time, each weight row serving a block of batch rows), then the tile's cell update
with a rational ``tanh`` that vectorises (``sigmoid(x) = (1 + tanh(x / 2)) / 2``)
instead of a libm call per element. Groups of batch rows run in parallel. int8 builds
run the recurrence in int8 arithmetic (``h`` as u8 codes, ``W_hh`` in int8, the
dot-product instructions of the int8 GEMM) after the input projection for every step
at once, a linear layer the int8 rewrite takes.

Only the LSTMs the models here use are lowered this way (one layer, one direction,
batch first, with biases); any other LSTM goes to TVM's own converter.
"""

from __future__ import annotations

import math

# The attribute of a recurrence kernel (float or int8) that records how it was made
# (``made_with``).
KERNEL_ATTR = "workbench.lstm"


def made_with(kind: str, **arguments) -> str:
    """``KERNEL_ATTR``'s value: the kernel's kind and the arguments it was built with,
    all but ``steps`` and ``head``, which ``fold_label_heads`` passes to build it again
    with a head (JSON: TVM attributes hand back ints and strings as its own objects)."""
    import json

    return json.dumps({"kind": kind, **arguments})

# Hidden units per tile: a tile's 4 x 16 gate sums (8 AVX2 / 4 AVX-512 registers) are
# accumulated in registers, then its units' cell and output updated, all in one thread.
UNITS = 16
# Batch rows split into up to this many groups, run in parallel. The float kernel takes
# at most one a core: at 64x40 on 2 cores its recurrences ran in 15.4-15.6 ms in 2
# groups against 16.3-17.2 in 4 (each group streams every weight each step); the int8
# kernel 4.5 ms in 2 against 3.8-3.9 in 4 (AVX-512 Xeon, quickstart BiLSTM).
GROUPS = 4
# W_hh bytes past which a single row group's step splits its tiles over the cores: one
# core's L2 (2 MB here) less room for the rest. A 384-wide direction's float weights
# (2.4 MB) streamed from L3 at every step: 52 us a step at 1x128 against ~10 for 256.
SPLIT_TILES_BYTES = 1536 * 1024

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


def row_tiling(batch: int, hidden: int, groups: int = GROUPS) -> tuple[int, int, int, int]:
    """(tiles of UNITS hidden units, row groups run in parallel, rows per group, rows
    per block: each weight row loaded serves a block of rows)."""
    if hidden % UNITS:
        raise ValueError(f"LSTM hidden size {hidden} is not a multiple of {UNITS}")
    groups = math.gcd(batch, groups)
    rows = batch // groups
    return hidden // UNITS, groups, rows, next(n for n in (4, 3, 2, 1) if rows % n == 0)


def cell_update(rows: int):
    """A TVMScript macro: a group's rows of one tile, given their complete gate sums
    ``gates`` [rows, 4U], update the cell state ``c`` and write h of the tile's units
    to ``dst[row, slot]`` (the output at step ``slot``, or a state buffer). torch's gate
    order: input, forget, cell, output."""
    from tvm.script import tirx as T

    @T.macro
    def update(gates, c, dst, g, slot, tile):
        for r in T.serial(rows):
            for u in T.vectorized(UNITS):
                c[g * rows + r, tile * UNITS + u] = fast_sigmoid(gates[r, UNITS + u]) * c[g * rows + r, tile * UNITS + u] + fast_sigmoid(gates[r, u]) * fast_tanh(gates[r, 2 * UNITS + u])
                dst[g * rows + r, slot, tile * UNITS + u] = fast_sigmoid(gates[r, 3 * UNITS + u]) * fast_tanh(c[g * rows + r, tile * UNITS + u])

    return update


def label_head(rows: int, block: int, hidden: int, width: int):
    """A TVMScript macro: the label scores of a group's rows at step ``t`` from their h
    (``state[row, slot]``, complete once every tile has run), ``out[row, t] = h @ wh``
    (``wh`` [H, width], the head's weight widened to a vector). Rows in blocks and k
    in two halves: independent FMA chains, not one 256 long a row."""
    from tvm.script import tirx as T

    @T.macro
    def head(state, wh, out, g, slot, t):
        for rb in T.serial(rows // block):
            with T.sblock("head"):
                T.reads(state[g * rows + rb * block : g * rows + rb * block + block, slot, 0:hidden], wh[0:hidden, 0:width])
                T.writes(out[g * rows + rb * block : g * rows + rb * block + block, t, 0:width])
                acc = T.alloc_buffer((block, width), "float32")
                acc2 = T.alloc_buffer((block, width), "float32")
                for r in T.unroll(block):
                    for n in T.vectorized(width):
                        acc[r, n] = T.float32(0)
                        acc2[r, n] = T.float32(0)
                for k in T.serial(hidden // 2):
                    for r in T.unroll(block):
                        for n in T.vectorized(width):
                            acc[r, n] = acc[r, n] + state[g * rows + rb * block + r, slot, 2 * k] * wh[2 * k, n]
                            acc2[r, n] = acc2[r, n] + state[g * rows + rb * block + r, slot, 2 * k + 1] * wh[2 * k + 1, n]
                for r in T.unroll(block):
                    for n in T.vectorized(width):
                        out[g * rows + rb * block + r, t, n] = acc[r, n] + acc2[r, n]

    return head


def projection_update(hidden: int, rows: int, steps):
    """A TVMScript macro: a group's rows of one tile plus the step's input projection
    (``xw`` [B * S, 4H] in torch's gate order, row ``b * S + t``), bias included."""
    from tvm.script import tirx as T

    @T.macro
    def update(gates, xw, g, t, tile):
        for r, gate in T.grid(rows, 4):
            for u in T.vectorized(UNITS):
                gates[r, gate * UNITS + u] = gates[r, gate * UNITS + u] + xw[(g * rows + r) * steps + t, gate * hidden + tile * UNITS + u]

    return update


def fuses_projection(batch: int, hidden: int, groups: int = GROUPS) -> bool:
    """Whether the float kernel computes the input projection inside the recurrence:
    where each weight row loaded serves a block of 4 batch rows. With fewer, ``W_ih``
    read again at every step costs more than one GEMM over all the steps (quickstart
    BiLSTM at 1x128: 4.1 ms a call fused against 3.2; at 64x48 fused 9 % faster)."""
    return row_tiling(batch, hidden, groups)[3] >= 4


def weight_chunk(k: int, row_bytes: int, budget: int = 32 * 1024) -> int:
    """The most rows of a ``k``-row weight slice (``row_bytes`` each) that divide ``k`` and
    fit ``budget`` bytes: what a tile's row blocks read from L1 in turn (AVX-512 cores
    have 48 KB of it)."""
    return next(n for n in range(min(k, max(1, budget // row_bytes)), 0, -1) if k % n == 0)


def recurrence_kernel(batch: int, steps, hidden: int, embedding: int, weight_dtype: str = "float32", vector_bits: int = 256,
                      groups: int = GROUPS, head: int = 0):
    """The TIR function ``(x [B * S, E], wx [H/U, E, 4U], bias [H/U, 4U], wp [H/U, H, 4U],
    scale [H/U, 4U], h0 [B, H], c0 [B, H], wh) -> out [B, S, H]``: the LSTM over ``S``
    steps in float32. With ``head`` (the width of ``wh`` [H, head]), ``out`` is
    ``[B, S, head]``, each step's h times ``wh``: the label scores of a tagger, whose
    states then never go through memory (``fold_label_heads``); else ``wh`` goes unread.
    Where ``fuses_projection``, each step's input projection is computed with
    its recurrent product, into the same gate sums (``W_ih`` packed as ``W_hh`` is, by
    ``pack_recurrent_weight``): no ``[B * S, 4H]`` projection goes through memory, and the
    x terms run at the recurrence's FMA rate (one LSTM at 64x48, E 128, H 256, AVX-512
    Xeon: 10.0 ms against 7.3 for the recurrence after a 3.5 ms projection GEMM).
    Otherwise ``x`` is that projection, bias included (``E`` = 4H), added to the gate
    sums, and ``wx`` / ``bias`` (one zero row, zeros) go unread. ``W_hh`` in float32
    (scales of 1) or int8 (weight-only, a scale per gate column, converted as read).
    ``steps``: a number, or a ``tirx.Var`` for a symbolic length (nothing is tiled over
    the steps)."""
    from tvm.script import tirx as T

    threads = groups
    tiles, groups, rows, block = row_tiling(batch, hidden, groups)
    lanes = 4 * UNITS
    # One row group (batch 1) and W_hh past one core's L2: the tiles of each step run in
    # parallel instead, each core streaming its share of the weights from its own L2.
    split_tiles = groups == 1 and threads > 1 and hidden * lanes * tiles * (1 if weight_dtype == "int8" else 4) > SPLIT_TILES_BYTES
    group_loop, tile_loop = (T.serial, T.parallel) if split_tiles else (T.parallel, T.serial)
    fused = fuses_projection(batch, hidden, groups)
    wx_rows = embedding if fused else 1
    # The accumulators of `block` rows x `sub` gate columns fit AVX2's 16 registers
    # with one to spare for the broadcast, or half of AVX-512's 32. Each row block of
    # the group reads the same `sub`-column slice of the tile's weights, still in cache.
    # Measured at 64x48, E=128, H=256, 2 threads, whole LSTM (scratch benchmark,
    # AVX-512 Xeon): 13.7 ms at 4 x 64 in two accumulator halves, 15.0 at 4 x 32 in
    # one, 21.4 at 4 x 64 in one (a heap array); 8 x 32 and 4 x 32 no faster than 4 x 64.
    sub = 64 if vector_bits >= 512 else {1: 64, 2: 32, 3: 32, 4: 16}[block]
    half = sub // 2
    update_cells, add_projection = cell_update(rows), projection_update(hidden, rows, steps)
    scores = label_head(rows, block, hidden, head) if head else None
    width, has_head = head or hidden, head > 0  # of the output; a Python bool for TVMScript
    # The weights a tile's row blocks share, a chunk of k at a time, so that they stay in
    # L1 from one row block to the next instead of coming again from L2 (one LSTM at
    # 64x40, AVX-512 Xeon: 9.3 ms in chunks of 128 against 10.3 for all 256 at once).
    h_chunk = weight_chunk(hidden, sub * (1 if weight_dtype == "int8" else 4))
    x_chunk = weight_chunk(wx_rows, sub * 4)

    @T.macro
    def accumulate(gates, h, x, wx, wp, from_h, g, rb, part, first, size, t, tile):
        """gates[block rb's rows, part's columns] += the terms of k in [first, first + size):
        h's (``from_h``, a Python constant) or x's."""
        with T.sblock("dot"):
            T.reads(gates[rb * block : rb * block + block, part * sub : part * sub + sub], wp[tile, first : first + size, part * sub : part * sub + sub], wx[tile, 0:wx_rows, part * sub : part * sub + sub], h[g * rows + rb * block : g * rows + rb * block + block, t % 2, 0:hidden], x[0 : batch * steps, 0:embedding])
            T.writes(gates[rb * block : rb * block + block, part * sub : part * sub + sub])
            # global scope, two halves: stack arrays kept in registers ("local", or 1 KB, would be a heap workspace)
            acc = T.alloc_buffer((block, half), "float32")
            acc2 = T.alloc_buffer((block, half), "float32")
            for r in T.unroll(block):
                for lane in T.vectorized(half):
                    acc[r, lane] = gates[rb * block + r, part * sub + lane]
                    acc2[r, lane] = gates[rb * block + r, part * sub + half + lane]
            for k in T.serial(size):
                for r in T.unroll(block):
                    for lane in T.vectorized(half):
                        if from_h:
                            acc[r, lane] = acc[r, lane] + h[g * rows + rb * block + r, t % 2, first + k] * T.Cast("float32", wp[tile, first + k, part * sub + lane])
                            acc2[r, lane] = acc2[r, lane] + h[g * rows + rb * block + r, t % 2, first + k] * T.Cast("float32", wp[tile, first + k, part * sub + half + lane])
                        else:
                            acc[r, lane] = acc[r, lane] + x[(g * rows + rb * block + r) * steps + t, first + k] * wx[tile, first + k, part * sub + lane]
                            acc2[r, lane] = acc2[r, lane] + x[(g * rows + rb * block + r) * steps + t, first + k] * wx[tile, first + k, part * sub + half + lane]
            for r in T.unroll(block):
                for lane in T.vectorized(half):
                    gates[rb * block + r, part * sub + lane] = acc[r, lane]
                    gates[rb * block + r, part * sub + half + lane] = acc2[r, lane]

    @T.prim_func(private=True, s_tir=True)
    def lstm_recurrence(
        x: T.Buffer((batch * steps, embedding), "float32"),
        wx: T.Buffer((tiles, wx_rows, lanes), "float32"),
        bias: T.Buffer((tiles, lanes), "float32"),
        wp: T.Buffer((tiles, hidden, lanes), weight_dtype),
        scale: T.Buffer((tiles, lanes), "float32"),
        h0: T.Buffer((batch, hidden), "float32"),
        c0: T.Buffer((batch, hidden), "float32"),
        wh: T.Buffer((hidden, head or 1), "float32"),
        out: T.Buffer((batch, steps, width), "float32"),
    ):
        T.func_attr({"tir.noalias": True})
        with T.sblock("root"):
            with T.sblock("recurrence"):  # opaque: passes that look for a block find one
                T.reads(x[0 : batch * steps, 0:embedding], wx[0:tiles, 0:wx_rows, 0:lanes], bias[0:tiles, 0:lanes], wp[0:tiles, 0:hidden, 0:lanes], scale[0:tiles, 0:lanes], h0[0:batch, 0:hidden], c0[0:batch, 0:hidden], wh[0:hidden, 0 : head or 1])
                T.writes(out[0:batch, 0:steps, 0:width])
                h = T.alloc_buffer((batch, 2, hidden), "float32")  # step t reads h[:, t % 2], writes the other
                c = T.alloc_buffer((batch, hidden), "float32")
                for b, j in T.grid(batch, hidden):
                    h[b, 0, j] = h0[b, j]
                    c[b, j] = c0[b, j]
                # Row groups in parallel, each through every step: no fork per step (a
                # fork per step cost more than it saved: 32.6 us a step against 19.4 in
                # one thread at 1x128, 256 wide), unless ``split_tiles``.
                for g in group_loop(groups):
                    with T.sblock("group"):
                        T.reads(x[g * rows * steps : (g * rows + rows) * steps, 0:embedding], wx[0:tiles, 0:wx_rows, 0:lanes], bias[0:tiles, 0:lanes], wp[0:tiles, 0:hidden, 0:lanes], scale[0:tiles, 0:lanes], h[g * rows : g * rows + rows, 0:2, 0:hidden], c[g * rows : g * rows + rows, 0:hidden], wh[0:hidden, 0 : head or 1])
                        T.writes(c[g * rows : g * rows + rows, 0:hidden], h[g * rows : g * rows + rows, 0:2, 0:hidden], out[g * rows : g * rows + rows, 0:steps, 0:width])
                        for t in T.serial(steps):
                            for tile in tile_loop(tiles):
                                with T.sblock("tile"):  # its own gate sums: tiles may run in parallel
                                    T.reads(x[g * rows * steps : (g * rows + rows) * steps, 0:embedding], wx[tile, 0:wx_rows, 0:lanes], bias[tile, 0:lanes], wp[tile, 0:hidden, 0:lanes], scale[tile, 0:lanes], h[g * rows : g * rows + rows, 0:2, 0:hidden], c[g * rows : g * rows + rows, 0:hidden])
                                    T.writes(c[g * rows : g * rows + rows, 0:hidden], h[g * rows : g * rows + rows, 0:2, 0:hidden], out[g * rows : g * rows + rows, 0:steps, 0:width])
                                    gates = T.alloc_buffer((rows, lanes), "float32")
                                    for r in T.serial(rows):
                                        for lane in T.vectorized(lanes):
                                            gates[r, lane] = T.float32(0)
                                    # h's terms, a chunk of k at a time over every row block
                                    for kc, part, rb in T.grid(hidden // h_chunk, lanes // sub, rows // block):
                                        accumulate(gates, h, x, wx, wp, True, g, rb, part, kc * h_chunk, h_chunk, t, tile)
                                    # int8 weights' column scales on h's terms, then the bias (and x's terms)
                                    for r in T.serial(rows):
                                        for lane in T.vectorized(lanes):
                                            gates[r, lane] = gates[r, lane] * scale[tile, lane] + bias[tile, lane]
                                    if fused:  # a Python constant: one variant or the other is built
                                        for kc, part, rb in T.grid(wx_rows // x_chunk, lanes // sub, rows // block):
                                            accumulate(gates, h, x, wx, wp, False, g, rb, part, kc * x_chunk, x_chunk, t, tile)
                                    else:
                                        add_projection(gates, x, g, t, tile)
                                    if has_head:  # h straight into the state; the scores once every tile has run
                                        update_cells(gates, c, h, g, 1 - t % 2, tile)
                                    else:
                                        update_cells(gates, c, out, g, t, tile)
                                        for r in T.serial(rows):
                                            for u in T.vectorized(UNITS):
                                                h[g * rows + r, 1 - t % 2, tile * UNITS + u] = out[g * rows + r, t, tile * UNITS + u]
                            if has_head:
                                scores(h, wh, out, g, 1 - t % 2, t)

    # scheduled by hand (default schedules skip it) and opaque (fusion leaves it whole);
    # how it was made, for ``fold_label_heads`` to make its variant with a head
    made = made_with("float", batch=batch, hidden=hidden, embedding=embedding, weight_dtype=weight_dtype, vector_bits=vector_bits, groups=threads)
    return lstm_recurrence.with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8).with_attr(KERNEL_ATTR, made)


def quantised_recurrence_kernel(batch: int, steps: int, hidden: int, lanes: int, vnni: bool, head: int = 0, embedding: int = 0):
    """The recurrence in int8 arithmetic: ``(xw [B * S, 4H], wq [H/U, H/4, 4U, 4] int8,
    scale [H/U, 4U], h0, c0, wxq, xscale, bias, wh) -> out [B, S, H]``, or with ``head``
    the label scores ``[B, S, head]`` as in ``recurrence_kernel``. ``h`` is in [-1, 1]
    (``o * tanh(c)``), so it needs no measured range: each step writes it as u8 codes
    ``round(127 h) + 128`` and the next multiplies them by the weights 4 at a time,
    ``vpdpbusd`` (``vnni``) or ``vpmaddubsw`` + ``vpmaddwd`` into ``lanes`` int32 sums
    (``int8.dot4``). A gate column's sum times ``scale`` (its weight scale / 127) is
    ``h . w`` plus ``128 * colsum(w) * scale``, which ``xw``'s bias has already taken
    away (``pack_recurrent_quads``). With ``embedding`` (E), the input projection is
    computed here too, in the same arithmetic: ``xw`` is then the input as u8 codes
    [B * S, E] (its calibrated scale and zero point), ``wxq`` ``W_ih`` packed as
    ``W_hh`` is, ``xscale`` each column's weight scale times x's, and ``bias`` both
    biases and both offsets' corrections [H/U, 4U]; without, those three go unread.
    The cell state and the outputs stay float32."""
    from tvm.script import tirx as T

    from pipelines.compile.int8 import broadcast4, dot4

    tiles, groups, rows, block = row_tiling(batch, hidden)
    width = 4 * UNITS
    update_cells, add_projection = cell_update(rows), projection_update(hidden, rows, steps)
    scores = label_head(rows, block, hidden, head) if head else None
    out_width, has_head, fused = head or hidden, head > 0, embedding > 0
    x_width, x_dtype, x_quads = (embedding, "uint8", embedding // 4) if fused else (4 * hidden, "float32", 1)
    # accumulators in at most half the vector registers (32 zmm, 16 ymm), the rest for
    # the weights, the broadcast h bytes and vpmaddubsw's int16 pairs
    registers = 32 if lanes == 16 else 16
    sub = next(n for n in (64, 32, 16) if block * n // lanes <= registers // 2 and n >= 2 * lanes)
    half = sub // 2
    vectors = half // lanes
    i32, i8 = f"int32x{lanes}", f"int8x{4 * lanes}"

    @T.macro
    def accumulate(gates, codes, weights, col_scale, bias, from_h, quads, g, rb, part, t, tile):
        """gates[block rb's rows, part's columns]: h's terms (``from_h``, a Python constant:
        the sums times ``col_scale``), or plus x's terms and the bias."""
        with T.sblock("dot"):
            T.reads(weights[tile, 0:quads, part * sub : part * sub + sub, 0:4], col_scale[tile, part * sub : part * sub + sub], bias[tile, part * sub : part * sub + sub], codes[0 : batch * steps, 0:x_width], gates[rb * block : rb * block + block, part * sub : part * sub + sub])
            T.writes(gates[rb * block : rb * block + block, part * sub : part * sub + sub])
            # two halves: one array of 1 KB or more would be a heap workspace
            acc = T.alloc_buffer((block, half), "int32")
            acc2 = T.alloc_buffer((block, half), "int32")
            for r in T.unroll(block):
                for v in T.unroll(vectors):
                    acc[r, T.ramp(v * lanes, 1, lanes)] = T.broadcast(T.int32(0), lanes)
                    acc2[r, T.ramp(v * lanes, 1, lanes)] = T.broadcast(T.int32(0), lanes)
            for k4 in T.serial(quads):
                for r in T.unroll(block):
                    for v in T.unroll(vectors):
                        if from_h:
                            acc[r, T.ramp(v * lanes, 1, lanes)] = dot4(acc.vload([r, v * lanes], dtype=i32), broadcast4(codes.vload([t % 2, g * rows + rb * block + r, k4 * 4], dtype="uint8x4"), lanes), weights.vload([tile, k4, part * sub + v * lanes, 0], dtype=i8), lanes, vnni)
                            acc2[r, T.ramp(v * lanes, 1, lanes)] = dot4(acc2.vload([r, v * lanes], dtype=i32), broadcast4(codes.vload([t % 2, g * rows + rb * block + r, k4 * 4], dtype="uint8x4"), lanes), weights.vload([tile, k4, part * sub + half + v * lanes, 0], dtype=i8), lanes, vnni)
                        else:
                            acc[r, T.ramp(v * lanes, 1, lanes)] = dot4(acc.vload([r, v * lanes], dtype=i32), broadcast4(codes.vload([(g * rows + rb * block + r) * steps + t, k4 * 4], dtype="uint8x4"), lanes), weights.vload([tile, k4, part * sub + v * lanes, 0], dtype=i8), lanes, vnni)
                            acc2[r, T.ramp(v * lanes, 1, lanes)] = dot4(acc2.vload([r, v * lanes], dtype=i32), broadcast4(codes.vload([(g * rows + rb * block + r) * steps + t, k4 * 4], dtype="uint8x4"), lanes), weights.vload([tile, k4, part * sub + half + v * lanes, 0], dtype=i8), lanes, vnni)
            for r in T.unroll(block):
                for lane in T.vectorized(half):
                    if from_h:
                        gates[rb * block + r, part * sub + lane] = T.Cast("float32", acc[r, lane]) * col_scale[tile, part * sub + lane]
                        gates[rb * block + r, part * sub + half + lane] = T.Cast("float32", acc2[r, lane]) * col_scale[tile, part * sub + half + lane]
                    else:
                        gates[rb * block + r, part * sub + lane] = gates[rb * block + r, part * sub + lane] + T.Cast("float32", acc[r, lane]) * col_scale[tile, part * sub + lane] + bias[tile, part * sub + lane]
                        gates[rb * block + r, part * sub + half + lane] = gates[rb * block + r, part * sub + half + lane] + T.Cast("float32", acc2[r, lane]) * col_scale[tile, part * sub + half + lane] + bias[tile, part * sub + half + lane]

    @T.prim_func(private=True, s_tir=True)
    def lstm_recurrence(
        xw: T.Buffer((batch * steps, x_width), x_dtype),
        wq: T.Buffer((tiles, hidden // 4, width, 4), "int8"),
        scale: T.Buffer((tiles, width), "float32"),
        h0: T.Buffer((batch, hidden), "float32"),
        c0: T.Buffer((batch, hidden), "float32"),
        wxq: T.Buffer((tiles, x_quads, width, 4), "int8"),
        xscale: T.Buffer((tiles, width), "float32"),
        bias: T.Buffer((tiles, width), "float32"),
        wh: T.Buffer((hidden, head or 1), "float32"),
        out: T.Buffer((batch, steps, out_width), "float32"),
    ):
        T.func_attr({"tir.noalias": True})
        with T.sblock("root"):
            with T.sblock("recurrence"):
                T.reads(xw[0 : batch * steps, 0:x_width], wq[0:tiles, 0 : hidden // 4, 0:width, 0:4], scale[0:tiles, 0:width], h0[0:batch, 0:hidden], c0[0:batch, 0:hidden], wxq[0:tiles, 0:x_quads, 0:width, 0:4], xscale[0:tiles, 0:width], bias[0:tiles, 0:width], wh[0:hidden, 0 : head or 1])
                T.writes(out[0:batch, 0:steps, 0:out_width])
                hq = T.alloc_buffer((2, batch, hidden), "uint8")  # step t reads hq[t % 2], writes the other
                hf = T.alloc_buffer((batch, 1, hidden), "float32")  # with a head: this step's h, as floats
                c = T.alloc_buffer((batch, hidden), "float32")
                for b, j in T.grid(batch, hidden):
                    hq[0, b, j] = T.Cast("uint8", T.floor(T.max(T.min(h0[b, j], T.float32(1)), T.float32(-1)) * T.float32(127) + T.float32(128.5)))
                    c[b, j] = c0[b, j]
                for g in T.parallel(groups):
                    with T.sblock("group"):
                        T.reads(xw[g * rows * steps : (g * rows + rows) * steps, 0:x_width], wq[0:tiles, 0 : hidden // 4, 0:width, 0:4], scale[0:tiles, 0:width], wxq[0:tiles, 0:x_quads, 0:width, 0:4], xscale[0:tiles, 0:width], bias[0:tiles, 0:width], hq[0:2, g * rows : g * rows + rows, 0:hidden], c[g * rows : g * rows + rows, 0:hidden], wh[0:hidden, 0 : head or 1])
                        T.writes(c[g * rows : g * rows + rows, 0:hidden], hq[0:2, g * rows : g * rows + rows, 0:hidden], hf[g * rows : g * rows + rows, 0, 0:hidden], out[g * rows : g * rows + rows, 0:steps, 0:out_width])
                        gates = T.alloc_buffer((rows, width), "float32")
                        for t in T.serial(steps):
                            for tile in T.serial(tiles):
                                for part, rb in T.grid(width // sub, rows // block):
                                    accumulate(gates, hq, wq, scale, bias, True, hidden // 4, g, rb, part, t, tile)
                                if fused:  # x's terms in int8 too (a Python constant: one variant or the other is built)
                                    for part, rb in T.grid(width // sub, rows // block):
                                        accumulate(gates, xw, wxq, xscale, bias, False, x_quads, g, rb, part, t, tile)
                                else:
                                    add_projection(gates, xw, g, t, tile)
                                if has_head:  # h as floats for the scores, once every tile has run
                                    update_cells(gates, c, hf, g, 0, tile)
                                    for r in T.serial(rows):
                                        for u in T.vectorized(UNITS):
                                            hq[1 - t % 2, g * rows + r, tile * UNITS + u] = T.Cast("uint8", T.floor(hf[g * rows + r, 0, tile * UNITS + u] * T.float32(127) + T.float32(128.5)))
                                else:
                                    update_cells(gates, c, out, g, t, tile)
                                    for r in T.serial(rows):
                                        for u in T.vectorized(UNITS):
                                            hq[1 - t % 2, g * rows + r, tile * UNITS + u] = T.Cast("uint8", T.floor(out[g * rows + r, t, tile * UNITS + u] * T.float32(127) + T.float32(128.5)))
                            if has_head:
                                scores(hf, wh, out, g, 0, t)

    made = made_with("int8", batch=batch, hidden=hidden, lanes=lanes, vnni=vnni, embedding=embedding)
    return lstm_recurrence.with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8).with_attr(KERNEL_ATTR, made)


def pack_recurrent_weight(w_hh, int8: bool = False):
    """``W_hh`` [4H, H] or ``W_ih`` [4H, E] (gates i, f, g, o stacked) -> (weight [H/U,
    K, 4U], scale [H/U, 4U]): tile ``n`` holds the four gates of hidden units nU ..
    nU+U-1, each row k contiguous. int8: symmetric, a scale per gate column
    (weight-only: the recurrence reads 1 byte a weight instead of 4, converting as it
    goes)."""
    import numpy as np

    tiles, k = w_hh.shape[0] // 4 // UNITS, w_hh.shape[1]
    w = w_hh.reshape(4, tiles, UNITS, k).transpose(1, 3, 0, 2).reshape(tiles, k, 4 * UNITS)
    if not int8:
        return np.ascontiguousarray(w, dtype=np.float32), np.ones((tiles, 4 * UNITS), np.float32)
    scale = np.maximum(np.abs(w).max(axis=1), 1e-12) / 127.0
    return np.clip(np.round(w / scale[:, None, :]), -127, 127).astype(np.int8), scale.astype(np.float32)


def pack_recurrent_quads(w_hh, qmax: int = 127):
    """``W_hh`` [4H, H] -> (weight [H/U, H/4, 4U, 4] int8, scale [H/U, 4U], bias
    correction [4H]) for ``quantised_recurrence_kernel``: tile ``n``'s gate columns as
    ``pack_recurrent_weight`` orders them, each holding 4 consecutive k (what one int32
    lane of ``vpdpbusd`` reads), symmetric in [-qmax, qmax] with a scale per column (63
    for ``vpmaddubsw``, whose int16 pair sums would saturate at 127). The scale is
    divided by 127, h's code scale; the correction, ``-128 * colsum * scale`` in torch's
    gate order, goes into the input projection's bias (h's codes are offset by 128)."""
    import numpy as np

    quads, column_scale, colsum = quantise_quads(w_hh, qmax)
    scale = (column_scale / 127.0).astype(np.float32)
    return quads, scale, untile(-128.0 * colsum * scale)


def quantise_quads(w, qmax: int = 127):
    """``W`` [4H, K] (gates i, f, g, o stacked; K a multiple of 4) -> (weight [H/U, K/4,
    4U, 4] int8, column scale [H/U, 4U], column sums of the int8 weights [H/U, 4U])."""
    import numpy as np

    k = w.shape[1]
    tiles = w.shape[0] // 4 // UNITS
    w = w.reshape(4, tiles, UNITS, k).transpose(1, 3, 0, 2).reshape(tiles, k, 4 * UNITS)
    column_scale = np.maximum(np.abs(w).max(axis=1), 1e-12) / qmax  # [tiles, 4U]
    q = np.clip(np.round(w / column_scale[:, None, :]), -qmax, qmax).astype(np.int8)
    quads = np.ascontiguousarray(q.reshape(tiles, k // 4, 4, 4 * UNITS).transpose(0, 1, 3, 2))
    return quads, column_scale, q.astype(np.int32).sum(axis=1)


def tiled(v):
    """A [4H] vector in torch's gate order -> [H/U, 4U], the kernels' tile order."""
    tiles = v.shape[0] // 4 // UNITS
    return v.reshape(4, tiles, UNITS).transpose(1, 0, 2).reshape(tiles, 4 * UNITS)


def untile(v):
    """``tiled``'s inverse: lane gate * U + u of tile n is row gate * H + n * U + u."""
    import numpy as np

    tiles = v.shape[0]
    return v.reshape(tiles, 4, UNITS).transpose(1, 0, 2).reshape(-1).astype(np.float32)


def lstm_converter(weights: dict, int8=None, vector_bits: int = 256, cores: int = GROUPS, int8_inputs=None, fused_inputs=None):
    """``custom_convert_map`` entries for ``aten.lstm.input`` and ``workbench::lstm``:
    one recurrence kernel (float: the input projection inside it where a weight row
    serves 4 batch rows, else after a projection GEMM; int8: after an int8 projection
    GEMM). ``weights``: the program's parameters by the name of the graph input that
    carries them (the importer binds them only at the end, and the recurrent weight is
    packed here, ahead of time). ``int8``: an ``int8.Int8Kernel``, for the recurrence
    in int8 arithmetic with its instruction (``quantised_recurrence_kernel``), or with
    int8 weights converted to float32 as they are read where it has none.
    ``vector_bits``: the target's vector width, which sets the float kernel's tiles;
    ``cores``: its cores, at most one row group each in the float kernel.
    ``int8_inputs``: calibrated LSTM inputs, ``weight_key(W_ih)`` -> (layer name, lo,
    hi): an int8 recurrence computes such an input's projection itself, in int8 (the
    input as u8 codes), and appends the layer's parameters to ``fused_inputs``."""

    def lower(importer, x, w_ih, names, hx):
        """The recurrence kernel for an LSTM over ``x`` (``w_ih``: its input weight as a
        graph value) whose (w_ih, w_hh, b_ih, b_hh) are the graph inputs ``names``: in
        float arithmetic with the input projection inside where it pays
        (``fuses_projection``), else after a projection GEMM, as in int8 arithmetic;
        ``hx``: (h0, c0) [1, B, H], or None for a zero state. The length may be symbolic
        (``opaque_lstm``)."""
        import numpy as np
        from tvm import relax, tirx

        from pipelines.compile.int8 import static_dim, weight_key
        from pipelines.compile.quantize import activation_params

        bb = importer.block_builder
        shape = importer.shape_of(x)
        batch, embedding = int(shape[0]), int(shape[2])
        steps = static_dim(shape[1])
        # the kernel's own length variable, bound by its buffers' shapes at each call
        kernel_steps = steps if isinstance(steps, int) else tirx.Var("steps", "int64")
        w_hh = weights[names[1]].detach().float().numpy()
        hidden = w_hh.shape[1]
        no_head = relax.const(np.zeros((hidden, 1), np.float32))  # wh, unread (fold_label_heads gives one)
        bias = sum(weights[n].detach().float().numpy() for n in names[2:])
        if hx is None:
            h0 = c0 = relax.const(np.zeros((batch, hidden), np.float32))
        else:
            h0, c0 = (bb.emit(relax.op.squeeze(state, [0])) for state in hx)  # [1, B, H] -> [B, H]
        rows = bb.emit(relax.op.reshape(x, (batch * steps, embedding)))  # a view
        out = relax.TensorType((batch, steps, hidden), "float32")
        tiles = hidden // UNITS

        def projection(extra_bias=0.0):
            """Every step's input projection at once, [B * S, 4H]: a linear layer over
            [B * S, E] with a constant bias, which in an int8 build the int8 rewrite turns
            into its GEMM kernel where calibration measured the LSTM's input
            (``calibrate.linear_layers``)."""
            w_t = bb.emit(relax.op.permute_dims(w_ih, [1, 0]))
            return bb.emit(relax.op.add(bb.emit(relax.op.matmul(rows, w_t)), relax.const((bias + extra_bias).astype(np.float32))))

        if int8 is not None and int8.dot_product:  # int8 arithmetic
            weight, scale, correction = pack_recurrent_quads(w_hh, int8.weight_qmax)
            recurrent = [relax.const(weight), relax.const(scale), h0, c0]
            w_x = weights[names[0]].detach().float().numpy()
            layer = (int8_inputs or {}).get(weight_key(w_x))
            if layer is not None and embedding % 4 == 0:
                # The projection in the kernel, x as u8 codes: no [B * S, 4H] floats
                # through memory and no GEMM of its own (37 % of an int8 BiLSTM call).
                name, lo, hi = layer
                x_scale, zero = activation_params(lo, hi)
                wxq, column_scale, column_sum = quantise_quads(w_x, int8.weight_qmax)
                x_bias = tiled(bias + correction) - zero * column_sum * column_scale * x_scale
                codes = bb.emit(relax.op.astype(relax.op.clip(relax.op.add(relax.op.round(relax.op.multiply(rows, relax.const(np.float32(1 / x_scale)))),
                                                                           relax.const(np.float32(zero))), relax.prim_value(0.0), relax.prim_value(255.0)), "uint8"))
                kernel = bb.add_func(quantised_recurrence_kernel(batch, kernel_steps, hidden, int8.lanes, int8.vnni, embedding=embedding), "lstm_recurrence")
                if fused_inputs is not None:
                    fused_inputs.append({"name": name, "K": embedding, "N": 4 * hidden, "scale": x_scale, "zero": zero})
                x_parts = [relax.const(wxq), relax.const((column_scale * x_scale).astype(np.float32)), relax.const(x_bias.astype(np.float32))]
                return bb.emit(relax.call_tir(kernel, [codes, *recurrent, *x_parts, no_head], out))
            # after the projection (a linear layer the int8 rewrite takes); x's parts go unread
            kernel = bb.add_func(quantised_recurrence_kernel(batch, kernel_steps, hidden, int8.lanes, int8.vnni), "lstm_recurrence")
            unread = [relax.const(np.zeros((tiles, 1, 4 * UNITS, 4), np.int8)), relax.const(np.zeros((tiles, 4 * UNITS), np.float32)),
                      relax.const(np.zeros((tiles, 4 * UNITS), np.float32))]
            return bb.emit(relax.call_tir(kernel, [projection(correction), *recurrent, *unread, no_head], out))
        # Float arithmetic (W_hh int8, weight-only, in an int8 build for a CPU without a
        # dot-product instruction), the projection inside the kernel where it pays.
        weight, scale = pack_recurrent_weight(w_hh, int8 is not None)
        groups = min(GROUPS, cores)
        if fuses_projection(batch, hidden, groups):
            inputs = [rows, relax.const(pack_recurrent_weight(weights[names[0]].detach().float().numpy())[0]),
                      relax.const(tiled(bias).astype(np.float32))]
        else:  # the kernel adds the projection; its x terms and bias go unread
            embedding = 4 * hidden
            inputs = [projection(), relax.const(np.zeros((tiles, 1, 4 * UNITS), np.float32)), relax.const(np.zeros((tiles, 4 * UNITS), np.float32))]
        kernel = bb.add_func(recurrence_kernel(batch, kernel_steps, hidden, embedding, str(weight.dtype), vector_bits, groups), "lstm_recurrence")
        return bb.emit(relax.call_tir(kernel, [*inputs, relax.const(weight), relax.const(scale), h0, c0, no_head], out))

    def convert_lstm(node, importer):
        """``aten.lstm.input``: lowered here when plain, else TVM's own unrolled LSTM."""
        args = importer.retrieve_args(node)
        x, hx, params = args[0], args[1], args[2]
        has_biases, layers = args[3], args[4]
        bidirectional, batch_first = args[7], args[8]
        plain = layers == 1 and not bidirectional and batch_first and has_biases and len(params) == 4
        names = [getattr(n, "name", None) for n in node.args[2]] if plain else []
        if not plain or any(name not in weights for name in names):
            return importer._lstm(node)
        return lower(importer, x, params[0], names, hx[:2])

    def convert_opaque(node, importer):
        """``workbench::lstm`` (``modeling.opaque_lstm``): always plain, zero state."""
        args = importer.retrieve_args(node)
        names = [getattr(n, "name", None) for n in node.args[1:5]]
        missing = [name for name in names if name not in weights]
        if missing:
            raise ValueError(f"workbench::lstm: weights {missing} are not parameters of the program")
        return lower(importer, args[0], args[1], names, None)

    return {"lstm.input": convert_lstm, "lstm.default": convert_opaque}


def import_program(program, cpu: bool = True, int8_lstm=None, vector_bits: int = 256, cores: int = GROUPS, int8_inputs=None, fused_inputs=None):
    """A ``torch.export`` program as a Relax module: PyTorch's core-ATen decompositions,
    except that on a CPU target LSTMs stay whole for ``convert_lstm`` (decomposed, they
    unroll), as do a symbolic-length program's ``workbench::lstm`` calls. The recurrence
    kernel is CPU code; other targets get TVM's unrolled LSTM.
    ``int8_lstm``: the ``int8.Int8Kernel`` for int8 recurrences; ``vector_bits``: the
    target's vector width; ``cores``: its cores; ``int8_inputs``, ``fused_inputs``: as
    ``lstm_converter`` takes them."""
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    if not cpu:
        if any(getattr(n.target, "__name__", "") == "lstm.default" for n in program.graph.nodes):
            raise ValueError("a symbolic-length LSTM program (workbench::lstm) compiles for CPU targets only")
        return from_exported_program(program, keep_params_as_input=False)
    table = torch.export.default_decompositions()
    table.pop(torch.ops.aten.lstm.input, None)
    program = program.run_decompositions(table)
    tensors = {**program.state_dict, **program.constants}
    weights = {spec.arg.name: tensors[spec.target] for spec in program.graph_signature.input_specs if spec.target in tensors}
    converters = lstm_converter(weights, int8_lstm, vector_bits, cores, int8_inputs, fused_inputs)
    return from_exported_program(program, keep_params_as_input=False, run_ep_decomposition=False, custom_convert_map=converters)


def recurrence_weights(mod) -> list[str]:
    """The dtype of each recurrence kernel call's weight in ``mod``'s main, in order."""
    from tvm import relax

    found = []

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            callee, args = expr.args[0], expr.args[1]
            if callee.name_hint.startswith("lstm_recurrence"):
                # the float kernel: (x, wx, bias, w_hh, ...) [8 inputs]; the int8 one: (xw, w_hh, ...)
                found.append(str(args[3 if len(args.fields) == 8 else 1].ty.dtype))

    relax.analysis.post_order_visit(mod["main"], visit)
    return found


def fold_label_heads(mod, most: int = 64):
    """``matmul(reshape(lstm(...), [B * S, H]), W)`` (or over the states as they are) with
    a constant ``W`` [H, N] of at most ``most`` columns (a tagger's label head, widened
    to a vector) -> the same recurrence kernel computing ``h @ W`` at each step itself
    (``recurrence_kernel``'s ``head``), where nothing else reads the states: they never
    go through memory, and the head's GEMM over every position is gone (BiLSTM at
    64x40: 0.6 ms of 19)."""
    import json

    import numpy as np
    import tvm
    from tvm import relax, tirx
    from tvm.relax.expr_functor import PyExprMutator, mutator
    from tvm.sym import Analyzer

    from pipelines.compile.int8 import constant_value

    matmul, reshape, broadcast_to = (tvm.ir.Op.get(f"relax.{name}") for name in ("matmul", "reshape", "broadcast_to"))
    call_tir = tvm.ir.Op.get("relax.call_tir")
    uses: dict = {}
    analyzer = Analyzer()

    def same_shape(a, b) -> bool:
        return len(a) == len(b) and all(analyzer.can_prove_equal(x, y) for x, y in zip(a, b))

    def count(expr) -> None:
        if isinstance(expr, relax.Var):
            uses[expr] = uses.get(expr, 0) + 1

    @mutator
    class Fold(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not call.op.same_as(matmul) or not isinstance(call.args[0], relax.Var) or uses.get(call.args[0]) != 1:
                return call
            lstm = self.lookup_binding(call.args[0])
            view = lstm  # the states as [B * S, H] (a reshape), or a broadcast to their own shape (a batched matmul)
            if isinstance(view, relax.Call) and (view.op.same_as(reshape) or view.op.same_as(broadcast_to)) and isinstance(view.args[0], relax.Var):
                if uses.get(view.args[0]) != 1:
                    return call
                lstm = self.lookup_binding(view.args[0])
                if view.op.same_as(broadcast_to) and not same_shape(view.ty.shape, lstm.ty.shape):
                    return call
            if not (isinstance(lstm, relax.Call) and lstm.op.same_as(call_tir)):
                return call
            kernel = self.builder_.get()[lstm.args[0]]
            made = kernel.attrs.get(KERNEL_ATTR) if kernel.attrs is not None else None
            w = constant_value(call.args[1], self.lookup_binding)
            if made is None or w is None or w.ndim != 2 or w.dtype != np.float32 or w.shape[1] > most:
                return call
            arguments = json.loads(str(made))
            build = {"float": recurrence_kernel, "int8": quantised_recurrence_kernel}[arguments.pop("kind")]
            if w.shape[0] != arguments["hidden"]:
                return call
            batch, steps, _ = lstm.ty.shape
            kernel_steps = steps.value if isinstance(steps, tirx.IntImm) else tirx.Var("steps", "int64")
            head = build(steps=kernel_steps, head=w.shape[1], **arguments)
            gv = self.builder_.add_func(head, "lstm_recurrence_head")
            inputs = list(lstm.args[1].fields[:-1]) + [relax.const(np.ascontiguousarray(w))]
            scores = self.builder_.emit(relax.call_tir(gv, inputs, relax.TensorType((batch, steps, w.shape[1]), "float32")))
            return relax.op.reshape(scores, call.ty.shape)

    def visit(expr) -> None:  # every place a variable is read: call arguments, tuples, results
        for operand in expr.args if isinstance(expr, relax.Call) else expr.fields if isinstance(expr, relax.Tuple) else ():
            count(operand)
        if isinstance(expr, relax.SeqExpr):
            count(expr.body)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    fold = Fold(mod)
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            fold.builder_.update_func(gv, fold.visit_expr(func))
    return relax.transform.DeadCodeElimination()(fold.builder_.get())
