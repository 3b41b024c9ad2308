"""``make record-cpu`` (benchmarks/record_cpu.sh): an unknown recording is refused before any recording starts,
and every recording it makes is one the README quotes, with the same arguments."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "record_cpu.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_an_unknown_recording_is_refused_in_one_line_before_any_runs():
    r = subprocess.run(["bash", str(SCRIPT), "photo_search", "bogus"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PY": sys.executable}, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "no recording named 'bogus'" in r.stderr
    assert "==" not in r.stdout  # photo_search, named first, did not start


def test_each_recording_runs_the_command_a_results_file_was_recorded_with():
    """The script's arguments for each name match the newest recorded file of that name (its temporary
    ``--out`` folder and the interpreter aside), so a new CPU kind's files are comparable with the others'."""
    script = SCRIPT.read_text().replace("\\\n", " ")
    names = re.search(r'known=" ([\w ]+) "', script).group(1).split()
    assert names == ["engine_overhead", "photo_search", "demo", "ladder_lite2"]
    for name in names:
        line = re.search(rf"^\s*{name}\)\s*(?:record {name} )?(.*?);;", script, flags=re.M | re.S).group(1)
        ours = _normal(line.replace('"$PY"', "python").replace('"$out/demo"', "OUT"))
        files = sorted(ROOT.glob(f"results/*/{name}.json"), key=lambda p: json.loads(p.read_text())["started_at"])
        assert files, f"no results file for {name}"
        recorded = json.loads(files[-1].read_text())["command"].split(" -- ", 1)[1]
        assert ours == _normal(re.sub(r"--out \S+", "--out OUT", recorded)), name


def _normal(command: str) -> str:
    return " ".join(shlex.split(command))
