"""Bundles for the deploy tests: a tiny MLP laddered on ONNX Runtime with made-up measurements (no timing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from effstack.deploy.cluster import loopback_env
from effstack.testing.bundles import write_test_bundle

loopback_env()  # before any test module imports ray (pytest.importorskip("ray.serve") does)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    return write_test_bundle(tmp_path_factory.mktemp("bundle") / "tiny_mlp")


@pytest.fixture(scope="session")
def cnn_bundle(tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    return write_test_bundle(tmp_path_factory.mktemp("bundle") / "tiny_cnn", "effstack.testing:tiny_cnn")
