"""Measuring a model: entity scores, saved predictions, interleaved latency."""
