"""The model format: presets, building, saving and loading a model directory."""
