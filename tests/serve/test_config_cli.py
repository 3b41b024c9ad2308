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


# (field, the smallest value accepted, values rejected): integers count from 1 (bool and float are not integers);
# durations in ms are finite, non-negative, and the budget and the timeout strictly positive
INTEGER_FIELDS = ["max_batch", "instances", "queue_capacity", "priority_levels", "threads"]
BOUNDS = [
    *[(f, 1, [0, -1, True, 2.0, "2", None if f != "threads" else 0]) for f in INTEGER_FIELDS],
    ("max_queue_delay_ms", 0, [-1e-9, -1, float("inf"), float("nan"), True, "2ms"]),
    ("inline_below_ms", 0, [-1e-9, -1, float("inf"), float("nan"), True, None]),
    ("latency_budget_ms", 1e-9, [0, 0.0, -1, float("inf"), float("nan"), True, "50ms"]),
    ("timeout_ms", 1e-9, [0, 0.0, -5, float("inf"), float("nan"), False]),
]
MESSAGE = {f: f"{f.replace('_', ' ')} must be an integer of at least 1" for f in INTEGER_FIELDS}
MESSAGE.update({f: f"{f.replace('_', ' ')} must be a positive number of milliseconds"
                for f in ("max_queue_delay_ms", "inline_below_ms", "latency_budget_ms", "timeout_ms")})


@pytest.mark.parametrize("field, lowest, bad", BOUNDS, ids=[b[0] for b in BOUNDS])
def test_serving_config_bounds(field, lowest, bad):
    """Each value out of range is refused with its field named; the boundary value and the ones above are kept."""
    for value in bad:
        with pytest.raises(ConfigError, match=MESSAGE[field]) as info:
            ServingConfig(**{field: value})
        assert repr(value) in str(info.value)  # the message shows what was given
        with pytest.raises(ConfigError, match=MESSAGE[field]):  # through a serving.json and a flag too
            ServingConfig.from_dict({field: value})
        if value is not None:  # merged() takes None as "this flag was not given"
            with pytest.raises(ConfigError, match=MESSAGE[field]):
                ServingConfig().merged({field: value})
    for value in (lowest, lowest * 2 if lowest else 1e-9, 1000):
        c = ServingConfig(**{field: value})
        assert getattr(c, field) == value
        assert ServingConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
        assert ServingConfig().merged({field: value}) == c


def test_serving_config_optional_and_named_bounds():
    # None means "not set" for the optional settings (threads: all cores; the durations: their defaults)
    for field in ("threads", "max_queue_delay_ms", "latency_budget_ms", "timeout_ms"):
        assert getattr(ServingConfig(**{field: None}), field) is None
    assert ServingConfig(instances="auto").instances == "auto"
    for bad in ("Auto", "many", ""):
        with pytest.raises(ConfigError, match=r"instances must be an integer of at least 1 or 'auto'"):
            ServingConfig(instances=bad)
    # model names: 1-128 of letters, digits, '_', '.' and '-'
    for good in ("a", "A" * 128, "resnet-50_v1.5"):
        assert ServingConfig(name=good).name == good
    for bad in ("", "A" * 129, "two words", "x/y", "ü"):
        with pytest.raises(ConfigError, match="model name must be 1-128"):
            ServingConfig(name=bad)
    with pytest.raises(ConfigError, match="precision must be one of"):
        ServingConfig(precision="int4")
    for precision in ("fp32", "bf16", "fp16", "int8"):
        assert ServingConfig(precision=precision).precision == precision
    with pytest.raises(ConfigError, match="engine must be an engine name"):
        ServingConfig(engine="")
    with pytest.raises(ConfigError, match="knobs must be a mapping"):
        ServingConfig(knobs=["streams=1"])
    with pytest.raises(ConfigError, match="latency curve must map batch sizes"):
        ServingConfig(latency_curve_ms={"one": 2.0})
    # the policy built from a config checks its own bounds (the curve's batches count from 1)
    with pytest.raises(ConfigError, match="latency curve must map batch >= 1"):
        ServingConfig(latency_budget_ms=50, latency_curve_ms={0: 2.0}).policy()
    assert ServingConfig(latency_budget_ms=50, latency_curve_ms={1: 0.0}).policy().batch_cap >= 1
    # the admission horizon reaches the policy, and survives the serving.json round trip
    deep = ServingConfig(latency_budget_ms=50, latency_curve_ms={1: 4.0}, admission_horizon=2)
    assert deep.policy().admission_limit == 24 and deep.policy().admission_horizon == 2.0
    assert ServingConfig.from_dict(json.loads(json.dumps(deep.to_dict()))) == deep
    for bad in (True, "2", float("nan"), 0):
        with pytest.raises(ConfigError, match="admission horizon must be"):
            ServingConfig(admission_horizon=bad)


def test_durations_bounds():
    assert parse_duration_ms("0") == 0.0 and parse_duration_ms("0ms") == 0.0 and parse_duration_ms(0) == 0.0
    assert parse_duration_ms("1us") == pytest.approx(1e-3) and parse_duration_ms(".5s") == 500.0
    assert parse_duration_ms("2 ms") == 2.0 and parse_duration_ms("250µs") == 0.25
    for bad in ("-1ms", "-1", "1e3ms", "ms", "", "1 h", "1m"):
        with pytest.raises(ConfigError, match="a duration must look like 50ms"):
            parse_duration_ms(bad)
    with pytest.raises(ConfigError, match="must not be negative"):
        parse_duration_ms(-0.5)


# (flag, value refused, the message's words; value accepted at the boundary, the config field and its value)
CLI_BOUNDS = [
    ("--max-batch", "0", "max batch must be an integer of at least 1", "1", "max_batch", 1),
    ("--threads", "0", "threads must be an integer of at least 1", "1", "threads", 1),
    ("--queue-capacity", "0", "queue capacity must be an integer of at least 1", "1", "queue_capacity", 1),
    ("--priority-levels", "0", "priority levels must be an integer of at least 1", "1", "priority_levels", 1),
    ("--latency-budget", "0ms", "latency budget ms must be a positive number of milliseconds", "1us",
     "latency_budget_ms", 1e-3),
    ("--timeout", "0", "timeout ms must be a positive number of milliseconds", "1us", "timeout_ms", 1e-3),
    ("--max-queue-delay", "-1ms", "a duration must look like 50ms", "0ms", "max_queue_delay_ms", 0.0),
    ("--inline-below", "-0.1ms", "a duration must look like 50ms", "0", "inline_below_ms", 0.0),
    ("--latency-budget", "soon", "a duration must look like 50ms", "0.05s", "latency_budget_ms", 50.0),
    ("--admission-horizon", "0.9", "admission horizon must be a number of budgets within 1..10", "1",
     "admission_horizon", 1.0),
    ("--admission-horizon", "10.5", "admission horizon must be a number of budgets within 1..10", "10",
     "admission_horizon", 10.0),
]


@pytest.mark.parametrize("flag, bad, message, good, field, value", CLI_BOUNDS,
                         ids=[f"{c[0]}={c[1]}" for c in CLI_BOUNDS])
def test_serve_flags_bounds(flag, bad, message, good, field, value, capsys):
    from effstack.cli.main import main

    base = ["serve", "effstack.testing:tiny_mlp", "--engine", "null", "--print-config"]
    assert main([*base, f"{flag}={bad}"]) == 2  # "=": argparse would read "-1ms" as an option
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err and err.startswith("effstack: error:")
    assert main([*base, f"{flag}={good}"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tiny_mlp"][field] == pytest.approx(value)


@pytest.mark.parametrize("flag, bad", [("--instances", "0"), ("--instances", "-2"), ("--instances", "two"),
                                       ("--max-batch", "1.5"), ("--threads", "x"), ("--port", "http")])
def test_serve_flags_argparse_refuses_non_numbers_and_zero_instances(flag, bad, capsys):
    from effstack.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["serve", "effstack.testing:tiny_mlp", flag, bad, "--print-config"])
    assert exc.value.code == 2 and flag in capsys.readouterr().err
    if flag == "--instances":
        for good, want in (("1", 1), ("auto", "auto")):
            assert main(["serve", "effstack.testing:tiny_mlp", "--engine", "null", flag, good, "--print-config"]) == 0
            assert json.loads(capsys.readouterr().out)["tiny_mlp"]["instances"] == want


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


@pytest.mark.parametrize("retry, want", [(True, (200, 2)), (False, (503, 0))], ids=["offline-retries", "server-fails"])
def test_loadgen_url_sut_sends_refusals_again_only_when_asked(retry, want):
    """Offline sends a 503'd query again after its Retry-After (counted as refused); by default a 503 stands."""
    import asyncio
    from types import SimpleNamespace

    from effstack.serve.mlperf import UrlSUT

    class _Pool:  # the server's answers, scripted: refused twice, then served
        def __init__(self):
            self.answers = [(503, {"retry-after": "0"}, b""), (503, {"retry-after": "junk"}, b""), (200, {}, b"")]

        async def send(self, request):
            return self.answers.pop(0)

        def close(self):
            pass

    sut = UrlSUT(SimpleNamespace(host="127.0.0.1", port=9, request=b""), connections=1, retry_refused=retry,
                 max_in_flight=1 if retry else None)
    try:
        sut.pool = _Pool()
        status, _, _ = asyncio.run_coroutine_threadsafe(sut._send(), sut.loop).result(timeout=10)
        assert (status, sut.refused) == want
    finally:
        sut.close()
