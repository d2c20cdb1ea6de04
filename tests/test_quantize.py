"""Int8 quantisation math and calibration observers, against hand-checked values."""

import numpy as np
import pytest

from pipelines.compile.quantize import (
    Observer,
    activation_params,
    dequantize_activation,
    entropy_threshold,
    int8_linear_reference,
    quantize_activation,
    quantize_weight,
    weight_scales,
)


def test_activation_round_trip_error_is_at_most_half_a_step():
    rng = np.random.default_rng(0)
    x = rng.uniform(-3.0, 5.0, size=10_000).astype(np.float32)
    scale, zero = activation_params(-3.0, 5.0)
    assert scale == pytest.approx(8.0 / 255) and zero == 96  # rint(3 / (8/255)) = rint(95.6)
    back = dequantize_activation(quantize_activation(x, scale, zero), scale, zero)
    assert np.abs(back - x).max() <= scale / 2 + 1e-6
    # Zero is exact, and values beyond the range clip to its ends.
    assert dequantize_activation(quantize_activation(np.zeros(1), scale, zero), scale, zero)[0] == 0
    assert quantize_activation(np.array([-100.0, 100.0]), scale, zero).tolist() == [0, 255]


def test_a_range_that_excludes_zero_is_widened_to_include_it():
    scale, zero = activation_params(2.0, 4.0)
    assert (scale, zero) == (pytest.approx(4.0 / 255), 0)


def test_weight_round_trip_error_is_at_most_half_a_step_per_channel():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(16, 64)).astype(np.float32) * np.linspace(0.01, 2, 16)[:, None]
    s = weight_scales(w, per_channel=True)
    q = quantize_weight(w, s)
    assert q.dtype == np.int8 and np.abs(q).max() == 127
    assert (np.abs(q * s[:, None] - w) <= s[:, None] / 2 + 1e-7).all()


def test_per_channel_and_per_tensor_scales_on_a_known_tensor():
    w = np.array([[1.0, -2.0, 0.5], [0.1, 0.0, -0.05], [0.0, 0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(weight_scales(w, per_channel=True), [2 / 127, 0.1 / 127, 1.0], rtol=1e-6)
    np.testing.assert_allclose(weight_scales(w, per_channel=False), [2 / 127], rtol=1e-6)
    assert quantize_weight(w, weight_scales(w, True)).tolist() == [[64, -127, 32], [127, 0, -64], [0, 0, 0]]
    # One scale for all: the small channel keeps only a few levels.
    assert quantize_weight(w, weight_scales(w, False))[1].tolist() == [6, 0, -3]


def test_percentile_calibration_on_a_known_distribution():
    rng = np.random.default_rng(2)
    obs = Observer("percentile", calibrate_range=0.99)
    for _ in range(4):  # batch after batch, the last with the widest values
        obs.update(rng.standard_normal(50_000))
    obs.update(np.array([40.0]))  # one outlier must not set the range
    lo, hi = obs.range()
    # The central 99 % of N(0, 1) is +-2.576; after the outlier the bins are ~0.04 wide.
    assert lo == pytest.approx(-2.576, abs=0.06) and hi == pytest.approx(2.576, abs=0.06)
    maxed = Observer("max")
    maxed.update(np.array([-1.0, 3.0]))
    maxed.update(np.array([40.0]))
    assert maxed.range() == (-1.0, 40.0)


def test_entropy_clips_a_long_tail_and_keeps_a_compact_range():
    rng = np.random.default_rng(3)
    obs = Observer("entropy")
    obs.update(np.concatenate([rng.standard_normal(200_000), [60.0, -55.0]]))
    lo, hi = obs.range()
    assert 2.5 < hi < 20 and lo == -hi  # clips the outliers, keeps the body of the Gaussian
    # A histogram with no more occupied bins than levels needs no clipping.
    assert entropy_threshold(np.array([5, 3, 0, 1] + [0] * 200), 0.5) == pytest.approx(2.0)


def test_unknown_calibrate_mode_is_refused():
    with pytest.raises(ValueError, match="max, percentile, entropy"):
        Observer("minmax")


def test_integer_reference_matches_float_linear_within_quantisation_error():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(32, 64)).astype(np.float32)
    w = rng.normal(size=(48, 64)).astype(np.float32) * 0.1
    b = rng.normal(size=48).astype(np.float32)
    ref = x @ w.T + b
    out = int8_linear_reference(x, w, b, (float(x.min()), float(x.max())))
    rel = np.abs(out - ref).max() / np.abs(ref).max()
    assert 0 < rel < 0.02
