"""Running a model: the engines (torch, TorchScript, ONNX Runtime, TVM), batched prediction, decoding, tagging."""
