"""Argument helpers shared by subcommands: comma lists, knobs, model options, --json."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigError


def comma_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list, got an empty value")
    return items


def int_list(text: str) -> list[int]:
    try:
        values = [int(t) for t in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,8,32, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"values must be at least 1, got {text!r}")
    return values


def shape(text: str) -> tuple[int, ...]:
    return tuple(int_list(text))


def parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_knobs(items: list[str] | None) -> dict[str, Any]:
    """``["openvino.hint=throughput", "channels_last=true"]`` -> ``{"openvino": {"hint": ...}, "channels_last": True}``.

    A knob without an engine prefix applies to every engine; ``ENGINE.KEY`` applies to that engine only
    (the shape :func:`effstack.measure.bench` takes).
    """
    from ..engines import canonical

    knobs: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--knob must look like ENGINE.KEY=VALUE or KEY=VALUE, got {item!r}")
        engine, dot, name = key.rpartition(".")
        if dot:
            knobs.setdefault(canonical(engine), {})[name] = parse_value(value)
        else:
            knobs[name] = parse_value(value)
    return knobs


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="torchvision name (resnet50), a .onnx/.pt/.ts file, or package.module:factory")
    p.add_argument("--weights", help="state-dict file to load into the model (loaded with weights_only=True)")
    p.add_argument("--arch", help="architecture of a state-dict checkpoint, e.g. resnet50")
    p.add_argument("--num-classes", type=int, help="number of classes of the model's head")
    p.add_argument("--input-shape", type=shape, help="per-sample input shape, e.g. 3,224,224")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a checkpoint that holds a pickled module (loading it runs code from the file)")


def model_spec_from_args(args: argparse.Namespace):
    from ..models.spec import InputSpec, ModelSpec

    inp = InputSpec(shape=args.input_shape) if args.input_shape else None
    options = {"trust_pickle": True} if args.trust_pickle else {}
    return ModelSpec(args.model, weights=args.weights, arch=args.arch, num_classes=args.num_classes, input=inp,
                     options=options)
