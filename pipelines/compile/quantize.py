"""Int8 quantisation math and calibration observers (numpy only).

Conventions, chosen for the x86 u8 x s8 dot products (VNNI ``vpdpbusd``; AVX2 and
AVX-512BW ``vpmaddubsw`` + ``vpmaddwd``):

- Weights: symmetric int8 in [-127, 127] (no zero point), one scale per output
  channel (``quantize_per_channel``) or one for the whole tensor. -128 is left out
  so the range is symmetric and negation is exact. The ``vpmaddubsw`` kernels take
  [-63, 63] (``QMAX_W_PMADD``): their int16 pair sums would saturate at 8 bits.
- Activations: asymmetric uint8 in [0, 255] with a per-tensor scale and zero point
  from the calibrated range. VNNI needs the activation operand unsigned anyway, and
  an asymmetric range spends all 256 levels on skewed inputs (e.g. after GELU,
  which is almost never below -0.17). The zero point costs nothing at run time:
  ``sum_k (a_k - z) w_k = sum_k a_k w_k - z * sum_k w_k``, and ``z * colsum(W)`` is a
  per-channel constant folded into the output offset.

Observers see a layer's input batch after batch and give a range ``(lo, hi)``:
``max`` (min / max seen), ``percentile`` (the central ``calibrate_range`` share of
values) and ``entropy`` (TensorRT's KL-divergence threshold on |x|, symmetric).
"""

from __future__ import annotations

import numpy as np

QMAX_W = 127
# 7-bit weights for the kernels built on vpmaddubsw (AVX2, AVX-512 without VNNI): it
# sums two u8 x s8 products into a saturating int16, and 2 * 255 * 63 = 32130 fits
# where 2 * 255 * 127 would not (the choice PyTorch's fbgemm makes on the activations).
QMAX_W_PMADD = 63
# 6-bit weights when two such int16 sums are added before widening (2 * 2 * 255 * 31
# = 31,620 fits): one vpmaddwd per 8 k instead of per 4.
QMAX_W_PMADD2 = 31
CALIBRATE_MODES = ("max", "percentile", "entropy")


def weight_scales(w: np.ndarray, per_channel: bool = True, axis: int = 0, qmax: int = QMAX_W) -> np.ndarray:
    """Symmetric int8 scales: per output channel along ``axis`` (shape [C]) or one ([1])."""
    w = np.asarray(w, dtype=np.float32)
    if per_channel:
        amax = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1)
    else:
        amax = np.array([np.abs(w).max()], dtype=np.float32)
    # An all-zero channel gets scale 1 (its codes are all 0 either way) instead of 0/0.
    return np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)


def quantize_weight(w: np.ndarray, scales: np.ndarray, axis: int = 0, qmax: int = QMAX_W) -> np.ndarray:
    shape = [1] * w.ndim
    shape[axis] = -1
    s = scales.reshape(shape) if scales.size > 1 else scales.reshape(())
    return np.clip(np.rint(w / s), -qmax, qmax).astype(np.int8)


def activation_params(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero point) mapping [lo, hi] (widened to include 0, so 0 is exact) onto [0, 255]."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= 0:
        return 1.0, 0
    scale = (hi - lo) / 255.0
    zero = int(np.clip(np.rint(-lo / scale), 0, 255))
    return scale, zero


def quantize_activation(x: np.ndarray, scale: float, zero: int) -> np.ndarray:
    return np.clip(np.rint(x / scale) + zero, 0, 255).astype(np.uint8)


def dequantize_activation(q: np.ndarray, scale: float, zero: int) -> np.ndarray:
    return (q.astype(np.float32) - zero) * np.float32(scale)


def int8_linear_reference(x, w, bias, x_range, per_channel=True, qmax: int = QMAX_W) -> np.ndarray:
    """What the compiled int8 kernel computes for ``x @ w.T + bias`` (w: [N, K]), in
    exact integer arithmetic: the reference the TVM kernel is tested against."""
    sx, zx = activation_params(*x_range)
    sw = weight_scales(w, per_channel, qmax=qmax)
    xq = quantize_activation(x, sx, zx).astype(np.int64)
    wq = quantize_weight(w, sw, qmax=qmax).astype(np.int64)
    acc = xq @ wq.T - zx * wq.sum(axis=1)
    out = acc.astype(np.float32) * (sx * sw)
    return out + bias if bias is not None else out


class Observer:
    """Collects a layer's input range over calibration batches."""

    BINS = 2048  # per sign: the histogram covers [-R, R] with 2 * BINS bins

    def __init__(self, mode: str = "max", calibrate_range: float = 0.99999) -> None:
        if mode not in CALIBRATE_MODES:
            raise ValueError(f"calibrate_mode {mode!r}: one of {', '.join(CALIBRATE_MODES)}")
        self.mode, self.calibrate_range = mode, calibrate_range
        self.lo, self.hi = np.inf, -np.inf
        self.radius = 0.0
        self.hist = np.zeros(2 * self.BINS, dtype=np.int64)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32).ravel()
        if x.size == 0:
            return
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        if self.mode == "max":
            return
        amax = max(abs(self.lo), abs(self.hi))
        if self.radius == 0.0:
            self.radius = amax if amax > 0 else 1.0
        while amax > self.radius:
            # Doubling the range merges neighbouring bins into the middle half: exact,
            # so batches never need to be seen twice.
            merged = self.hist.reshape(-1, 2).sum(axis=1)
            self.hist = np.zeros_like(self.hist)
            self.hist[self.BINS // 2 : self.BINS // 2 + self.BINS] = merged
            self.radius *= 2
        counts, _ = np.histogram(x, bins=2 * self.BINS, range=(-self.radius, self.radius))
        self.hist += counts

    def range(self) -> tuple[float, float]:
        if not np.isfinite(self.lo):
            raise ValueError("observer saw no data")
        if self.mode == "max":
            return self.lo, self.hi
        if self.mode == "percentile":
            return self._percentile_range()
        t = entropy_threshold(self.hist[self.BINS :] + self.hist[: self.BINS][::-1], self.radius / self.BINS)
        return max(-t, self.lo), min(t, self.hi)

    def _percentile_range(self) -> tuple[float, float]:
        cdf = np.cumsum(self.hist) / self.hist.sum()
        edges = np.linspace(-self.radius, self.radius, 2 * self.BINS + 1)
        tail = (1.0 - self.calibrate_range) / 2
        lo = edges[np.searchsorted(cdf, tail, side="left")]  # left edge of the bin crossing `tail`
        hi = edges[np.searchsorted(cdf, 1.0 - tail, side="left") + 1]
        return max(float(lo), self.lo), min(float(hi), self.hi)


def entropy_threshold(abs_hist: np.ndarray, bin_width: float, levels: int = 128) -> float:
    """TensorRT's calibration: the |x| clipping threshold whose ``levels``-level
    quantisation of the histogram has the least KL divergence from the original
    (values above the threshold are clipped into the last bin)."""
    hist = np.asarray(abs_hist, dtype=np.float64)
    nonzero = np.nonzero(hist)[0]
    if nonzero.size == 0:
        return bin_width * len(hist)
    last = nonzero[-1] + 1
    if last <= levels:
        return last * bin_width  # fewer occupied bins than levels: nothing to clip
    best, best_i = np.inf, last
    for i in range(levels, last + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        # Merge the i bins into `levels` groups, then spread each group's mass evenly
        # over its non-empty bins: the distribution the quantised values represent.
        starts = np.array([g[0] for g in np.array_split(np.arange(i), levels)])
        nonempty = p > 0
        sums = np.add.reduceat(hist[:i], starts)
        counts = np.add.reduceat(nonempty.astype(np.float64), starts)
        sizes = np.diff(np.append(starts, i))
        q = np.repeat(np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0), sizes) * nonempty
        pn, qn = p / p.sum(), q / max(q.sum(), 1e-30)
        # TensorRT smooths empty Q bins rather than returning infinity.
        qn = np.where(qn > 0, qn, 1e-10)
        kl = float(np.sum(pn[nonempty] * np.log(pn[nonempty] / qn[nonempty])))
        if kl < best:
            best, best_i = kl, i
    return (best_i + 0.5) * bin_width
