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


def test_auto_instances_keep_the_layout_predicted_fastest(tiny_cnn, monkeypatch):
    predicted = {1: 10.0, 2: 10.3, 4: 12.0}  # 2 is within the margin of 1: not worth a second session; 4 is
    closed = []
    monkeypatch.setattr(ModelRunner, "sustainable_rate", lambda self: predicted[len(self.sessions)])
    real_close = ModelRunner.close
    monkeypatch.setattr(ModelRunner, "close", lambda self: (closed.append(len(self.sessions)), real_close(self)))
    config = ServingConfig(model="effstack.testing:tiny_cnn", engine="null", instances="auto", threads=4,
                           max_batch=2, latency_budget_ms=50)
    runner = ModelRunner.build(config, "cnn", model=tiny_cnn)
    assert len(runner.sessions) == 4 and runner.config.instances == 4 and runner.policy.instances == 4
    assert runner.layouts == predicted and sorted(closed) == [1, 2]  # the others were closed
    assert '"layouts_tried": {"1": 10.0, "2": 10.3, "4": 12.0}' in (
        runner.model_config()["parameters"]["effstack"]["string_value"])


def test_auto_instances_break_near_ties_by_the_smaller_batch_cap_then_fewer_instances(tiny_cnn, monkeypatch):
    predicted = {1: 10.0, 2: 10.2, 4: 10.4}  # all within 5% of the best: equally good, as far as we can tell
    seen = {}

    def rate(self):
        seen[len(self.sessions)] = self.policy.batch_cap
        return predicted[len(self.sessions)]

    monkeypatch.setattr(ModelRunner, "sustainable_rate", rate)
    config = ServingConfig(model="effstack.testing:tiny_cnn", engine="null", instances="auto", threads=4,
                           max_batch=2, latency_budget_ms=50)
    runner = ModelRunner.build(config, "cnn", model=tiny_cnn)
    assert len(runner.sessions) == min(seen, key=lambda n: (seen[n], n))


class _CapPolicy:
    """A runner's batching policy with its batch cap replaced (everything else read through)."""

    def __init__(self, policy, batch_cap: int):
        self._policy, self.batch_cap = policy, batch_cap

    def __getattr__(self, name):
        return getattr(self._policy, name)


def _documented_choice(rates: dict[int, float], caps: dict[int, int]) -> int:
    """The rule as documented, written out independently: the best predicted rate; every layout within 5% of
    it (AUTO_MARGIN) counts as equal, and among those the smallest batch cap wins, then the fewest instances."""
    top = max(rates.values())
    near = [n for n in rates if rates[n] * 1.05 >= top]
    smallest_cap = min(caps[n] for n in near)
    return min(n for n in near if caps[n] == smallest_cap)


@pytest.mark.parametrize("rates, caps, chosen", [
    # the biggest layout is clearly fastest: chosen, whatever its batch cap
    ({1: 10.0, 2: 13.0, 4: 20.0}, {1: 1, 2: 1, 4: 4}, 4),
    # the fastest is the smallest layout: chosen, although the others have more instances
    ({1: 20.0, 2: 10.0, 4: 12.0}, {1: 4, 2: 1, 4: 1}, 1),
    # 4 is within 5% of 2 with the same cap: the tie goes to fewer instances, so the biggest is NOT chosen
    ({1: 10.0, 2: 20.0, 4: 19.5}, {1: 2, 2: 2, 4: 2}, 2),
    # ... unless the near-equal bigger layout has the smaller batch cap: the cap decides before the count
    ({1: 10.0, 2: 20.0, 4: 19.5}, {1: 1, 2: 4, 4: 2}, 4),
    # a smaller cap outside the margin does not count: 1 is 9% below the best
    ({1: 9.5, 2: 10.0, 4: 10.4}, {1: 1, 2: 3, 4: 3}, 2),
    # every layout within the margin: the smallest cap, then the fewest instances among those with it
    ({1: 10.0, 2: 10.2, 4: 10.4, 8: 10.1}, {1: 3, 2: 2, 4: 2, 8: 1}, 8),
    ({1: 10.0, 2: 10.2, 4: 10.4, 8: 10.1}, {1: 3, 2: 2, 4: 2, 8: 2}, 2),
    # the best rate wins by more than the margin: the biggest layout, although its cap is the largest
    ({1: 10.0, 2: 10.2, 4: 10.4, 8: 12.0}, {1: 1, 2: 1, 4: 1, 8: 8}, 8),
])
def test_auto_instances_choose_the_layout_the_documented_rule_picks(rates, caps, chosen, tiny_cnn, monkeypatch):
    from effstack.serve import instances

    assert instances.AUTO_MARGIN == 0.05  # the margin the README and the docstring promise
    assert _documented_choice(rates, caps) == chosen  # the case is worked out right
    closed = []
    monkeypatch.setattr(ModelRunner, "sustainable_rate", lambda self: rates[len(self.sessions)])
    real_init, real_close = ModelRunner.__init__, ModelRunner.close

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.policy = _CapPolicy(self.policy, caps[len(self.sessions)])

    monkeypatch.setattr(ModelRunner, "__init__", init)
    monkeypatch.setattr(ModelRunner, "close", lambda self: (closed.append(len(self.sessions)), real_close(self)))
    config = ServingConfig(model="effstack.testing:tiny_cnn", engine="null", instances="auto", threads=max(rates),
                           max_batch=2, latency_budget_ms=50)
    runner = ModelRunner.build(config, "cnn", model=tiny_cnn)
    assert len(runner.sessions) == chosen and runner.config.instances == chosen
    assert runner.policy.batch_cap == caps[chosen] and runner.policy.instances == chosen
    assert runner.layouts == rates  # every layout was built and predicted
    assert sorted(closed) == sorted(n for n in rates if n != chosen)  # the others were closed, the chosen one not


def test_auto_instances_judge_each_layout_by_simulating_its_curve(tiny_cnn):
    config = ServingConfig(model="effstack.testing:tiny_cnn", engine="null", instances="auto", threads=2,
                           max_batch=2, latency_budget_ms=50)
    runner = ModelRunner.build(config, "cnn", model=tiny_cnn)
    assert set(runner.layouts) == {1, 2} and all(r > 0 for r in runner.layouts.values())
    assert len(runner.sessions) in (1, 2)
    no_budget = ModelRunner.build(ServingConfig(model="effstack.testing:tiny_cnn", engine="null", instances=2,
                                                max_batch=2), "cnn", model=tiny_cnn)
    assert no_budget.sustainable_rate() > 0 and no_budget.layouts == {}  # the curve's throughput, nothing tried


def test_layouts_are_simulated_on_the_warm_up_medians_not_the_p99(tiny_cnn, monkeypatch):
    import effstack.serve.simulate as sim
    from effstack.serve.instances import MIN_SIGMA, Curve

    config = ServingConfig(model="effstack.testing:tiny_cnn", engine="null", instances=1, max_batch=2,
                           latency_budget_ms=50)
    runner = ModelRunner.build(config, "cnn", model=tiny_cnn)
    m = runner.measured
    assert set(m.p99_s) == set(m.median_s) == set(m.sigma) == {1, 2}
    assert all(m.median_s[b] <= m.p99_s[b] for b in m.p99_s) and runner.curve_s == m.p99_s
    info = runner.model_config()["parameters"]["effstack"]["string_value"]
    assert '"median_curve_ms"' in info and '"sigma_log"' in info
    # a curve whose p99 (one stray run) is twice its median: the prediction follows the median
    runner.measured = Curve(p99_s={1: 0.020, 2: 0.030}, median_s={1: 0.010, 2: 0.015}, sigma={1: 0.0, 2: 0.3})
    seen = {}
    monkeypatch.setattr(sim, "max_rate", lambda policy, curve, n, jitter: seen.update(curve=curve, jitter=jitter)
                        or 1.0)
    assert runner.sustainable_rate() == 1.0
    assert seen == {"curve": {1: 0.010, 2: 0.015}, "jitter": {1: MIN_SIGMA, 2: 0.3}}
    runner.measured = None  # a runner built on a given curve simulates that curve
    runner.sustainable_rate()
    assert seen["curve"] == runner.curve_s


def test_auto_instances_in_the_config_and_the_command_line(capsys):
    from effstack.cli.main import main
    from effstack.errors import ConfigError

    assert ServingConfig(instances="auto", threads=6).instance_layouts() == [1, 2, 4]
    assert ServingConfig(instances=3).instance_layouts() == [3]
    with pytest.raises(ConfigError, match="or 'auto'"):
        ServingConfig(instances="many")
    with pytest.raises(ConfigError, match="one instance layout"):
        ServingConfig(instances="auto", latency_budget_ms=50, latency_curve_ms={1: 5.0})
    assert main(["serve", "effstack.testing:tiny_cnn", "--instances", "auto", "--print-config"]) == 0
    assert '"instances": "auto"' in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["serve", "effstack.testing:tiny_cnn", "--instances", "0", "--print-config"])
    assert exc.value.code == 2 and "positive number of instances or 'auto'" in capsys.readouterr().err


def test_one_openvino_instance_runs_lone_samples_on_a_session_loaded_for_batch_1(tiny_cnn):
    pytest.importorskip("openvino")
    from effstack.engines.openvino import OpenVinoSession
    from effstack.serve.instances import BySize

    # THROUGHPUT at max batch 4 makes a stream per thread: a lone sample would run on one of the two threads
    config = ServingConfig(model="effstack.testing:tiny_cnn", engine="openvino", instances=1, threads=2, max_batch=4)
    runner = ModelRunner.build(config, "cnn", model=tiny_cnn)
    try:
        (inst,) = runner.sessions
        assert isinstance(inst, BySize) and isinstance(inst.single, OpenVinoSession)
        settings = inst.settings()
        assert settings["hint"] == "throughput" and settings["batch1"]["hint"] == "latency"
        assert settings["batch1"]["streams"] == 1 and settings["batch1"]["threads"] == 2
        calls = []
        inst._single, inst._batched = (lambda x: calls.append(("single", len(x))) or inst.single.run(x),
                                       lambda x: calls.append(("batched", len(x))) or inst.batched.run(x))
        x = tiny_cnn.input.example(3, seed=1)
        np.testing.assert_allclose(inst.run(x[:1]), inst.batched.run(x[:1]), rtol=1e-4, atol=1e-5)
        inst.run(x)
        assert calls == [("single", 1), ("batched", 3)]
    finally:
        import asyncio

        asyncio.run(runner.stop())
    assert inst.single.compiled is None and inst.batched.compiled is None  # both closed


@pytest.mark.parametrize("settings", [{"threads": 1}, {"knobs": {"hint": "latency"}}, {"max_batch": 1}],
                         ids=["one thread", "a users hint", "max batch 1"])
def test_one_session_serves_every_size_where_batch_1_would_be_set_up_alike(tiny_cnn, settings):
    pytest.importorskip("openvino")
    from effstack.engines.openvino import OpenVinoSession

    config = ServingConfig(model="effstack.testing:tiny_cnn", engine="openvino", instances=1,
                           **{"threads": 2, "max_batch": 4, **settings})
    runner = ModelRunner.build(config, "cnn", model=tiny_cnn)
    try:
        assert [type(s) for s in runner.sessions] == [OpenVinoSession]
    finally:
        import asyncio

        asyncio.run(runner.stop())


def test_served_onnxruntime_threads_do_not_spin_unless_the_user_asks(tiny_cnn):
    pytest.importorskip("onnxruntime")
    from effstack.engines import get_engine

    assert get_engine("null").serving_knobs() == {}
    config = ServingConfig(model="effstack.testing:tiny_cnn", engine="onnxruntime", instances=2, max_batch=2)
    runner = ModelRunner.build(config, "cnn", model=tiny_cnn)
    assert [s.settings()["spinning"] for s in runner.sessions] == [False, False]
    runner.close()
    mine = ModelRunner.build(ServingConfig(model="effstack.testing:tiny_cnn", engine="onnxruntime", max_batch=2,
                                           knobs={"spinning": True}), "cnn", model=tiny_cnn)
    assert mine.sessions[0].settings()["spinning"] is True  # the user's knob wins
    mine.close()
