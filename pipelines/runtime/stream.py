"""Tag a text of any size, one sentence a line, into JSON lines: `ner-workbench tag --input`.

The input is read a chunk of lines at a time (``CHUNK_LINES``); each chunk is tagged
in length-sorted batches, a line longer than the model's length in overlapping
windows (``Tagger.tag_many``), and its results are written before the reader goes
on, in input order, one ``{"text", "entities"}`` object per input line. So memory
holds a few chunks, never the corpus. Three ways to tag the chunks, same output:

- in this process (``workers=1``);
- ``workers=N`` local processes, each opening the engine once, with the cores
  shared between them; at most ``2N`` chunks are in flight, results are written in
  the order the chunks were read;
- a Ray cluster (``tag_file_ray``): Ray Data ``map_batches`` over the file's
  chunks (byte ranges found by one scan), an actor pool whose actors open the
  engine once each, output in input order (``preserve_order``).

A line is what ends at ``\\n`` (a ``\\r`` before it is dropped): the same in all
three, and what the line count counts. A line that is not UTF-8 is a
``DataError`` naming the input and the line.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import IO, Iterable, Iterator, Sequence

from pipelines.data.loaders import DataError
from pipelines.events import Reporter
from pipelines.runtime.tagger import Tagger
from pipelines.runtime.tvm_threads import physical_cores

CHUNK_LINES = 2000
BATCH_SIZE = 64
_BLOCK = 1 << 20
_PROGRESS_EVERY_S = 0.2


class RayMissing(ImportError):
    """``--ray`` without Ray installed; ``str()`` says how to install it."""


# -- reading ------------------------------------------------------------------------


def _line_text(raw: bytes | str, number: int, name: str) -> str:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}: line {number} is not UTF-8 (byte {exc.start + 1} of the line: {exc.reason})") from None
    if raw.endswith("\n"):
        raw = raw[:-1]
    if raw.endswith("\r"):
        raw = raw[:-1]
    if number == 1 and raw.startswith("\ufeff"):  # a byte order mark
        raw = raw[1:]
    return raw


def read_lines(source: Iterable[bytes | str], name: str = "<stdin>", first_line: int = 1) -> Iterator[str]:
    """The lines of ``source`` (a binary or text file, or any iterable of lines) as
    text without their line ends, pulled one at a time."""
    for number, raw in enumerate(source, first_line):
        yield _line_text(raw, number, name)


def chunks(lines: Iterable[str], size: int = CHUNK_LINES) -> Iterator[list[str]]:
    """Lists of ``size`` lines (the last one shorter); reads no line before it is needed."""
    it = iter(lines)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


@dataclass
class FileScan:
    lines: int
    chunk_starts: list[int]  # the byte offset each chunk of ``chunk_lines`` lines starts at
    size: int


def scan_file(path: str, chunk_lines: int | None = None, check_utf8: bool = False) -> FileScan:
    """One binary pass over a file: its line count (a last line without ``\\n`` counts),
    and with ``chunk_lines`` where each chunk starts; with ``check_utf8``, a line that is
    not UTF-8 raises ``DataError`` naming it."""
    import numpy as np

    count, starts, offset, carry = 0, [0], 0, b""
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            if chunk_lines:
                ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
                # newline number count+k+1 (1-based) ends a chunk when it is a multiple of chunk_lines
                numbers = count + 1 + np.arange(len(ends))
                starts.extend((offset + ends[numbers % chunk_lines == 0] + 1).tolist())
                found = len(ends)
            else:
                found = block.count(b"\n")
            if check_utf8:
                carry += block
                cut = carry.rfind(b"\n") + 1
                _check_utf8(carry[:cut], count, path)
                carry = carry[cut:]
            count += found
            offset += len(block)
            last = block[-1:]
    if check_utf8:
        _check_utf8(carry, count, path)
    if offset and last != b"\n":
        count += 1
    if starts[-1] >= offset and len(starts) > 1:
        starts.pop()  # the file ends at a chunk boundary
    return FileScan(count, starts if offset else [], offset)


def _check_utf8(data: bytes, lines_before: int, name: str) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        number = lines_before + data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{name}: line {number} is not UTF-8 (byte {exc.start - line_start + 1} of the line: {exc.reason})"
        ) from None


# -- tagging a chunk ------------------------------------------------------------------


def json_lines(texts: Sequence[str], entities) -> str:
    return "".join(
        json.dumps({"text": t, "entities": [e.as_dict() for e in ents]}, ensure_ascii=False) + "\n"
        for t, ents in zip(texts, entities)
    )


@dataclass(frozen=True)
class TagSpec:
    """What every worker opens: picklable, so it travels to processes and Ray actors."""

    model: str
    engine: str = "torch"
    decoder: str | None = None
    threads: int | None = None
    batch_size: int = BATCH_SIZE

    def open(self) -> Tagger:
        return Tagger.open(self.model, self.engine, self.decoder, self.threads)


def tag_chunk(tagger: Tagger, texts: Sequence[str], batch_size: int = BATCH_SIZE, on_batch=None) -> str:
    return json_lines(texts, tagger.tag_many(texts, batch_size, on_batch))


# A worker process's tagger (ProcessPoolExecutor's initializer opens it once).
_WORKER: Tagger | BaseException | None = None
_WORKER_BATCH = BATCH_SIZE


def _init_worker(spec: TagSpec) -> None:
    global _WORKER, _WORKER_BATCH
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops the pool
    _WORKER_BATCH = spec.batch_size
    try:
        _WORKER = spec.open()
    except Exception as exc:  # noqa: BLE001 - raised again with the first chunk, so the parent sees it
        _WORKER = exc


def _worker_chunk(texts: list[str]) -> str:
    if isinstance(_WORKER, BaseException):
        raise _WORKER
    return tag_chunk(_WORKER, texts, _WORKER_BATCH)


def threads_per_worker(workers: int) -> int:
    return max(1, physical_cores() // max(1, workers))


# -- the stream ---------------------------------------------------------------------


class _Progress:
    """Sentences done, their rate and (with a known total) the ETA, at most every 0.2 s."""

    def __init__(self, reporter: Reporter, total: int | None) -> None:
        self.reporter, self.total = reporter, total
        self.start = self.last = time.monotonic()
        self.done = 0

    def show(self, n: float, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= _PROGRESS_EVERY_S:
            self.last = now
            elapsed = now - self.start
            rate = n / elapsed if elapsed > 0 else 0.0
            self.reporter.progress(int(n), self.total, "sentences", sentences_per_s=round(rate, 1))

    def add(self, lines: int) -> None:
        self.done += lines
        self.show(self.done, force=self.done == self.total)

    def summary(self) -> dict:
        seconds = time.monotonic() - self.start
        rate = self.done / seconds if seconds > 0 else 0.0
        self.reporter.finished(f"{self.done:,} sentences in {seconds:.1f} s ({rate:,.1f} sentences/s)")
        return {"sentences": self.done, "seconds": round(seconds, 3), "sentences_per_s": round(rate, 1)}


def tag_stream(
    spec: TagSpec,
    lines: Iterable[bytes | str],
    out: IO[str],
    reporter: Reporter,
    *,
    name: str = "<stdin>",
    total: int | None = None,
    workers: int = 1,
    chunk_lines: int = CHUNK_LINES,
) -> dict:
    """Tag every line of ``lines`` and write one JSON line each to ``out``, in order.
    ``total``: the line count if known (the ETA). Returns sentences, seconds and their
    rate, counted from the first line read (the workers' start-up included)."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    reporter.started(f"{spec.model} through {spec.engine}" + (f", {workers} workers" if workers > 1 else ""))
    # Open the engine here first: a missing model or engine fails now with its own
    # message, and what an engine makes on first use (ONNX files) is made once.
    tagger = spec.open() if workers == 1 else TagSpec(spec.model, spec.engine, spec.decoder, 1).open()
    texts = chunks(read_lines(lines, name), chunk_lines)
    progress = _Progress(reporter, total)
    if workers == 1:
        for chunk in texts:
            done = progress.done

            def on_batch(b: int, n: int, done=done, size=len(chunk)) -> None:
                progress.show(done + size * b / n)

            out.write(tag_chunk(tagger, chunk, spec.batch_size, on_batch))
            progress.add(len(chunk))
        return progress.summary()
    del tagger
    for size, result in _pool_results(spec, texts, workers):
        out.write(result)
        progress.add(size)
    return progress.summary()


def _pool_results(spec: TagSpec, texts: Iterator[list[str]], workers: int) -> Iterator[tuple[int, str]]:
    """(lines, JSON lines) per chunk, in order; chunks read only as workers free up."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    spec = TagSpec(spec.model, spec.engine, spec.decoder, spec.threads or threads_per_worker(workers), spec.batch_size)
    # spawn, not fork: a forked copy of a process that already ran torch's OpenMP pool can hang.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(spec,)) as pool:
        pending: deque = deque()
        try:
            for chunk in texts:
                pending.append((len(chunk), pool.submit(_worker_chunk, chunk)))
                if len(pending) >= 2 * workers:
                    size, future = pending.popleft()
                    yield size, future.result()
            while pending:
                size, future = pending.popleft()
                yield size, future.result()
        except BaseException:  # an error, Ctrl-C, or the writer gone: drop the chunks not started
            pool.shutdown(wait=False, cancel_futures=True)
            raise


# -- Ray ------------------------------------------------------------------------------


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayMissing(
            f"--ray needs Ray Data ({exc.name or exc} is missing): pip install 'ner-workbench[ray]' "
            "(in a checkout: make install, or .venv/bin/python -m pip install 'ray[data]' -c constraints.txt)"
        ) from None
    return ray


class RayChunkTagger:
    """Ray Data's callable class: each actor opens the engine once, then tags chunks,
    each read from its byte range of the file."""

    def __init__(self, spec: TagSpec, path: str) -> None:
        self.spec, self.path = spec, path
        self.tagger = spec.open()

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        results = []
        with open(self.path, "rb") as f:
            for start, end, first in zip(batch["start"], batch["end"], batch["first"]):
                f.seek(int(start))
                data = f.read(int(end) - int(start))
                texts = list(read_lines(_split_lines(data), self.path, int(first)))
                results.append(tag_chunk(self.tagger, texts, self.spec.batch_size))
        return {"chunk": np.asarray(batch["chunk"]), "lines": np.asarray(batch["lines"]), "jsonl": np.array(results, dtype=object)}


def _split_lines(data: bytes) -> list[bytes]:
    """Lines ending at ``\\n`` only (``bytes.splitlines`` also cuts at ``\\r``)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def ray_init(address: str):
    """``auto``: ``ray.init()`` by Ray's own rules (``RAY_ADDRESS``, a cluster started on
    this machine, else a new local one); otherwise the cluster at ``address``. Returns
    (ray, whether this call started it)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    import logging

    ray.init(address=None if address == "auto" else address, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    return ray, True


def tag_file_ray(
    spec: TagSpec,
    path: str,
    out: IO[str],
    reporter: Reporter,
    *,
    address: str = "auto",
    actors: int | None = None,
    chunk_lines: int = CHUNK_LINES,
) -> dict:
    """``tag_stream`` on a Ray cluster: the file (at this path on every node that runs
    an actor) in chunks of lines, tagged by ``actors`` actors (default: one per CPU of
    the cluster, each with as many threads as it reserves CPUs), written in input order."""
    path = os.path.abspath(path)
    scan = _scan_input(path, chunk_lines)  # a bad line: one error here, not in an actor
    TagSpec(spec.model, spec.engine, spec.decoder, 1).open()  # a missing model or engine: the same
    ray, started = ray_init(address)
    try:
        import logging

        import ray.data

        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": ours show
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = actors or cpus
        threads = spec.threads or max(1, cpus // actors)
        spec = TagSpec(spec.model, spec.engine, spec.decoder, threads, spec.batch_size)
        actors = max(1, min(actors, len(scan.chunk_starts)))
        reporter.started(f"{spec.model} through {spec.engine}, {actors} Ray actor{'s' * (actors > 1)} × {threads} threads")
        ends = [*scan.chunk_starts[1:], scan.size]
        items = [
            {"chunk": k, "start": s, "end": e, "first": k * chunk_lines + 1, "lines": min(chunk_lines, scan.lines - k * chunk_lines)}
            for k, (s, e) in enumerate(zip(scan.chunk_starts, ends))
        ]
        progress = _Progress(reporter, scan.lines)
        context = ray.data.DataContext.get_current()
        saved = (context.execution_options.preserve_order, context.enable_progress_bars, context.print_on_execution_start)
        try:
            context.execution_options.preserve_order = True  # rows come back in input order
            context.enable_progress_bars = False  # ours show
            context.print_on_execution_start = False
            if items:
                dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                    RayChunkTagger, fn_constructor_args=(spec, path), batch_size=1, num_cpus=threads,
                    compute=ray.data.ActorPoolStrategy(size=actors),
                )
                for expected, row in enumerate(dataset.iter_rows()):
                    if int(row["chunk"]) != expected:
                        raise RuntimeError(f"Ray returned chunk {row['chunk']} where chunk {expected} was due")
                    out.write(row["jsonl"])
                    progress.add(int(row["lines"]))
        finally:
            context.execution_options.preserve_order, context.enable_progress_bars, context.print_on_execution_start = saved
        return progress.summary()
    finally:
        if started:
            ray.shutdown()


# -- the command ---------------------------------------------------------------------


def tag_input(
    spec: TagSpec,
    source: str,
    out: IO[str],
    reporter: Reporter,
    *,
    workers: int = 1,
    ray: str | None = None,
    stdin: IO[bytes] | None = None,
    chunk_lines: int = CHUNK_LINES,
) -> dict:
    """``source``: a file, or ``-`` for ``stdin`` (binary; default the process's). A
    file's lines are counted first (the ETA); standard input has no total."""
    if ray:
        if source == "-":
            raise DataError("--ray reads a file (every Ray actor reads its own part of it): pass --input FILE, not -")
        return tag_file_ray(spec, source, out, reporter, address=ray, actors=workers if workers > 1 else None,
                            chunk_lines=chunk_lines)
    if source == "-":
        import sys

        return tag_stream(spec, stdin or sys.stdin.buffer, out, reporter, workers=workers, chunk_lines=chunk_lines)
    total = _scan_input(source).lines  # a line that is not UTF-8 fails here, before any output
    with open(source, "rb") as f:
        return tag_stream(spec, f, out, reporter, name=source, total=total, workers=workers, chunk_lines=chunk_lines)


def _scan_input(path: str, chunk_lines: int | None = None) -> FileScan:
    try:
        return scan_file(path, chunk_lines, check_utf8=True)
    except OSError as exc:
        raise DataError(f"{path}: {exc.strerror or exc}") from None
