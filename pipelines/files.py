"""Write-then-rename, so a killed process never leaves a half-written artifact that
looks complete: readers see the old version or the new one, nothing between."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Callable


def replace_dir(target: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_dir)`` then move the finished directory to ``target``."""
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(target) + ".tmp-", dir=parent)
    try:
        write(tmp)
        old = None
        if os.path.exists(target):
            old = tmp + ".old"
            os.rename(target, old)
        os.rename(tmp, target)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str, data: Any) -> None:
    """Atomically write ``data`` as pretty JSON."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: str, default: Any = None) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default
