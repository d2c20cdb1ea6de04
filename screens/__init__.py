"""The Textual screens of the workbench app (one module per screen); shared widgets in ``widgets``."""
