"""Instances: OpenVINO's share one compiled model (a stream each); other engines' are separate sessions."""

from __future__ import annotations

import numpy as np
import pytest

from effstack.serve.config import ServingConfig
from effstack.serve.repository import ModelRunner


def test_openvino_instances_share_one_compiled_model(tiny_cnn):
    pytest.importorskip("openvino")
    from effstack.engines.openvino import OpenVinoSession, OpenVinoStream

    config = ServingConfig(model="effstack.testing:tiny_cnn", engine="openvino", instances=2, max_batch=4)
    runner = ModelRunner.build(config, "cnn", model=tiny_cnn)
    try:
        assert [type(s) for s in runner.sessions] == [OpenVinoStream, OpenVinoStream]
        assert [type(s) for s in runner.owners] == [OpenVinoSession]
        owner = runner.owners[0]
        assert all(s.parent is owner for s in runner.sessions)
        settings = runner.model_config()["parameters"]["effstack"]["string_value"]
        assert '"instance": 1' in settings and '"streams": 2' in settings and '"hint": "throughput"' in settings
        x = tiny_cnn.input.example(3, seed=1)
        want = owner.run(x)
        for s in runner.sessions:  # each instance computes the same thing through its own request
            np.testing.assert_allclose(s.run(x), want, rtol=1e-5, atol=1e-6)
    finally:
        import asyncio

        asyncio.run(runner.stop())
    assert owner.compiled is None  # closed with its instances


def test_a_users_streams_knob_keeps_separate_sessions(tiny_cnn):
    pytest.importorskip("openvino")
    from effstack.engines.openvino import OpenVinoSession

    config = ServingConfig(model="effstack.testing:tiny_cnn", engine="openvino", instances=2, max_batch=2,
                           knobs={"streams": 1})
    runner = ModelRunner.build(config, "cnn", model=tiny_cnn)
    try:
        assert [type(s) for s in runner.sessions] == [OpenVinoSession, OpenVinoSession] and runner.owners == []
        assert all(s.settings()["threads"] == 1 for s in runner.sessions)  # the cores split between them
    finally:
        import asyncio

        asyncio.run(runner.stop())


def test_engines_without_sharing_load_one_session_per_instance(tiny_cnn):
    config = ServingConfig(model="effstack.testing:tiny_cnn", engine="null", instances=3, max_batch=2)
    runner = ModelRunner.build(config, "cnn", model=tiny_cnn)
    assert len(runner.sessions) == 3 and runner.owners == [] and len({id(s) for s in runner.sessions}) == 3
