"""Everything that computes; imports neither Textual nor Rich.

Plain modules at this level (config, events, files, layout, ...) sit at the bottom;
the concerns (data, modeling, runtime, evaluate, compile, training) above them;
``stages`` orchestrates. Imports only go down: see docs/architecture.md and
tests/test_layers.py.
"""
