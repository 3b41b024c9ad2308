"""Atomic writes (a file, several files, a whole folder) and the cache folder."""

from __future__ import annotations

import json
import os

import pytest

from effstack import _files
from effstack._files import atomic_dir, atomic_file, atomic_files, atomic_write_json, atomic_write_text, cache_dir
from effstack.errors import ArtifactError, ConfigError


def test_atomic_file_replaces_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "model.onnx"
    with atomic_file(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".onnx" and tmp.name.startswith(".")
        tmp.write_text("one")
    assert target.read_text() == "one" and target.stat().st_mode & 0o777 == 0o644
    with pytest.raises(RuntimeError), atomic_file(target, durable=True) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "one"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.onnx"]


def test_write_text_and_json_name_the_path_on_failure(tmp_path):
    path = atomic_write_json(tmp_path / "a.json", {"b": 1, "a": [1.5]}, sort_keys=True)
    assert json.loads(path.read_text()) == {"a": [1.5], "b": 1} and path.read_text().endswith("\n")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ArtifactError, match=r"cannot write '.*file/out.txt'"):
        atomic_write_text(blocker / "out.txt", "hi")
    with pytest.raises(ValueError):  # not JSON: nothing is written
        atomic_write_json(tmp_path / "nan.json", float("nan"), allow_nan=False)
    assert not (tmp_path / "nan.json").exists()


def test_atomic_files_moves_the_last_file_last(tmp_path, monkeypatch):
    xml, bin_ = tmp_path / "m.xml", tmp_path / "m.bin"
    moved = []
    real = os.replace
    monkeypatch.setattr(_files.os, "replace", lambda a, b: (moved.append(os.path.basename(b)), real(a, b)))
    with atomic_files([bin_, xml]) as tmp:
        (tmp / "m.xml").write_text("x")
        (tmp / "m.bin").write_text("b")
    assert moved == ["m.bin", "m.xml"] and sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]


def test_atomic_dir_swaps_a_folder_and_puts_the_old_one_back_on_failure(tmp_path, monkeypatch):
    out = tmp_path / "bundle"
    with atomic_dir(out, durable=True) as tmp:
        (tmp / "a.txt").write_text("1")
    assert out.stat().st_mode & 0o777 == 0o755
    with atomic_dir(out) as tmp:  # a second write replaces the whole folder
        (tmp / "b.txt").write_text("2")
    assert [p.name for p in out.iterdir()] == ["b.txt"]
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "c.txt").write_text("3")
        raise RuntimeError("writer failed")
    real = os.replace

    def fail_the_swap(src, dst):
        if ".tmp-" in os.fspath(src):
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(_files.os, "replace", fail_the_swap)
    with pytest.raises(OSError, match="No space"), atomic_dir(out) as tmp:
        (tmp / "d.txt").write_text("4")
    assert [p.name for p in out.iterdir()] == ["b.txt"]  # the previous folder, put back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFSTACK_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and cache_dir("onnx") == tmp_path / "c" / "onnx"
    assert (tmp_path / "c" / "onnx").is_dir()
    assert cache_dir("onnx", override=tmp_path / "mine") == tmp_path / "mine"
    monkeypatch.delenv("EFFSTACK_CACHE")
    assert cache_dir("x", create=False) == _files.Path.home() / ".cache" / "effstack" / "x"
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("EFFSTACK_CACHE", str(tmp_path / "file"))
    with pytest.raises(ConfigError, match="set EFFSTACK_CACHE to a writable folder"):
        cache_dir("onnx")
