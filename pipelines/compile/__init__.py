"""Compiling: TorchScript / torch.export with parity, TVM Relax builds, default schedules, tuning, int8 calibration and kernels."""
