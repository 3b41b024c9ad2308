"""``effstack deploy ray|kserve BUNDLE`` and ``effstack batch-infer BUNDLE --data SPEC --out DIR``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from .common import parse_knobs

_ENGINE_FLAGS = {"engine": "engine", "threads": "threads", "max_batch": "max_batch"}


def _add_bundle_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="a bundle folder written by 'effstack ladder ... --bundle DIR'")
    p.add_argument("--engine", help="engine instead of the bundle's (e.g. null to measure overhead)")
    p.add_argument("--threads", type=int, help="compute threads in all, instead of the bundle's")
    p.add_argument("--max-batch", type=int, help="largest batch, instead of the bundle's")
    p.add_argument("--knob", action="append", metavar="KEY=VALUE", help="engine setting (repeatable)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray cluster (default: all cores)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    deploy = sub.add_parser("deploy", help="run a bundle on Ray Serve, or write its KServe manifest",
                            description="Deploy a bundle unchanged: on a local Ray Serve cluster (loopback only), "
                            "or as a KServe InferenceService manifest to apply elsewhere.")
    targets = deploy.add_subparsers(dest="target", metavar="TARGET", required=True)

    p = targets.add_parser("ray", help="serve the bundle on Ray Serve (Open Inference Protocol v2)",
                           description="Serve BUNDLE on a local Ray cluster bound to 127.0.0.1: one replica per "
                           "instance of the plan, each an 'effstack serve' of one session with the same routes and "
                           "batching. Needs the ray extra.")
    _add_bundle_options(p)
    p.add_argument("--port", type=int, default=8000, help="HTTP port on 127.0.0.1 (default 8000)")
    p.add_argument("--min-replicas", type=int, help="autoscaling lower bound (default 1)")
    p.add_argument("--max-replicas", type=int, help="autoscaling upper bound (default: the plan's instances)")
    p.add_argument("--ingress", choices=["proxy", "direct"], default="proxy",
                   help="proxy (default): every request through Serve's proxy at --port; direct: each replica also "
                   "serves HTTP itself (Ray Serve's direct ingress, ports from --direct-port on), skipping the "
                   "proxy's hop and its CPU")
    p.add_argument("--direct-port", type=int, default=30000, help="first port of the replicas' own servers "
                   "(--ingress direct; default 30000)")
    p.add_argument("--print-plan", action="store_true", help="print the replica plan as JSON and exit")
    p.set_defaults(func=cmd_deploy_ray)

    p = targets.add_parser("kserve", help="print a KServe InferenceService manifest for the bundle",
                           description="Print a KServe InferenceService (serving.kserve.io/v1beta1) whose custom "
                           "predictor runs 'effstack serve' on the bundle over the v2 protocol. Not applied here.")
    p.add_argument("bundle", help="a bundle folder")
    p.add_argument("--image", default="effstack:latest", help="container image with effstack installed")
    p.add_argument("--storage-uri", help="where the cluster finds the bundle (default pvc://effstack-bundles/NAME)")
    p.add_argument("--name", help="the InferenceService's name (default: the model's)")
    p.add_argument("--namespace", help="Kubernetes namespace")
    p.add_argument("--out", metavar="PATH", help="write the manifest here instead of standard output")
    p.set_defaults(func=cmd_deploy_kserve)

    p = sub.add_parser("batch-infer", help="offline inference over a data set with Ray Data",
                       description="Predict every sample of --data with BUNDLE on a local Ray cluster (Ray Data "
                       "map_batches over an actor pool sized from the plan) and write the outputs to --out. "
                       "Needs the ray extra.")
    _add_bundle_options(p)
    p.add_argument("--data", required=True, metavar="SPEC", help="data spec, e.g. synth:digits?n=1000 or a folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (written whole, atomically)")
    p.add_argument("--format", choices=["npy", "parquet"], default="npy", help="output format (default npy)")
    p.add_argument("--actors", type=int, help="actor pool size (default: the plan's instances)")
    p.add_argument("--batch-size", type=int, help="samples per batch (default: the plan's max batch)")
    p.set_defaults(func=cmd_batch_infer)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {field: getattr(args, flag) for flag, field in _ENGINE_FLAGS.items()}
    if args.knob:
        out["knobs"] = parse_knobs(args.knob)
    return out


def cmd_deploy_ray(args: argparse.Namespace) -> int:
    import json

    from ..deploy.cluster import require_ray
    from ..deploy.ray_serve import RayServeApp, replica_plan, resolve_one

    if args.print_plan:
        plan = replica_plan(resolve_one(args.bundle, _overrides(args)), args.min_replicas, args.max_replicas)
        print(json.dumps(plan.to_dict(), indent=1, default=str))
        return 0
    require_ray("serve", "effstack deploy ray")
    print(f"starting a local Ray cluster on 127.0.0.1 and deploying {args.bundle} ...", flush=True)
    with RayServeApp.start(args.bundle, _overrides(args), port=args.port, min_replicas=args.min_replicas,
                           max_replicas=args.max_replicas, num_cpus=args.num_cpus, ingress=args.ingress,
                           direct_port=args.direct_port) as app:
        p = app.plan
        print(f"  {app.config.name}: {p.initial_replicas} replica(s) of {p.num_cpus} CPU(s) "
              f"(autoscaling {p.min_replicas}..{p.max_replicas})")
        for url in app.direct_urls():
            print(f"  a replica serves {url}/v2 itself (direct ingress)")
        print(f"serving on {app.url}/v2 through Ray Serve (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping ...", file=sys.stderr)
    return 0


def cmd_deploy_kserve(args: argparse.Namespace) -> int:
    from ..deploy.kserve import kserve_yaml

    text = kserve_yaml(args.bundle, image=args.image, storage_uri=args.storage_uri, name=args.name,
                       namespace=args.namespace)
    if args.out:
        from .._files import atomic_write_text

        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_batch_infer(args: argparse.Namespace) -> int:
    from ..deploy.batch import batch_infer

    r = batch_infer(args.bundle, args.data, args.out, overrides=_overrides(args), fmt=args.format,
                    actors=args.actors, batch_size=args.batch_size, num_cpus=args.num_cpus)
    print(f"{r.rows} samples in {r.seconds:.2f} s ({r.throughput:.1f} samples/s, Ray start-up included) on "
          f"{r.plan.actors} actor(s) of {r.plan.num_cpus} CPU(s), batch {r.plan.batch_size}; "
          f"wrote {r.out}/{{{', '.join(r.files)}}}")
    return 0
