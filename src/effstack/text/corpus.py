"""Offline text: the built-in corpus (Python's own reference prose and docstrings) or a user's files.

No text data set is downloadable here, and none is worth installing: the standard library ships 465k
characters of reference prose (``pydoc_data.topics``, the language reference's topics) and its modules carry
docstrings. :func:`builtin_corpus` cuts both into paragraph-sized texts, deterministically for one Python
version; its :attr:`TextCorpus.fingerprint` (a hash of every text, in order) and ``source`` (which Python)
go into results, so a figure says exactly what text it came from.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import platform
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["TextCorpus", "builtin_corpus", "load_texts", "split"]

# standard-library modules whose docstrings join the built-in corpus (stable, prose-rich, importable anywhere)
_STDLIB = ("abc", "argparse", "asyncio", "base64", "bisect", "calendar", "collections", "contextlib", "csv",
           "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fractions", "functools", "glob",
           "gzip", "hashlib", "heapq", "hmac", "html", "http.client", "http.server", "imaplib", "inspect",
           "ipaddress", "itertools", "json", "logging", "mailbox", "math", "mimetypes", "multiprocessing",
           "operator", "os", "pathlib", "pickle", "pprint", "queue", "random", "re", "sched", "secrets",
           "selectors", "shelve", "shlex", "shutil", "smtplib", "socket", "sqlite3", "statistics", "string",
           "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace",
           "typing", "unittest", "urllib.parse", "urllib.request", "uuid", "warnings", "weakref", "zipfile")


@dataclass(frozen=True)
class TextCorpus:
    """Texts plus where they came from and a hash of them all (results quote both)."""

    texts: tuple[str, ...]
    source: str

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for t in self.texts:
            h.update(t.encode("utf-8"))
            h.update(b"\0")
        return h.hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.texts)

    def describe(self) -> dict[str, object]:
        return {"source": self.source, "texts": len(self.texts), "fingerprint": self.fingerprint}


def _paragraphs(text: str) -> Iterator[str]:
    for block in re.split(r"\n\s*\n", text):
        flat = " ".join(block.split())
        if flat:
            yield flat


def _usable(text: str, min_chars: int, max_chars: int) -> bool:
    if not min_chars <= len(text) <= max_chars:
        return False
    letters = sum(c.isalpha() for c in text)
    return letters >= 0.6 * len(text) and not text.startswith((">>>", "...", "*", "-", "="))


def builtin_corpus(min_chars: int = 40, max_chars: int = 600, limit: int | None = None) -> TextCorpus:
    """Paragraphs of the standard library's reference topics and module docstrings, de-duplicated, in a
    fixed order; ``limit`` keeps the first ``limit``. The same texts on every machine with the same Python."""
    import pydoc_data.topics as topics

    seen: set[str] = set()
    out: list[str] = []

    def add(text: str) -> None:
        for p in _paragraphs(text):
            if p not in seen and _usable(p, min_chars, max_chars):
                seen.add(p)
                out.append(p)

    for key in sorted(topics.topics):
        add(topics.topics[key])
    for name in _STDLIB:
        try:
            mod = importlib.import_module(name)
        except ImportError:  # a build without sqlite3 or the like: skip it, the fingerprint shows the change
            continue
        add(inspect.getdoc(mod) or "")
        for attr in sorted(vars(mod)):
            obj = getattr(mod, attr, None)
            if attr.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            add(inspect.getdoc(obj) or "")
    texts = tuple(out[:limit] if limit else out)
    return TextCorpus(texts, f"python {platform.python_version()} stdlib: pydoc topics + docstrings")


def load_texts(path: str | Path, min_chars: int = 1, max_chars: int = 10_000) -> TextCorpus:
    """Texts from a user's file or folder: ``.txt``/``.md`` (one text per paragraph), ``.jsonl`` (a ``"text"``
    field per line), or a folder of those files (read in sorted order).

    Raises:
        InputError: the path does not exist, holds no such file, or yields no text.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise InputError(f"text data {str(root)!r} does not exist; pass a .txt, .md or .jsonl file or a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix in (".txt", ".md", ".jsonl")) if root.is_dir() else [root]
    if not files:
        raise InputError(f"{str(root)!r} holds no .txt, .md or .jsonl file")
    texts: list[str] = []
    for f in files:
        raw = f.read_text(encoding="utf-8", errors="replace")
        if f.suffix == ".jsonl":
            for n, line in enumerate(raw.splitlines(), 1):
                if line.strip():
                    try:
                        texts.append(str(json.loads(line)["text"]))
                    except (ValueError, KeyError, TypeError):
                        raise InputError(f"{f}:{n} is not a JSON object with a \"text\" field") from None
        else:
            texts.extend(_paragraphs(raw))
    texts = [t for t in texts if min_chars <= len(t) <= max_chars]
    if not texts:
        raise InputError(f"{str(root)!r} holds no text between {min_chars} and {max_chars} characters")
    return TextCorpus(tuple(texts), str(root))


def split(corpus: TextCorpus, eval_count: int, seed: int = 0) -> tuple[TextCorpus, TextCorpus]:
    """(train, eval): ``eval_count`` texts drawn at random (fixed seed) for evaluation, the rest for training."""
    if not 0 < eval_count < len(corpus):
        raise InputError(f"cannot hold out {eval_count} of {len(corpus)} texts; ask for fewer")
    order = np.random.default_rng(seed).permutation(len(corpus))
    held = set(order[:eval_count].tolist())
    train = tuple(t for i, t in enumerate(corpus.texts) if i not in held)
    evals = tuple(corpus.texts[i] for i in sorted(held))
    return TextCorpus(train, corpus.source + " (train)"), TextCorpus(evals, corpus.source + " (eval)")
