import os
from contextlib import contextmanager
from dataclasses import dataclass

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


def tagged(text: str, *entities: tuple[str, str]) -> tuple[str, list[str]]:
    """A sentence and its BIO tags from its entities, ``(surface, TYPE)``, each found
    at its first occurrence (so the tags are checked by reading the entities)."""
    tags = ["O"] * len(text)
    for surface, etype in entities:
        i = text.index(surface)
        assert set(tags[i : i + len(surface)]) == {"O"}, f"{surface} overlaps another entity in {text}"
        tags[i : i + len(surface)] = [f"B-{etype}"] + [f"I-{etype}"] * (len(surface) - 1)
    return text, tags


TOY = [
    tagged("张三在北京工作", ("张三", "PER"), ("北京", "LOC")),
    tagged("新华社报道了上海的消息", ("新华社", "ORG"), ("上海", "LOC")),
    tagged("李四去了广州", ("李四", "PER"), ("广州", "LOC")),
    tagged("王五是人民日报的记者", ("王五", "PER"), ("人民日报", "ORG")),
]
# The toy model's train split: TOY and sentences with its entities in other places and
# company, so that what the model learns is less the positions (on six seeds, test F1
# 0.94-1.0 and dev F1 0.875 throughout; TOY alone: 0.91-1.0 and 0.75-0.875).
TOY_TRAIN = TOY + [
    tagged("在上海的王五是记者", ("上海", "LOC"), ("王五", "PER")),
    tagged("新华社的记者张三去了北京", ("新华社", "ORG"), ("张三", "PER"), ("北京", "LOC")),
    tagged("广州的消息是人民日报报道的", ("广州", "LOC"), ("人民日报", "ORG")),
    tagged("李四在新华社工作", ("李四", "PER"), ("新华社", "ORG")),
    tagged("上海的李四是人民日报的记者", ("上海", "LOC"), ("李四", "PER"), ("人民日报", "ORG")),
    tagged("张三和王五去了新华社", ("张三", "PER"), ("王五", "PER"), ("新华社", "ORG")),
]
# Dev and test: sentences the model never saw. Known entities in new company, and
# new ones made of known characters (王三, 李五, 北海, 新华日报): right tags need
# more than recalling the train sentences.
TOY_DEV = [
    tagged("王五在广州工作", ("王五", "PER"), ("广州", "LOC")),
    tagged("李四是新华社的记者", ("李四", "PER"), ("新华社", "ORG")),
    tagged("人民日报报道了北京的消息", ("人民日报", "ORG"), ("北京", "LOC")),
    tagged("张三去了上海", ("张三", "PER"), ("上海", "LOC")),
]
TOY_TEST = [
    tagged("李四在上海工作", ("李四", "PER"), ("上海", "LOC")),
    tagged("王五去了北京", ("王五", "PER"), ("北京", "LOC")),
    tagged("张三是人民日报的记者", ("张三", "PER"), ("人民日报", "ORG")),
    tagged("新华社报道了广州的消息", ("新华社", "ORG"), ("广州", "LOC")),
    tagged("王三在北海工作", ("王三", "PER"), ("北海", "LOC")),
    tagged("李五是新华日报的记者", ("李五", "PER"), ("新华日报", "ORG")),
    tagged("北京的张三去了广州", ("北京", "LOC"), ("张三", "PER"), ("广州", "LOC")),
    tagged("王五和李四在上海工作", ("王五", "PER"), ("李四", "PER"), ("上海", "LOC")),
]
TOY_TRAIN_COPIES = 4


def write_toy_corpus(path: str, copies: int = 8, sentences=TOY) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(copies):
            for text, tags in sentences:
                f.write("\n".join(f"{c} {t}" for c, t in zip(text, tags)) + "\n\n")


@dataclass(frozen=True)
class ToyCorpus:
    """The toy corpus as three files: train (``TOY_TRAIN`` x 4), dev and test (held out)."""

    train: str
    dev: str
    test: str

    @classmethod
    def write(cls, directory) -> "ToyCorpus":
        corpus = cls(*(os.path.join(str(directory), f"toy-{split}.txt") for split in ("train", "dev", "test")))
        write_toy_corpus(corpus.train, copies=TOY_TRAIN_COPIES, sentences=TOY_TRAIN)
        write_toy_corpus(corpus.dev, copies=1, sentences=TOY_DEV)
        write_toy_corpus(corpus.test, copies=1, sentences=TOY_TEST)
        return corpus

    def data(self) -> dict:
        """A run config's ``data`` section for these files."""
        return {"source": "conll", "train": self.train, "dev": self.dev, "test": self.test}


def entity_count(sentences, etype: str) -> int:
    return sum(tag == f"B-{etype}" for _, tags in sentences for tag in tags)


def copy_run(run_dir: str, directory) -> str:
    """A copy of a run to change (its model, its config) without touching the shared one;
    what is built from the model (ONNX, TVM artifacts) is left behind."""
    import shutil

    copy = os.path.join(str(directory), "run")
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("compiled", "onnx"))
    return copy


def evaluate_run(run_dir: str, engine: str) -> dict:
    """Scores of a run's model on its own test split through one engine (as ``eval --engine``)."""
    from pipelines.config import load_config
    from pipelines.data.loaders import data_for
    from pipelines.evaluate.scoring import evaluate
    from pipelines.events import Reporter

    cfg = load_config(os.path.join(run_dir, "config.yaml"))
    return evaluate(run_dir, data_for(cfg).splits["test"], "test", Reporter(), engine_name=engine)


def finished_run(store, name: str):
    """A run recorded as done without running a stage (history and deletion tests)."""
    from pipelines.config import parse_config

    run = store.create_run(parse_config({"name": name}))
    store.run_finished(run.id)
    return run


def toy_bilstm_run(root, name: str, **model):
    """A BiLSTM trained (in seconds) on the toy corpus written under ``root``, then
    evaluated on its test split: (run record, stage results, ToyCorpus). ``model``:
    settings over the toy BiLSTM's (lexicon, crf, ...)."""
    from pipelines.config import parse_config
    from workbench.runner import execute
    from workbench.store import RunStore

    corpus = ToyCorpus.write(root)
    cfg = parse_config({
        "name": name, "stages": ["train", "eval"], "data": corpus.data(),
        "model": {"preset": "bilstm", "max_length": 16, "dropout": 0.1, **model},
        "train": {"epochs": 15, "batch_size": 8, "learning_rate": 1e-2, "threads": 1, "eval_every": 10, "precision": "fp32"},
        "eval": {"decode": "bio"},
    })
    store = RunStore(str(root / "runs"))
    run = store.create_run(cfg)
    return run, execute(cfg, store, run, cfg.stages, [lambda event: None]), corpus


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory):
    """A tiny model trained (in seconds) on the toy train split, best checkpoint chosen
    on dev, then exported and evaluated on the held-out test split:
    (run record, stage results, events, ToyCorpus, runs dir)."""
    from pipelines.config import parse_config
    from workbench.runner import execute
    from workbench.store import RunStore

    root = tmp_path_factory.mktemp("toy")
    corpus = ToyCorpus.write(root)
    cfg = parse_config(
        {
            "name": "toy",
            "data": corpus.data(),
            "model": {"preset": "tiny", "max_length": 16, "dropout": 0.0},
            # A dev evaluation (and its checkpoint) every 10 of the 150 steps, not every epoch; one
            # thread: a tiny model gains nothing from two, and two spin badly on a busy 2-core machine.
            # fp32: the same toy model on every host (auto trains in bf16 on AMX hosts, where the
            # int8 budget tests' fragile layer then no longer breaks it).
            "train": {"epochs": 30, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.1, "threads": 1, "eval_every": 10,
                      "precision": "fp32"},
            "export": {"shape": [1, 16], "parity_sentences": 8},
        }
    )
    store = RunStore(str(root / "runs"))
    run = store.create_run(cfg)
    events = []
    results = execute(cfg, store, run, cfg.stages, [events.append])
    return run, results, events, corpus, str(root / "runs")


# -- a TVM RPC tracker and its devices on 127.0.0.1 (test_rpc, test_tui_devices) -------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc) -> None:
    """The process and everything it started (its session's sessions, TVM's popen workers)."""
    import signal
    import subprocess

    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_free(rpc, count: int, timeout: float = 60.0) -> dict:
    """Until the tracker has ``count`` free devices of the key (a session just ended goes back
    to the free list when its server registers again)."""
    import time

    from pipelines.runtime.remote import RemoteError, Tracker

    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            with Tracker(rpc) as tracker:
                last = {d["key"]: d for d in tracker.devices()}.get(rpc.key)
            if last and last["free"] >= count:
                return last
        except RemoteError as err:
            last = str(err)
        time.sleep(0.25)
    raise AssertionError(f"the tracker never had {count} free devices of {rpc.key!r}: {last}")


@contextmanager
def rpc_tracker(logs, servers: int, key: str):
    """An RPC tracker and ``servers`` servers of ``key``, each in a process group of its own,
    their logs in the directory ``logs``; the servers size TVM's pool as this process does,
    so times compare. Yields the tracker's ``RpcConfig`` once all the devices are free."""
    import socket
    import subprocess
    import sys
    import time

    from pipelines.config import RpcConfig
    from pipelines.runtime.tvm_threads import SPIN_COUNT, physical_cores

    env = {**os.environ, "TVM_NUM_THREADS": str(physical_cores()), "TVM_THREAD_POOL_SPIN_COUNT": SPIN_COUNT}
    procs = []

    def start(name, *args):
        log = open(os.path.join(str(logs), f"{name}.log"), "wb")
        procs.append(subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))

    try:
        port = free_port()
        start("tracker", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1))
        deadline = time.monotonic() + 60
        while True:  # its port first: a server that finds no tracker retries only every 5 s
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or procs[0].poll() is not None:
                    with open(os.path.join(str(logs), "tracker.log"), encoding="utf-8", errors="replace") as f:
                        raise AssertionError(f.read()[-2000:])
                time.sleep(0.2)
        for i in range(servers):
            server_port = free_port()
            start(f"server{i}", "tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}", "--key", key,
                  "--host", "127.0.0.1", "--port", str(server_port), "--port-end", str(server_port + 1))
        rpc = RpcConfig(tracker=f"127.0.0.1:{port}", key=key, wait_s=60)
        wait_free(rpc, servers, timeout=90)
        yield rpc
    finally:
        for proc in reversed(procs):
            stop_group(proc)
