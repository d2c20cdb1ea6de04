"""Data: corpora to labelled splits (MSRA, People's Daily, hub, CoNLL files), unlabelled text, and characters to model inputs."""
