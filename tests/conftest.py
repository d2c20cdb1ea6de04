import os

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

DATA = os.path.join(os.path.dirname(__file__), "data")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def pd_sample() -> str:
    """12 People's Daily sentences in the reference recipe's `char tag` format."""
    return os.path.join(DATA, "pd_sample.txt")


TOY = [
    ("张三在北京工作", ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O"]),
    ("新华社报道了上海的消息", ["B-ORG", "I-ORG", "I-ORG", "O", "O", "B-LOC", "I-LOC", "O", "O", "O", "O"]),
    ("李四去了广州", ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]),
    ("王五是人民日报的记者", ["B-PER", "I-PER", "O", "B-ORG", "I-ORG", "I-ORG", "I-ORG", "O", "O", "O"]),
]


def write_toy_corpus(path: str, copies: int = 8) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(copies):
            for text, tags in TOY:
                f.write("\n".join(f"{c} {t}" for c, t in zip(text, tags)) + "\n\n")


def finished_run(store, name: str):
    """A run recorded as done without running a stage (history and deletion tests)."""
    from pipelines.config import parse_config

    run = store.create_run(parse_config({"name": name}))
    store.run_finished(run.id)
    return run


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory):
    """A tiny model trained (in seconds) until it has memorised a toy corpus, then
    exported and evaluated: (run record, stage results, events, corpus path, runs dir)."""
    from pipelines.config import parse_config
    from workbench.runner import execute
    from workbench.store import RunStore

    root = tmp_path_factory.mktemp("toy")
    corpus = str(root / "toy.txt")
    write_toy_corpus(corpus)
    cfg = parse_config(
        {
            "name": "toy",
            "data": {"source": "conll", "train": corpus, "dev": corpus, "test": corpus},
            "model": {"preset": "tiny", "max_length": 16, "dropout": 0.0},
            "train": {"epochs": 40, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.1, "threads": 2},
            "export": {"shape": [1, 16], "parity_sentences": 8},
        }
    )
    store = RunStore(str(root / "runs"))
    run = store.create_run(cfg)
    events = []
    results = execute(cfg, store, run, cfg.stages, [events.append])
    return run, results, events, corpus, str(root / "runs")
