"""Write-then-rename, so a killed process never leaves a half-written artifact that
looks complete: readers see the old version or the new one, nothing between.

Every file the product writes goes through ``atomic_path`` (a library that writes to a
path of its own choosing too): the new file is fsynced before the rename and the
directory after it, so a power cut cannot leave a renamed file that is empty.
Directories are swapped in one step where the kernel allows it (``renameat2``
RENAME_EXCHANGE on Linux), so there is no moment without the target.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from pipelines.faults import fail_point


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """A temporary path beside ``path`` to write to (``suffix``: for writers that want
    one, e.g. ``.pt2``); on success it is fsynced and renamed over ``path``, on any
    failure removed."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        yield tmp
        _fsync(tmp)
        fail_point("atomic_path.written", path)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync(parent)


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str, data: Any) -> None:
    """Atomically write ``data`` as pretty JSON."""
    write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def read_json(path: str, default: Any = None) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def replace_dir(target: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_dir)`` then put the finished directory at ``target``."""
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(target) + ".tmp-", dir=parent)
    try:
        write(tmp)
        for root, _, files in os.walk(tmp):
            for name in files:
                _fsync(os.path.join(root, name))
        fail_point("replace_dir.filled", target)
        if os.path.exists(target):
            _swap_in(tmp, target)  # tmp now holds the old version
            fail_point("replace_dir.swapped", target)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.rename(tmp, target)
        _fsync(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(new: str, target: str) -> bool:
    """Swap two paths in one step (Linux ``renameat2``); False where the kernel or the file system cannot."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    return renameat2 is not None and renameat2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(target), _RENAME_EXCHANGE) == 0


def _swap_in(new: str, target: str) -> None:
    """Exchange ``new`` and ``target`` atomically; where the kernel or the file system
    cannot, move the old one aside first, and put it back if the second rename fails
    (a kill between the two renames is undone by :func:`repair_leftovers`)."""
    if _exchange(new, target):
        return
    aside = new + ".old"
    os.rename(target, aside)
    fail_point("replace_dir.aside", target)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(aside, target)
        raise
    os.rename(aside, new)


# What a killed atomic_path / replace_dir leaves: ``.NAME.1a2b3c4d.tmp[SUFFIX]`` files,
# ``.NAME.tmp-XXXX`` directories, and ``.NAME.tmp-XXXX.old``: the old NAME moved aside.
_TMP_FILE = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp")
_TMP_DIR = re.compile(r"^\.(?P<name>.+)\.tmp-[A-Za-z0-9_]+(?P<old>\.old)?$")


def repair_leftovers(root: str) -> list[str]:
    """Finish what killed writers left under ``root``: an old directory moved aside
    whose target is missing goes back in place (the kill came between the two renames
    of the fallback swap); every other temporary is removed. Only for a tree no live
    process writes to (the store calls it for runs whose process died). Returns one
    line per action."""
    actions = []
    for folder, dirs, files in os.walk(root):
        for name in list(dirs):
            match = _TMP_DIR.match(name)
            if not match:
                continue
            dirs.remove(name)  # never descend into a temporary
            path, target = os.path.join(folder, name), os.path.join(folder, match["name"])
            if match["old"] and not os.path.exists(target):
                os.rename(path, target)
                actions.append(f"restored {target} from {name}")
            else:
                shutil.rmtree(path, ignore_errors=True)
                actions.append(f"removed {path}")
        for name in files:
            if _TMP_FILE.match(name):
                os.unlink(os.path.join(folder, name))
                actions.append(f"removed {os.path.join(folder, name)}")
    return actions
