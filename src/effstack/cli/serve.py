"""``effstack serve TARGET`` (an Open Inference Protocol server) and ``effstack loadtest URL`` (open-loop load)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from .common import add_model_options, parse_knobs

# flag -> ServingConfig field; argparse leaves unset flags at None so a serving.json's values survive
_SERVING_FLAGS = {
    "engine": "engine", "precision": "precision", "max_batch": "max_batch", "instances": "instances",
    "threads": "threads", "queue_capacity": "queue_capacity", "priority_levels": "priority_levels",
    "length_buckets": "length_buckets", "admission_horizon": "admission_horizon",
}
_DURATION_FLAGS = {"latency_budget": "latency_budget_ms", "max_queue_delay": "max_queue_delay_ms",
                   "timeout": "timeout_ms", "inline_below": "inline_below_ms"}


def _instances(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of instances or 'auto', got {text!r}")
    return n


def _length_buckets(text: str) -> list[int] | str:
    if text in ("auto", "off"):
        return text
    try:
        edges = [int(e) for e in text.split(",") if e.strip()]
    except ValueError:
        edges = []
    if not edges or min(edges) < 1:
        raise argparse.ArgumentTypeError(f"expected auto, off or token counts like 16,32,64,128,256; got {text!r}")
    return edges


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve a model over the Open Inference Protocol (KServe v2) with dynamic batching",
        description="Serve MODEL (a model spec as for 'effstack bench', a serving.json, or a folder of models: "
        "NAME/serving.json folders and NAME.onnx/.pt/.ts files) over HTTP. Flags override a serving.json's "
        "settings, which override the defaults.",
    )
    add_model_options(p)
    p.add_argument("--name", help="the model's protocol name (default: the model's name)")
    p.add_argument("--engine", help="engine (default auto: openvino, else onnxruntime, else torch)")
    p.add_argument("--precision", help="fp32, bf16, fp16 or int8 (default fp32)")
    p.add_argument("--knob", action="append", metavar="KEY=VALUE", help="engine setting (repeatable)")
    p.add_argument("--max-batch", type=int, help="largest batch in samples; every size is warmed up (default 8)")
    p.add_argument("--max-queue-delay", metavar="DURATION", help="how long a batch may wait to fill, e.g. 2ms")
    p.add_argument("--latency-budget", metavar="DURATION", help="p99 target, e.g. 50ms: latency-budget batching")
    p.add_argument("--instances", type=_instances, metavar="N|auto",
                   help="engine sessions per model (default 1); auto: try 1, 2, 4, ... at load and keep the layout "
                   "that sustains the highest rate within the latency budget")
    p.add_argument("--threads", type=int, help="compute threads in all, split between instances (default: all cores)")
    p.add_argument("--queue-capacity", type=int, help="samples that may wait before 503 (default 256)")
    p.add_argument("--admission-horizon", type=float, metavar="BUDGETS",
                   help="with --latency-budget: admit a request while it is predicted to finish within this many "
                   "budgets (default 1: refuse what would miss the budget; 2 absorbs Poisson bursts when the "
                   "budget is a p99, as in MLPerf's Server scenario)")
    p.add_argument("--timeout", metavar="DURATION", help="default per-request timeout (504 when it passes)")
    p.add_argument("--priority-levels", type=int, help="request priorities 1..N (default 1)")
    p.add_argument("--inline-below", metavar="DURATION",
                   help="run batches predicted faster than this on the event loop, not a thread "
                   "(default 0.1ms; 0: never)")
    p.add_argument("--length-buckets", type=_length_buckets, metavar="auto|off|N,N,...",
                   help="text models: batch only requests of similar length, by these token-count edges "
                   "(default auto: 16, 32, 64, ... up to the max length; off: one FIFO queue, each batch padded "
                   "to its longest text)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--grpc-port", type=int, metavar="PORT",
                   help="also serve the protocol over gRPC on this port, e.g. 8001 (default: off)")
    p.add_argument("--token-file", metavar="PATH",
                   help="require 'Authorization: Bearer <token>' with the token in this file (or $EFFSTACK_TOKEN)")
    p.add_argument("--max-request-mb", type=float, default=64.0, help="larger request bodies get 413 (default 64)")
    p.add_argument("--print-config", action="store_true", help="print the resolved serving config and exit")
    p.add_argument("--index", metavar="INDEX", help="also serve this similarity index: search endpoints under "
                   "/search and a search page at /search (see 'effstack index build')")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "loadtest", help="open-loop Poisson load against an Open Inference Protocol server",
        description="Send inference requests at Poisson arrivals; latency counts from each request's scheduled "
        "send time. With --find-max, search the highest rate whose p99 stays within --budget-ms.",
    )
    p.add_argument("url", help="http://HOST:PORT or http://HOST:PORT/v2/models/NAME")
    p.add_argument("--model", help="model name (default: from the URL, or the server's only model)")
    p.add_argument("--rate", type=float, default=10.0, help="queries per second (the start rate with --find-max)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per step (default 10)")
    p.add_argument("--batch", type=int, default=1, help="samples per request (default 1)")
    p.add_argument("--json-tensors", action="store_true", help="send JSON tensors instead of binary ones")
    p.add_argument("--find-max", action="store_true", help="search the highest rate meeting --budget-ms")
    p.add_argument("--budget-ms", type=float, help="p99 budget in milliseconds (needed by --find-max)")
    p.add_argument("--max-steps", type=int, default=8, help="--find-max: at most this many steps (default 8)")
    p.add_argument("--max-error-rate", type=float, default=0.01, help="errors a passing step may have (default 0.01)")
    p.add_argument("--max-queries", type=int, default=100_000, help="at most this many requests per step")
    p.add_argument("--connections", type=int, default=256, help="concurrent connections at most (default 256)")
    p.add_argument("--timeout", type=float, default=10.0, help="client timeout per request in seconds")
    p.add_argument("--seed", type=int, default=0, help="arrival schedule seed")
    p.add_argument("--token-file", metavar="PATH", help="bearer token file (or $EFFSTACK_TOKEN)")
    p.add_argument("--loadgen", choices=["server", "offline"],
                   help="let the real MLPerf LoadGen drive the load (--rate, --budget-ms, --duration) instead")
    p.add_argument("--logs", metavar="DIR", default="results/loadgen", help="LoadGen's log folder")
    p.add_argument("--json", metavar="PATH", help="write the steps as JSON")
    p.set_defaults(func=cmd_loadtest)


def _token(path: str | None) -> str | None:
    from ..errors import ConfigError

    if path:
        try:
            token = Path(path).expanduser().read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {path!r}: {exc.strerror or exc}") from None
        if not token:
            raise ConfigError(f"the token file {path!r} is empty")
        return token
    return os.environ.get("EFFSTACK_TOKEN") or None


def serving_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The serving settings the user gave on the command line (None for those left out)."""
    from ..serve.config import parse_duration_ms

    out: dict[str, Any] = {field: getattr(args, flag) for flag, field in _SERVING_FLAGS.items()}
    for flag, field in _DURATION_FLAGS.items():
        value = getattr(args, flag)
        out[field] = None if value is None else parse_duration_ms(value)
    if args.knob:
        out["knobs"] = parse_knobs(args.knob)
    return out


def _resolve(args: argparse.Namespace) -> dict:
    from ..models.spec import InputSpec, ModelSpec
    from ..serve.repository import resolve_target

    overrides = serving_overrides(args)
    configs = resolve_target(args.model, overrides, name=args.name)
    model_flags = args.weights or args.arch or args.num_classes or args.input_shape or args.trust_pickle
    if model_flags and len(configs) == 1:
        (name, cfg), = configs.items()
        spec = cfg.model
        inp = InputSpec(shape=args.input_shape) if args.input_shape else spec.input
        options = {**spec.options, **({"trust_pickle": True} if args.trust_pickle else {})}
        new = ModelSpec(spec.source, weights=args.weights or spec.weights, arch=args.arch or spec.arch,
                        num_classes=args.num_classes or spec.num_classes, input=inp, options=options)
        configs = {name: cfg.merged({"model": new})}
    return configs


def cmd_serve(args: argparse.Namespace) -> int:
    import json
    import logging

    from ..serve.server import require_serve

    configs = _resolve(args)
    if args.print_config:
        print(json.dumps({n: c.to_dict() for n, c in configs.items()}, indent=1))
        return 0
    require_serve()
    if args.grpc_port is not None:
        from .._optional import require

        for package in ("grpc", "tritonclient.grpc"):
            require(package, "effstack serve --grpc-port")
    from ..serve.app import ServerOptions, create_app
    from ..serve.repository import ModelRepository, ModelRunner
    from ..serve.server import run_server

    options = ServerOptions(host=args.host, port=args.port, token=_token(args.token_file),
                            max_request_bytes=int(args.max_request_mb * 1024 * 1024))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not options.token:
        print(f"effstack: warning: listening on {args.host} without a token; anyone who can reach it can use it",
              file=sys.stderr)
    # load before listening: a mistake is one line and exit 2, and the server is ready when it listens
    runners = {}
    for name, config in configs.items():
        print(f"loading {name} (every batch size 1..{config.max_batch} is warmed up) ...", flush=True)
        runners[name] = ModelRunner.build(config, name)
        curve = ", ".join(f"{b}: {s * 1e3:.2f}" for b, s in runners[name].curve_s.items())
        print(f"  {name}: engine {runners[name].sessions[0].engine}, p99 ms by batch {{{curve}}}, "
              f"batch cap {runners[name].policy.batch_cap}, queue limit {runners[name].policy.admission_limit}")
    extensions = []
    if args.index:
        from ..search.service import SearchService

        print(f"opening index {args.index} ...", flush=True)
        extensions.append(SearchService.open(args.index, args.engine or "auto", threads=args.threads))
        index = extensions[0].index
        print(f"  {len(index)} {index.modality}s; search page on http://{args.host}:{args.port}/search")
    repository = ModelRepository(configs, runners=runners)
    metrics, grpc = _grpc(repository, options, args.grpc_port)
    print(f"serving on http://{args.host}:{args.port}/v2 (Ctrl-C to stop)", flush=True)
    run_server(create_app(repository, options, metrics, extensions=extensions), args.host, args.port, grpc=grpc)
    return 0


def _grpc(repository: Any, options: Any, port: int | None) -> tuple[Any, Any]:
    """The metrics both transports share and the gRPC server on ``port`` (None, None: gRPC is off)."""
    if port is None:
        return None, None
    from ..serve.grpc_server import GrpcServer
    from ..serve.metrics import ServerMetrics

    metrics = ServerMetrics(repository.state)
    grpc = GrpcServer(repository, metrics, options, port)
    print(f"serving gRPC (inference.GRPCInferenceService) on {grpc.address}", flush=True)
    return metrics, grpc


def _print_step(r: Any, ok: bool | None = None) -> None:
    lat = r.latency
    errs = ", ".join(f"{n}x{k}" for k, n in sorted(r.errors.items())) or "none"
    verdict = "" if ok is None else ("  pass" if ok else "  fail")
    pcts = f"p50 {lat.p50_ms:8.2f}  p90 {lat.p90_ms:8.2f}  p99 {lat.p99_ms:8.2f} ms" if lat else "no successful replies"
    print(f"rate {r.target_qps:9.1f}/s  sent {r.sent:6d}  ok {r.ok:6d}  {pcts}  throughput {r.throughput:9.1f}/s  "
          f"errors {errs}  unfinished {r.incomplete}  late {r.late} (p99 {r.late_p99_ms:.1f} ms){verdict}", flush=True)


def _row(r: Any, target: Any, binary: bool) -> Any:
    from ..measure.row import ResultRow

    lat = r.latency
    return ResultRow(
        model=target.model, model_source=target.url, engine="http", scenario="server", batch=r.batch,
        settings={"binary": binary, "errors": r.errors, "late_p99_ms": round(r.late_p99_ms, 3)}, duration_s=r.duration_s, queries=r.ok,
        samples=r.ok * r.batch, throughput=r.throughput, p50_ms=lat and lat.p50_ms, p90_ms=lat and lat.p90_ms,
        p99_ms=lat and lat.p99_ms, p999_ms=lat and lat.p999_ms, mean_ms=lat and lat.mean_ms,
        target_qps=r.target_qps, achieved_qps=r.achieved_qps, late=r.late, incomplete=r.incomplete,
        status="ok" if r.ok else "error", error="" if r.ok else "no request succeeded",
    )


def cmd_loadtest(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..serve.loadtest import find_max, passes, prepare, run_load

    if args.find_max and not args.budget_ms:
        raise ConfigError("--find-max needs --budget-ms, the p99 budget to meet")
    binary = not args.json_tensors
    if args.loadgen:
        return _loadgen(args, binary)

    async def main() -> tuple[Any, list, float | None]:
        target = await prepare(args.url, args.model, args.batch, binary, _token(args.token_file), args.seed)
        print(f"load-testing {target.url} with batch {args.batch} ({'binary' if binary else 'JSON'} tensors)")
        load = {"connections": args.connections, "timeout_s": args.timeout, "max_queries": args.max_queries}
        if args.find_max:
            best, steps = await find_max(target, args.budget_ms, args.rate, args.duration, args.max_steps,
                                         max_error_rate=args.max_error_rate, on_step=_print_step, **load)
            return target, steps, best
        r = await run_load(target, args.rate, args.duration, seed=args.seed, **load)
        ok = passes(r, args.budget_ms, args.max_error_rate) if args.budget_ms else None
        _print_step(r, ok)
        return target, [r], None

    target, steps, best = _run(main())
    if args.find_max:
        print(f"highest rate within p99 {args.budget_ms:g} ms: "
              + (f"{best:.1f} queries/s ({best * args.batch:.1f} samples/s)" if best else "none of the rates tried"))
    if args.json:
        from ..report import write_rows

        write_rows(Path(args.json), [_row(r, target, binary) for r in steps],
                   extra={"command": ["effstack", *sys.argv[1:]], "loadtest": [r.to_dict() for r in steps],
                          "max_rate_qps": best, "budget_ms": args.budget_ms})
        print(f"wrote {args.json}")
    return 0 if any(r.ok for r in steps) else 1


def _loadgen(args: argparse.Namespace, binary: bool) -> int:
    import json

    from ..report.jsonio import atomic_write_text
    from ..serve.loadtest import prepare
    from ..serve.mlperf import UrlSUT, run_loadgen

    target = _run(prepare(args.url, args.model, args.batch, binary, _token(args.token_file), args.seed))
    print(f"MLPerf LoadGen {args.loadgen} scenario against {target.url}; logs in {args.logs}", flush=True)
    r = run_loadgen(UrlSUT(target, args.connections), args.loadgen, args.rate, args.budget_ms or 50.0,
                    args.duration, args.logs)
    for key in ("Result is", "Scheduled samples per second", "Completed samples per second", "Samples per second",
                "50.00 percentile latency (ns)", "99.00 percentile latency (ns)"):
        if key in r.summary:
            print(f"  {key}: {r.summary[key]}")
    print(f"  errors: {r.errors}")
    if args.json:
        atomic_write_text(args.json, json.dumps(r.to_dict(), indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0 if r.summary else 1


def _run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)
