"""Recorded results (results/<cpu-kind>/NAME.json) and the README blocks generated from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from effstack.errors import ArtifactError, ConfigError
from effstack.report import results

ROOT = Path(__file__).resolve().parents[2]
WRITE = "import json, sys; json.dump({'readme': [{'what': 'rate', 'figure': '42/s', 'spread': '40-44'}], " \
        "'nan': float('nan')}, open(sys.argv[1], 'w'))"


def _record(tmp_path, code=WRITE, name="fake"):
    return results.record(name, [sys.executable, "-c", code, "{json}"], root=tmp_path, kind="test-kind")


def test_record_wraps_the_commands_json_with_its_provenance(tmp_path):
    path = _record(tmp_path)
    assert path == tmp_path / "test-kind" / "fake.json"
    doc = results.read_result(path)
    assert set(results.ENVELOPE_KEYS) <= set(doc)
    assert doc["result"]["readme"][0]["figure"] == "42/s" and doc["result"]["nan"] is None  # strict JSON
    assert doc["machine"]["cores"] >= 1 and "numpy" in doc["versions"]
    assert doc["command"].startswith("python benchmarks/record.py fake -- ")
    assert doc["other_cpu"] is None or doc["other_cpu"]["other_pct_core"] >= 0


def test_a_failed_command_records_nothing(tmp_path):
    with pytest.raises(ArtifactError, match="exited with status 3"):
        _record(tmp_path, code="import sys; sys.exit(3)")
    with pytest.raises(ArtifactError, match="no readable JSON"):
        _record(tmp_path, code="print('forgot to write')")
    with pytest.raises(ConfigError, match=r"\{json\}"):
        results.record("x", [sys.executable, "-c", "pass"], root=tmp_path)
    with pytest.raises(ConfigError, match="result name"):
        results.record("../escape", [sys.executable, "{json}"], root=tmp_path)
    assert not any(tmp_path.rglob("*.json"))


def test_readme_blocks_are_regenerated_from_their_files(tmp_path):
    _record(tmp_path)
    text = "intro\n<!-- results test-kind/fake -->\nstale figure 99/s\n<!-- /results -->\nafter\n"
    new = results.render_readme(text, tmp_path)
    assert "stale" not in new and "| rate | 42/s | 40-44 |" in new
    assert "From `results/test-kind/fake.json`" in new and new.startswith("intro\n") and new.endswith("after\n")
    assert results.render_readme(new, tmp_path) == new  # stable
    with pytest.raises(ArtifactError, match="does not exist"):
        results.render_readme(text.replace("fake", "missing"), tmp_path)
    with pytest.raises(ConfigError, match="unknown results view"):
        results.render_readme(text.replace("fake -->", "fake sideways -->"), tmp_path)


def test_check_mode_fails_on_a_readme_that_drifted(tmp_path, capsys):
    _record(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results test-kind/fake -->\n<!-- /results -->\n")
    assert results.main(["--readme", str(readme), "--root", str(tmp_path), "--check"]) == 1
    assert results.main(["--readme", str(readme), "--root", str(tmp_path)]) == 0
    assert results.main(["--readme", str(readme), "--root", str(tmp_path), "--check"]) == 0
    doc = json.loads((tmp_path / "test-kind" / "fake.json").read_text())
    doc["result"]["readme"][0]["figure"] = "43/s"  # the file changed: the README no longer matches
    (tmp_path / "test-kind" / "fake.json").write_text(json.dumps(doc))
    assert results.main(["--readme", str(readme), "--root", str(tmp_path), "--check"]) == 1


def test_a_new_cpu_kinds_files_get_blocks_after_the_same_files_of_another_kind(tmp_path, capsys):
    for kind in ("old-kind", "new-kind"):
        for name in ("fake", "other"):
            results.record(name, [sys.executable, "-c", WRITE, "{json}"], root=tmp_path, kind=kind)
    results.record("novel", [sys.executable, "-c", WRITE, "{json}"], root=tmp_path, kind="new-kind")
    text = ("intro\n<!-- results old-kind/fake figures -->\n<!-- /results -->\n"
            "<!-- results old-kind/fake -->\n<!-- /results -->\nmiddle\n"
            "<!-- results old-kind/other -->\n<!-- /results -->\nend\n")
    new, added, unplaced = results.add_kind(text, "new-kind", tmp_path)
    assert added == ["new-kind/fake figures", "new-kind/fake", "new-kind/other"] and unplaced == ["novel"]
    refs = [m.group("ref") + " " + str(m.group("view")) for m in results.BLOCK.finditer(new)]
    assert refs == ["old-kind/fake figures", "old-kind/fake None", "new-kind/fake figures", "new-kind/fake None",
                    "old-kind/other None", "new-kind/other None"]  # each after its name's last block, views in order
    assert new.count("The same on `new-kind`:") == 2 and "middle" in new and new.endswith("end\n")
    assert results.add_kind(new, "new-kind", tmp_path)[:2] == (new, [])  # a block already there is not added twice

    readme = tmp_path / "README.md"
    readme.write_text(text)
    assert results.main(["--readme", str(readme), "--root", str(tmp_path), "--add-kind", "new-kind"]) == 0
    out = capsys.readouterr()
    assert "added 3 block(s)" in out.out and "no other CPU kind shows novel" in out.err
    assert "From `results/new-kind/other.json`" in readme.read_text()
    assert results.main(["--readme", str(readme), "--root", str(tmp_path), "--check"]) == 0
    before = readme.read_text()
    assert results.main(["--readme", str(readme), "--root", str(tmp_path), "--add-kind", "absent-kind"]) == 2
    assert "absent-kind does not exist" in capsys.readouterr().err and readme.read_text() == before  # untouched
    with pytest.raises(ConfigError, match="not a results folder name"):
        results.add_kind(text, "../up", tmp_path)


def test_an_envelope_missing_a_key_is_refused(tmp_path):
    path = _record(tmp_path)
    doc = json.loads(path.read_text())
    del doc["other_cpu"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="'other_cpu'"):
        results.read_result(path)


def test_the_readme_matches_the_committed_results():
    # every figure block in the README comes from a committed file under results/<cpu-kind>/
    readme = (ROOT / "README.md").read_text()
    blocks = results.BLOCK.findall(readme)
    assert blocks, "the README has no results blocks"
    assert results.render_readme(readme, ROOT / "results") == readme, "README is out of date: run make results"
    for path in (ROOT / "results").glob("*-*/*.json"):
        doc = results.read_result(path)  # the envelope is complete
        assert path.parent.name == doc["cpu_kind"] and path.stat().st_size <= results.MAX_BYTES


def test_a_large_result_is_cut_to_fit_a_committed_file(tmp_path):
    code = "import json, sys; json.dump({'laps': list(range(200000)), 'keep': 1}, open(sys.argv[1], 'w'))"
    path = _record(tmp_path, code=code)
    doc = results.read_result(path)
    assert path.stat().st_size <= results.MAX_BYTES and doc["result"]["keep"] == 1
    assert doc["result"]["laps"][-1].endswith("more not kept")


def test_cpu_of_workers_killed_with_their_server_counts_as_ours(tmp_path):
    # a "server" whose worker burns 1 s of CPU, then the server's whole group is killed: init reaps the worker,
    # so getrusage never sees it; the tree meter must, or the benchmark's own worker counts as a neighbour
    done = tmp_path / "burned"
    (tmp_path / "worker.py").write_text(
        "import pathlib, sys, time\n"
        "while time.process_time() < 1.0:\n    pass\n"
        "pathlib.Path(sys.argv[1]).touch()\ntime.sleep(60)\n")
    (tmp_path / "server.py").write_text(
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, sys.argv[1], sys.argv[2]])\ntime.sleep(60)\n")
    (tmp_path / "bench.py").write_text(
        "import os, pathlib, signal, subprocess, sys, time\n"
        "server, worker, done = sys.argv[1:]\n"
        "p = subprocess.Popen([sys.executable, server, worker, done], start_new_session=True)\n"
        "while not pathlib.Path(done).exists():\n    time.sleep(0.05)\n"
        "time.sleep(0.3)\n"
        "os.killpg(p.pid, signal.SIGKILL)\np.wait()\n")
    tree = results._TreeCpu(interval_s=0.05)
    with tree:
        subprocess.run([sys.executable, str(tmp_path / "bench.py"), str(tmp_path / "server.py"),
                        str(tmp_path / "worker.py"), str(done)], check=True, timeout=60)
    assert tree.cpu_s >= 0.8  # the worker's second of CPU, seen before it was killed
