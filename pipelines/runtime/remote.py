"""TVM RPC: a tracker's devices, and compiled TVM artifacts run on one of them.

A tracker (``python -m tvm.exec.rpc_tracker``) hands out devices (each one
``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY``) by key. A
``RemoteDevice`` holds one session on a device of the key; the artifacts opened on
it are uploaded there and run as ``RemoteTVMEngine`` s, with the local engines'
``logits(ids, mask)`` (inputs padded to the artifact's shape, logits sent back) and
``device_times``: calls timed on the device's own clock (the VM's ``time_evaluator``),
so the network is not in the latency.

A remote engine's name is the engine's and the key's, ``tvm-fp32+rpc-KEY``: bench rows,
eval files (``test-tvm-fp32+rpc-KEY.json``) and the compare table keep it apart from
the local ``tvm-fp32``, and ``split_remote`` takes it apart again.

The tracker's own client (``tvm.rpc.connect_tracker``) retries a refused connection
for 60 s and waits for a free device without end; ``Tracker`` here speaks the same
protocol with a connect timeout (``CONNECT_TIMEOUT_S``) and a wait limit, and without
importing TVM (``ner-workbench devices`` stays quick).
"""

from __future__ import annotations

import gc
import json
import os
import re
import socket
import struct
import tempfile

import numpy as np

from pipelines.config import RPC_KEY_PATTERN, RpcConfig
from pipelines.runtime.engines import EngineError, FixedShapeEngine, artifacts_engine, open_engine, tvm_artifacts

CONNECT_TIMEOUT_S = 5.0  # to reach the tracker, and for each of its answers
REMOTE_MARK = "+rpc-"
_REMOTE_NAME = re.compile(rf"^(?P<engine>.+){re.escape(REMOTE_MARK)}(?P<key>{RPC_KEY_PATTERN})$")

# The tracker's wire protocol (tvm/rpc/base.py): a magic number each way, then
# [int32 length][JSON] messages.
_TRACKER_MAGIC = 0x2F271
_SUCCESS, _REQUEST, _SUMMARY = 0, 4, 6


class RemoteError(EngineError):
    """An RPC tracker or device that cannot be used; ``str()`` is one line naming the address."""


def remote_name(engine: str, key: str) -> str:
    """``tvm-fp32`` on a device of key ``pi`` is ``tvm-fp32+rpc-pi``."""
    return f"{engine}{REMOTE_MARK}{key}"


def split_remote(name: str) -> tuple[str, str | None]:
    """(engine, key) of a remote engine's name; (name, None) for a local one."""
    m = _REMOTE_NAME.match(name)
    return (m["engine"], m["key"]) if m else (name, None)


def device_label(name: str) -> str:
    """Where an engine of this name runs: ``local`` or ``rpc:KEY`` (bench.json's ``device``)."""
    key = split_remote(name)[1]
    return f"rpc:{key}" if key else "local"


def runs_remotely(name: str) -> bool:
    """Only compiled TVM artifacts can be sent to an RPC device."""
    return name.startswith("tvm-")


class Tracker:
    """A connection to an RPC tracker: its devices per key, and a session on a free one."""

    def __init__(self, rpc: RpcConfig, timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.rpc, self.timeout = rpc, timeout
        host, port = rpc.address
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as err:
            reason = f"no answer within {timeout:g} s" if isinstance(err, TimeoutError) else (err.strerror or str(err)).lower()
            raise RemoteError(f"RPC tracker {rpc.tracker} unreachable ({reason})") from None
        try:
            self.sock.sendall(struct.pack("<i", _TRACKER_MAGIC))
            magic = struct.unpack("<i", self._recv(4))[0]
        except OSError as err:
            self.close()
            raise RemoteError(f"{rpc.tracker} is not an RPC tracker that answers ({err or 'no answer'})") from None
        if magic != _TRACKER_MAGIC:
            self.close()
            raise RemoteError(f"{rpc.tracker} is not a TVM RPC tracker")

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _recv(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionResetError("connection closed")
            data += chunk
        return data

    def _call(self, message: list, timeout: float | None = None):
        blob = json.dumps(message).encode()
        self.sock.settimeout(timeout or self.timeout)
        self.sock.sendall(struct.pack("<i", len(blob)) + blob)
        size = struct.unpack("<i", self._recv(4))[0]
        return json.loads(self._recv(size).decode())

    def summary(self) -> dict:
        try:
            code, summary = self._call([_SUMMARY])
        except (OSError, ValueError) as err:
            raise RemoteError(f"RPC tracker {self.rpc.tracker}: no summary ({err or 'no answer'})") from None
        if code != _SUCCESS:
            raise RemoteError(f"RPC tracker {self.rpc.tracker}: summary refused ({code})")
        return summary

    def devices(self) -> list[dict]:
        """Per key: ``total`` devices connected, ``free`` (not in a session), ``pending`` requests."""
        summary = self.summary()
        total: dict[str, int] = {}
        for server in summary.get("server_info", []):
            key = server.get("key", "").split(":", 1)[-1]
            total[key] = total.get(key, 0) + 1
        queues = summary.get("queue_info", {})
        keys = sorted(set(total) | {k for k, q in queues.items() if q.get("free") or q.get("pending")})
        return [
            {"key": k, "total": total.get(k, 0), "free": queues.get(k, {}).get("free", 0), "pending": queues.get(k, {}).get("pending", 0)}
            for k in keys
        ]

    def of_key(self, key: str) -> dict:
        """The key's line of ``devices``; a ``RemoteError`` when the tracker has no device of it."""
        found = {d["key"]: d for d in self.devices()}
        if not found.get(key, {}).get("total"):
            others = ", ".join(f"{k} ({d['total']})" for k, d in found.items() if d["total"]) or "none"
            raise RemoteError(f"RPC tracker {self.rpc.tracker} has no device with key {key!r} (keys: {others})")
        return found[key]

    def request(self, session_timeout: float = 0):
        """A session on a free device of the key, waiting at most ``rpc.wait_s`` for one."""
        rpc = self.rpc
        self.of_key(rpc.key)
        try:
            reply = self._call([_REQUEST, rpc.key, "", 1], timeout=rpc.wait_s)
        except TimeoutError:
            self.close()  # the tracker drops the request with the connection
            with Tracker(rpc) as fresh:
                d = fresh.of_key(rpc.key)
            raise RemoteError(
                f"no free device with key {rpc.key!r} on RPC tracker {rpc.tracker} within {rpc.wait_s:g} s "
                f"({d['free']} of {d['total']} free, {d['pending']} requests waiting)"
            ) from None
        except OSError as err:
            raise RemoteError(f"RPC tracker {rpc.tracker}: request for {rpc.key!r} failed ({err or 'connection lost'})") from None
        if reply[0] != _SUCCESS:
            raise RemoteError(f"RPC tracker {rpc.tracker} refused a device of key {rpc.key!r} ({reply})")
        host, port, matchkey = reply[1]
        from tvm import rpc as tvm_rpc

        try:
            return tvm_rpc.connect(host, port, matchkey, session_timeout)
        except Exception as err:  # noqa: BLE001 - TVM's connection errors come as several types
            raise RemoteError(f"RPC device {host}:{port} (key {rpc.key!r}) did not take the session: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def tracker_devices(rpc: RpcConfig) -> list[dict]:
    with Tracker(rpc) as tracker:
        return tracker.devices()


def key_devices(rpc: RpcConfig) -> dict:
    """The devices of ``rpc.key`` (total, free, pending); a ``RemoteError`` if unreachable or none."""
    with Tracker(rpc) as tracker:
        return tracker.of_key(rpc.key)


class RemoteTVMEngine(FixedShapeEngine):
    """A TVM library on an RPC device: inputs are sent, run there, logits come back."""

    def __init__(self, session, library: str, shape, name: str, target: str = "llvm", upload_as: str | None = None,
                 lengths=None) -> None:
        import tvm
        from tvm import relax

        super().__init__(shape, lengths)
        self.name = name
        remote_file = upload_as or os.path.basename(library)
        session.upload(library, remote_file)
        self.device = session.cuda() if target.startswith("cuda") else session.cpu()
        self.vm = relax.VirtualMachine(session.load_module(remote_file), self.device)
        self._tensor = tvm.runtime.tensor

    def _set_input(self, ids: np.ndarray, mask: np.ndarray) -> None:
        # The stateful calls: a VM function's tuple result cannot come back over RPC whole.
        self.vm.set_input("main", self._tensor(ids, self.device), self._tensor(mask, self.device))

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self._set_input(ids, mask)
        self.vm.invoke_stateful("main")
        out = self.vm.get_outputs("main")
        out = out[0] if isinstance(out, tuple) else out
        return out.numpy().astype(np.float32, copy=False)

    def release(self) -> None:
        """Let go of the remote objects (the session ends when none is left)."""
        self.vm = self.device = None

    def device_times(self, ids: np.ndarray, mask: np.ndarray, count: int) -> list[float]:
        """Milliseconds of ``count`` calls on the device's clock (one round trip for all)."""
        if not self.serves(*ids.shape):
            raise EngineError(f"{self.name} times its own shape {self.fixed_shape}, got {tuple(ids.shape)}")
        self._set_input(ids, mask)
        timer = self.vm.time_evaluator("invoke_stateful", self.device, number=1, repeat=count)
        return [s * 1000 for s in timer("main").results]


class RemoteDevice:
    """One session on a device of ``rpc.key``, opened on first use and shared by every
    artifact opened on it (the tracker gives each session a device of its own)."""

    def __init__(self, rpc: RpcConfig) -> None:
        self.rpc = rpc
        self._session = None
        self._engines: list[RemoteTVMEngine] = []
        # Each artifact uploaded once a session: a symbolic-length build serves several
        # shapes, and uploading its library again over the one loaded killed the server.
        self._by_artifact: dict[str, RemoteTVMEngine] = {}
        self._tmp: tempfile.TemporaryDirectory | None = None

    @property
    def label(self) -> str:
        return f"rpc:{self.rpc.key}"

    @property
    def session(self):
        if self._session is None:
            with Tracker(self.rpc) as tracker:
                self._session = tracker.request()
        return self._session

    def _engine(self, library: str, shape, name: str, target: str, upload_as: str, lengths=None) -> RemoteTVMEngine:
        try:
            engine = RemoteTVMEngine(self.session, library, shape, name, target, upload_as, lengths)
        except RemoteError:
            raise
        except Exception as err:  # noqa: BLE001 - TVM's RPC errors: one line with the address
            first = (str(err).strip().splitlines() or [type(err).__name__])[-1]
            raise RemoteError(f"{name} on {self.label} ({self.rpc.tracker}): {first}") from None
        self._engines.append(engine)
        return engine

    def open(self, name: str, run_or_model_dir: str, shape=None):
        """A TVM engine of a run on this device (several shapes: one ``ShapeProfile``)."""
        return artifacts_engine(tvm_artifacts(name, run_or_model_dir, shape), shape, self._open_artifact)

    def _open_artifact(self, artifact_dir: str) -> RemoteTVMEngine:
        opened = self._by_artifact.get(os.path.realpath(artifact_dir))
        if opened is not None:
            return opened
        with open(os.path.join(artifact_dir, "artifact.json"), encoding="utf-8") as f:
            meta = json.load(f)
        library = os.path.join(artifact_dir, meta["library"])
        shape = meta["inputs"][0]["shape"]
        # one name per artifact: one session holds every shape of a profile
        upload_as = f"{os.path.basename(artifact_dir)}-{meta['library']}"
        engine = self._engine(library, shape, remote_name(meta["engine"], self.rpc.key), meta["target"], upload_as, meta.get("lengths"))
        self._by_artifact[os.path.realpath(artifact_dir)] = engine
        return engine

    def open_executable(self, executable, shape, name: str) -> RemoteTVMEngine:
        """A build not saved yet (the compile's end-to-end check), exported and sent here."""
        path = os.path.join(self._tmpdir(), f"{name}.so")
        executable.export_library(path)
        return self._engine(path, shape, name, "llvm", f"build-{name}.so")

    def _tmpdir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ner-rpc-")
        return self._tmp.name

    def close(self) -> None:
        """Ends the session (the device goes back to the tracker's free list): the engines
        opened on it are released, wherever a reference to one is still held."""
        for engine in self._engines:
            engine.release()
        self._engines.clear()
        self._by_artifact.clear()
        self._session = None
        gc.collect()  # the session ends when the last remote object holding it is gone
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "RemoteDevice":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_engine_on(name: str, run_or_model_dir: str, device: RemoteDevice | None = None, threads: int | None = None, shape=None):
    """``open_engine``, or on ``device`` for an engine that can run there (``runs_remotely``)."""
    if device is not None and runs_remotely(name):
        return device.open(name, run_or_model_dir, shape)
    return open_engine(name, run_or_model_dir, threads=threads, shape=shape)
