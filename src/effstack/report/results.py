"""Figures you can check from the tree: ``results/<cpu-kind>/<name>.json`` and the README tables made from them.

Every figure the README quotes comes from one of these files, and nowhere else:

- :func:`record` runs a measuring command (a ``benchmarks/`` script, ``effstack demo``, ...) that writes its own
  JSON, and wraps that JSON in an envelope: the exact command, the git commit, when and how long it ran, the
  machine (CPU model, kind, ISA flags, cores), the library versions, and how much CPU *other* processes took
  while it ran. ``python benchmarks/record.py NAME -- COMMAND ... {json} ...`` is its command line.
- :func:`render_readme` regenerates every block of the README that sits between
  ``<!-- results KIND/NAME [VIEW] -->`` and ``<!-- /results -->`` from the file it names (``make results``);
  each block opens with where its figures came from. ``--check`` fails when the README and the files disagree,
  and the test suite runs it, so a table cannot drift from its file.

Renderers (:mod:`.views`) are chosen by ``VIEW`` (default: by what the result holds: ladder rungs, result rows, or
the result's own ``readme`` list of ``{"what", "figure", "spread"}`` lines).

>>> cpu_kind_dir("results", "amd-zen3-avx2").as_posix()
'results/amd-zen3-avx2'
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, ConfigError
from .views import RENDERERS

__all__ = ["SCHEMA", "BLOCK", "RENDERERS", "cpu_kind_dir", "envelope", "record", "read_result", "render_block",
           "render_readme", "add_kind", "main"]

SCHEMA = 1
NAME = r"[\w.+-]+"  # a result's name or a CPU kind: one path part of results/<cpu-kind>/<name>.json
BLOCK = re.compile(rf"(<!-- results (?P<ref>{NAME}/{NAME})(?: (?P<view>[\w-]+))? -->\n)(?P<body>.*?)(<!-- /results -->)",
                   re.S)
MAX_BYTES = 96 * 1024  # results files are committed: small ones only (longer lists are cut, see _trim)
ENVELOPE_KEYS = ("schema", "name", "cpu_kind", "command", "git", "started_at", "wall_s", "machine", "versions",
                 "other_cpu", "result")


def cpu_kind_dir(root: str | os.PathLike[str], kind: str | None = None) -> Path:
    """``root/<kind>`` (default: this machine's :func:`effstack.hardware.cpu_kind`)."""
    if kind is None:
        from ..hardware import cpu_kind

        kind = cpu_kind()
    return Path(root) / kind


def _git(root: Path) -> dict[str, Any]:
    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": run("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def envelope(name: str, command: Sequence[str], result: Any, started: float, wall_s: float,
             other_cpu: dict[str, Any] | None, cwd: str | os.PathLike[str] = ".") -> dict[str, Any]:
    """The document :func:`record` writes: the run's provenance around the command's own ``result``."""
    from ..hardware import cpu_kind, library_versions, machine_info

    return {
        "schema": SCHEMA, "name": name, "cpu_kind": cpu_kind(), "command": shlex.join(command),
        "git": _git(Path(cwd)),
        "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(wall_s, 1), "machine": machine_info(), "versions": library_versions(),
        "other_cpu": other_cpu, "result": result,
    }


def record(name: str, command: Sequence[str], root: str | os.PathLike[str] = "results", kind: str | None = None,
           recorded_as: Sequence[str] | None = None) -> Path:
    """Run ``command`` (``{json}`` in it is replaced by a temporary path the command must write JSON to) and write
    ``root/<kind>/<name>.json``: the command's JSON inside :func:`envelope`. Atomic; nothing is written when the
    command fails.

    Other processes' CPU share is measured over the whole run from ``/proc/stat``, less this process and every
    process it waited for (the command and what it started), so a benchmark's own servers and cell processes
    are not counted as neighbours.

    Raises:
        ConfigError: a bad name, or no ``{json}`` in the command.
        ArtifactError: the command failed or wrote no JSON (the message names it and its exit status).
    """
    from .._files import atomic_write_json
    from ..measure.cpu import read_proc_stat

    if not re.fullmatch(NAME, name):
        raise ConfigError(f"result name must be letters, digits, '.', '_', '+' or '-', got {name!r}")
    if not any("{json}" in a for a in command):
        raise ConfigError("the command must write its JSON to {json}; put {json} where its --json path goes")
    out_dir = cpu_kind_dir(root, kind)
    with tempfile.TemporaryDirectory(prefix="effstack-record-") as tmp:
        raw = Path(tmp) / "result.json"
        argv = [a.replace("{json}", str(raw)) for a in command]
        tree = _TreeCpu()
        stat0, started, t0 = read_proc_stat(), time.time(), time.perf_counter()
        with tree:
            code = subprocess.run(argv).returncode
        wall = time.perf_counter() - t0
        stat1 = read_proc_stat()
        if code != 0:
            raise ArtifactError(f"{shlex.join(argv)} exited with status {code}; nothing recorded for {name!r}")
        try:
            result = json.loads(raw.read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{shlex.join(argv)} wrote no readable JSON to {{json}} ({exc}); "
                                f"nothing recorded for {name!r}") from None
    other = None
    if stat0 is not None and stat1 is not None:
        others_s = max(stat1[0] - stat0[0] - tree.cpu_s, 0.0)
        other = {"other_pct_core": round(100 * others_s / wall, 1),
                 "other_pct_machine": round(100 * others_s / wall / stat1[1], 1), "machine_cores": stat1[1]}
    doc = envelope(name, list(recorded_as or ["python", "benchmarks/record.py", name, "--", *command]),
                   _finite(result), started, wall, other)
    path = out_dir / f"{name}.json"
    text = json.dumps(doc, indent=1, allow_nan=False)
    for keep in (40, 10, 3):
        if len(text) <= MAX_BYTES:
            break
        doc["result"] = _trim(doc["result"], keep)
        text = json.dumps(doc, indent=1, allow_nan=False)
    atomic_write_json(path, json.loads(text))
    return path


class _TreeCpu:
    """CPU seconds of this process and of every process it starts, directly or not, while the block runs.

    A thread reads ``/proc/<pid>/stat`` of this process's descendants every ``interval_s`` and keeps the most CPU
    each was seen with: a server's workers killed with their process group are reaped by init, not by us, so
    ``RUSAGE_CHILDREN`` never hears of them, and they would otherwise count as other processes. A descendant's
    CPU after its last sample (at most ``interval_s`` of it) is missed; this process's own comes from getrusage.
    """

    def __init__(self, interval_s: float = 0.2):
        import threading

        self.interval_s = interval_s
        self._seen: dict[tuple[int, int], float] = {}  # (pid, start time) -> CPU seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="effstack-tree-cpu", daemon=True)
        self.cpu_s = 0.0

    def __enter__(self) -> "_TreeCpu":
        import resource

        ru = resource.getrusage(resource.RUSAGE_SELF)
        self._self0 = ru.ru_utime + ru.ru_stime
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import resource

        self._stop.set()
        self._thread.join()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu_s = ru.ru_utime + ru.ru_stime - self._self0 + sum(self._seen.values())

    def _loop(self) -> None:
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        while not self._stop.wait(self.interval_s):
            self._sample(tick)

    def _sample(self, tick: int) -> None:
        stats: dict[int, tuple[int, int, float]] = {}  # pid -> (parent, start time, CPU seconds)
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                text = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
            stats[int(entry.name)] = (int(fields[1]), int(fields[19]), (int(fields[11]) + int(fields[12])) / tick)
        ours, frontier = set(), [os.getpid()]
        children: dict[int, list[int]] = {}
        for pid, (parent, _, _) in stats.items():
            children.setdefault(parent, []).append(pid)
        while frontier:
            for child in children.get(frontier.pop(), []):
                if child not in ours:
                    ours.add(child)
                    frontier.append(child)
        for pid in ours:
            _, start, cpu = stats[pid]
            key = (pid, start)
            self._seen[key] = max(self._seen.get(key, 0.0), cpu)


def _finite(value: Any) -> Any:
    """NaN and infinities (which strict JSON cannot hold) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _trim(result: Any, keep: int = 40) -> Any:
    """Shorten long lists (raw latencies, every measured cell) so a committed file stays small."""
    if isinstance(result, dict):
        return {k: _trim(v, keep) for k, v in result.items()}
    if isinstance(result, list):
        items = [_trim(v, keep) for v in result[:keep]]
        return items + ([f"... {len(result) - keep} more not kept"] if len(result) > keep else [])
    return result


def read_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a recorded result and check its envelope.

    Raises:
        ArtifactError: missing, unreadable, or without the envelope's keys (the message names the first missing).
    """
    from .jsonio import read_json

    doc = read_json(path, "results file")
    missing = [k for k in ENVELOPE_KEYS if not isinstance(doc, dict) or k not in doc]
    if missing:
        raise ArtifactError(f"{str(path)!r} is not a recorded result (no {missing[0]!r}); "
                            "make it with python benchmarks/record.py NAME -- COMMAND")
    return doc


# --- rendering ------------------------------------------------------------------------------------------------


def _provenance(ref: str, doc: dict[str, Any]) -> str:
    m = doc["machine"]
    other = doc.get("other_cpu") or {}
    share = other.get("other_pct_core")
    busy = "not measured" if share is None else f"{share:.0f}% of a core"
    commit = (doc.get("git") or {}).get("commit") or "?"
    isa = ", ".join(m.get("isa") or []) or "no flags read"
    minutes = doc["wall_s"] / 60
    took = f"{minutes:.1f} min" if minutes >= 1 else f"{doc['wall_s']:.0f} s"
    return (f"From `results/{ref}.json`: {m.get('cpu', '?')} ({doc['cpu_kind']}; {isa}), {m.get('cores', '?')} "
            f"cores, {doc['started_at'][:16].replace('T', ' ')} UTC, code {commit[:7]}, {took}; other processes "
            f"took {busy} meanwhile. Reproduce: `{doc['command']}`")


def render_block(ref: str, view: str | None, root: str | os.PathLike[str]) -> str:
    """The body of one README block: provenance line, then the view of ``root/ref.json``.

    Raises:
        ArtifactError: the file is missing or malformed.
        ConfigError: an unknown view.
    """
    doc = read_result(Path(root) / f"{ref}.json")
    if view is None:
        result = doc["result"]
        view = ("ladder" if isinstance(result, dict) and ("rungs" in result or "ladder" in result)
                else "figures" if isinstance(result, dict) and "readme" in result else "rows")
    if view not in RENDERERS:
        raise ConfigError(f"unknown results view {view!r}; use one of {', '.join(sorted(RENDERERS))}")
    return f"{_provenance(ref, doc)}\n\n{RENDERERS[view](doc)}\n"


def render_readme(text: str, root: str | os.PathLike[str] = "results") -> str:
    """``text`` with every results block regenerated from its file."""
    return BLOCK.sub(lambda m: m.group(1) + render_block(m.group("ref"), m.group("view"), root) + m.group(5), text)


def add_kind(text: str, kind: str, root: str | os.PathLike[str] = "results") -> tuple[str, list[str], list[str]]:
    """``text`` with an (empty) block for every ``root/kind/NAME.json`` the README does not show yet, placed right
    after the last block of the same NAME from another CPU kind, with that kind's views in its order, under the
    line ``The same on `kind`:``. :func:`render_readme` then fills them. A new kind's recordings
    (``make record-cpu``) thus land next to the other kinds' without hand-written markers.

    Returns:
        ``(text, added, unplaced)``: the new text, the refs given a block (``kind/NAME VIEW``), and the names no
        other kind shows, so there is no place to infer (those need a marker written by hand).
    """
    if not re.fullmatch(NAME, kind):
        raise ConfigError(f"CPU kind {kind!r} is not a results folder name; use one like amd-zen4-avx512-vnni-bf16")
    folder = Path(root) / kind
    if not folder.is_dir():
        raise ArtifactError(f"{folder} does not exist; record into it first (make record-cpu)")
    blocks = [(m.group("ref").split("/", 1), m.group("view"), m.end()) for m in BLOCK.finditer(text)]
    shown = {name for (k, name), _, _ in blocks if k == kind}
    inserts: list[tuple[int, str]] = []
    added: list[str] = []
    unplaced: list[str] = []
    for name in sorted(p.stem for p in folder.glob("*.json")):
        if name in shown:
            continue
        others = [(k, view, end) for (k, n), view, end in blocks if n == name]
        if not others:
            unplaced.append(name)
            continue
        last_kind, _, end = others[-1]
        views = list(dict.fromkeys(view for k, view, _ in others if k == last_kind))
        refs = [f"{kind}/{name}" + (f" {view}" if view else "") for view in views]
        inserts.append((end, f"\n\nThe same on `{kind}`:\n\n"
                             + "\n\n".join(f"<!-- results {ref} -->\n<!-- /results -->" for ref in refs)))
        added += refs
    for end, block in sorted(inserts, reverse=True):  # from the end, so earlier offsets stay valid
        text = text[:end] + block + text[end:]
    return text, added, unplaced


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m effstack.report.results [--readme README.md] [--root results] [--check | --add-kind KIND]``."""
    import argparse

    from .._files import atomic_write_text

    p = argparse.ArgumentParser(prog="python -m effstack.report.results",
                                description="Regenerate the README's results blocks from results/<cpu-kind>/*.json.")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--root", default="results")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if the README differs from what the files give")
    mode.add_argument("--add-kind", metavar="KIND",
                      help="first give every results/KIND/*.json the README lacks a block, after the same name's "
                           "block from another kind (make record-cpu does this for a new CPU kind)")
    args = p.parse_args(argv)
    readme = Path(args.readme)
    try:
        text = original = readme.read_text()
        if args.add_kind:
            text, added, unplaced = add_kind(text, args.add_kind, args.root)
            print(f"{readme}: added {len(added)} block(s) for {args.add_kind}: {', '.join(added) or 'none'}")
            for name in unplaced:
                print(f"{readme}: no other CPU kind shows {name}, so no place to infer: add "
                      f"<!-- results {args.add_kind}/{name} --> + <!-- /results --> where it belongs",
                      file=sys.stderr)
        new = render_readme(text, args.root)
    except (OSError, ArtifactError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    blocks = len(BLOCK.findall(text))
    if args.check:
        if new != text:
            print(f"{readme} is out of date with {args.root}/: run make results", file=sys.stderr)
            return 1
        print(f"{readme}: {blocks} results blocks match their files")
        return 0
    if new != original:
        atomic_write_text(readme, new)
    print(f"{readme}: {blocks} results blocks regenerated from {args.root}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
