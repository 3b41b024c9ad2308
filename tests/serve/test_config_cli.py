"""ServingConfig (round trip, precedence), repository folders, and the serve/loadtest commands."""

from __future__ import annotations

import json

import pytest

from effstack.errors import ConfigError
from effstack.serve.config import ServingConfig, parse_duration_ms


def test_config_round_trip_and_precedence(tmp_path):
    c = ServingConfig("effstack.testing:tiny_mlp", engine="null", max_batch=4, latency_budget_ms=50,
                      latency_curve_ms={1: 2.0, 4: 5.0}, instances=2)
    assert ServingConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.policy().latency_curve == {1: 0.002, 4: 0.005} and c.policy().instances == 2
    assert c.merged({"max_batch": 16, "engine": None}).max_batch == 16  # None: the flag was not given
    with pytest.raises(ConfigError, match="unknown serving settings bogus"):
        ServingConfig.from_dict({"bogus": 1})
    with pytest.raises(ConfigError, match="max batch"):
        ServingConfig(max_batch=0)
    with pytest.raises(ConfigError, match="max batch"):
        ServingConfig().merged({"max_batch": "many"})
    with pytest.raises(ConfigError, match="latency budget"):
        ServingConfig(latency_budget_ms=-1)


def test_durations():
    assert parse_duration_ms("50ms") == 50.0 and parse_duration_ms("0.05s") == 50.0
    assert parse_duration_ms("500us") == 0.5 and parse_duration_ms("7") == 7.0
    with pytest.raises(ConfigError, match="50ms"):
        parse_duration_ms("fast")


def test_repository_folder_file_and_spec(tmp_path):
    from effstack.serve.repository import resolve_target

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "serving.json").write_text(json.dumps(
        {"model": {"source": "effstack.testing:tiny_mlp"}, "engine": "null", "max_batch": 2}))
    (tmp_path / "b.onnx").write_bytes(b"")  # listed by name; loading happens later
    (tmp_path / "notes.txt").write_text("ignored")
    configs = resolve_target(str(tmp_path), {"max_batch": 6, "engine": None})
    assert sorted(configs) == ["a", "b"]
    assert configs["a"].max_batch == 6 and configs["a"].engine == "null"  # flag > file
    assert configs["b"].model.source.endswith("b.onnx")
    single = resolve_target(str(tmp_path / "a" / "serving.json"), {})
    assert list(single) == ["tiny_mlp"] and single["tiny_mlp"].max_batch == 2
    assert list(resolve_target("effstack.testing:tiny_mlp", {}, name="mine")) == ["mine"]
    assert list(resolve_target("resnet50", {})) == ["resnet50"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no models"):
        resolve_target(str(tmp_path / "empty"), {})


def test_serve_print_config_and_one_line_errors(capsys):
    from effstack.cli.main import main

    assert main(["serve", "effstack.testing:tiny_mlp", "--engine", "null", "--latency-budget", "20ms",
                 "--max-batch", "4", "--print-config"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tiny_mlp"]["latency_budget_ms"] == 20.0 and doc["tiny_mlp"]["max_batch"] == 4
    assert main(["serve", "effstack.testing:tiny_mlp", "--engine", "nul", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Did you mean: null" in err[0]
    assert main(["serve", "effstack.testing:tiny_mlp", "--latency-budget", "soon", "--print-config"]) == 2


def test_loadtest_against_a_server(server_factory, tiny_mlp_model, tmp_path, capsys):
    """A short, bounded open-loop run (at most 60 requests) and a --find-max of two short steps."""
    from effstack.cli.main import main
    from effstack.serve.config import ServingConfig
    from effstack.serve.repository import ModelRunner

    runner = ModelRunner.build(ServingConfig("effstack.testing:tiny_mlp", name="m", engine="null", max_batch=4),
                               "m", model=tiny_mlp_model)
    srv = server_factory(runners={"m": runner})
    out = tmp_path / "lt.json"
    assert main(["loadtest", srv.url, "--rate", "100", "--duration", "0.5", "--max-queries", "60",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "p99" in text and "errors none" in text
    doc = json.loads(out.read_text())
    step = doc["loadtest"][0]
    assert step["ok"] == step["sent"] == 50 and step["incomplete"] == 0  # exactly rate x duration
    assert step["latency"]["min_ms"] >= 0  # nothing is sent before its scheduled time
    assert 0 <= step["late_p99_ms"] < 10_000 and doc["rows"][0]["settings"]["late_p99_ms"] == round(
        step["late_p99_ms"], 3)  # the client's own lateness is reported, since latency counts it
    assert doc["rows"][0]["scenario"] == "server" and doc["rows"][0]["p99_ms"] > 0
    assert main(["loadtest", srv.url + "/v2/models/m", "--json-tensors", "--batch", "2", "--find-max",
                 "--budget-ms", "10000", "--rate", "50", "--duration", "0.3", "--max-steps", "2"]) == 0
    assert "highest rate within p99" in capsys.readouterr().out
    assert main(["loadtest", srv.url, "--find-max"]) == 2  # needs --budget-ms
    assert main(["loadtest", srv.url, "--model", "nope", "--duration", "0.1"]) == 2


@pytest.mark.timeout(180)  # LoadGen waits for every query; a lost answer must fail the test, not stall CI
def test_mlperf_loadgen_server_and_offline(server_factory, tiny_mlp_model, tmp_path, capsys):
    """The real LoadGen, short and small: against an engine session and against the server's URL."""
    pytest.importorskip("mlperf_loadgen")
    from effstack.cli.main import main
    from effstack.engines import SessionOptions, get_engine
    from effstack.serve.config import ServingConfig
    from effstack.serve.mlperf import SessionSUT, run_loadgen
    from effstack.serve.repository import ModelRunner

    session = get_engine("null").load(tiny_mlp_model, SessionOptions())
    r = run_loadgen(SessionSUT(session, tiny_mlp_model.input.example(1), batch=4), "offline", target_qps=500,
                    latency_ms=50, duration_s=0.2, log_dir=tmp_path / "offline", min_queries=32)
    assert r.errors == 0 and float(r.summary["Samples per second"]) > 0
    assert (tmp_path / "offline" / "mlperf_log_detail.txt").is_file()
    runner = ModelRunner.build(ServingConfig("effstack.testing:tiny_mlp", name="m", engine="null", max_batch=4),
                               "m", model=tiny_mlp_model)
    srv = server_factory(runners={"m": runner})
    out = tmp_path / "lg.json"
    assert main(["loadtest", srv.url, "--loadgen", "server", "--rate", "100", "--budget-ms", "100",
                 "--duration", "0.3", "--logs", str(tmp_path / "server"), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["errors"] == 0 and float(doc["summary"]["Completed samples per second"]) > 0
    assert "99.00 percentile latency" in capsys.readouterr().out
