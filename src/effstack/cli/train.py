"""``effstack train | distill | prune``: the model-shrinking loop from the command line.

DATA (``--data``, ``--val``): an ``.npz`` file with ``x`` (N, *input shape) and ``y`` labels, or a DataSpec
(``sklearn:digits?split=train&size=32``, ``synth:digits?n=5000``, ``imagefolder:DIR``). Training settings
follow one rule: flag > ``--train-config FILE.json`` > default. Examples::

    effstack train effstack.testing.trained:_cnn --input-shape 1,8,8 --data sklearn:digits \\
        --val "sklearn:digits?split=test" --epochs 20 --checkpoint-dir ckpt --resume --output cnn.pt
    effstack distill --teacher big.pt --student pkg.mod:small --data "synth:digits?n=5000" --no-labels
    effstack prune pkg.mod:net --weights net.pt --data sklearn:digits --target 0.5 --onnx pruned.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, InputError
from .common import add_model_options, comma_list, model_spec_from_args, shape

_TRAIN_FLAGS = {  # flag -> (TrainConfig field, type, help)
    "--epochs": ("epochs", int, "passes over the data"),
    "--batch-size": ("batch_size", int, "samples per step"),
    "--lr": ("lr", float, "peak learning rate"),
    "--weight-decay": ("weight_decay", float, "weight decay"),
    "--optimizer": ("optimizer", str, "adamw or sgd"),
    "--schedule": ("schedule", str, "cosine or constant"),
    "--warmup-epochs": ("warmup_epochs", float, "linear warm-up epochs"),
    "--label-smoothing": ("label_smoothing", float, "label smoothing in [0, 1)"),
    "--amp": ("amp", str, "auto (bf16 only where native), bf16 or off"),
    "--augment": ("augment", str, "none, shift or flip-shift"),
    "--seed": ("seed", int, "seed of all randomness"),
    "--checkpoint-dir": ("checkpoint_dir", str, "write last.pt here after every epoch"),
}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model with the shared loop (checkpoints, resume)",
                       description="Train MODEL on DATA; write its weights (a state dict) with --output.")
    add_model_options(p)
    _add_common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill", help="train a student on a teacher's logits (labels optional)",
                       description="Logit distillation: the student learns the teacher's softened outputs.")
    for role in ("teacher", "student"):
        p.add_argument(f"--{role}", required=True, help=f"the {role}: torchvision name, .pt file or module:factory")
        p.add_argument(f"--{role}-weights", help=f"state-dict file for the {role}")
    p.add_argument("--num-classes", type=int, help="number of classes of both models")
    p.add_argument("--input-shape", type=shape, help="per-sample input shape, e.g. 1,32,32")
    p.add_argument("--trust-pickle", action="store_true", help="allow checkpoints holding pickled modules")
    p.add_argument("--temperature", type=float, default=4.0, help="softmax temperature (default 4)")
    p.add_argument("--alpha", type=float, default=0.9, help="weight of the teacher term (default 0.9)")
    p.add_argument("--no-labels", action="store_true", help="ignore DATA's labels: the teacher labels it")
    _add_common(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("prune", help="remove channels to a MACs target, fine-tuning between rounds",
                       description="Structural channel pruning (torch-pruning): the exported model is smaller.")
    add_model_options(p)
    p.add_argument("--target", type=float, default=0.5, help="fraction of MACs to keep (default 0.5)")
    p.add_argument("--steps", type=int, default=3, help="prune + fine-tune rounds (default 3)")
    p.add_argument("--importance", default="l2", help="l2, l1 or fpgm (default l2)")
    p.add_argument("--round-to", type=int, help="keep channel counts a multiple of this (8 suits SIMD)")
    p.add_argument("--ignore", type=comma_list, default=(), help="module names whose channels are kept")
    p.add_argument("--onnx", metavar="PATH", help="also export the pruned model to this ONNX file")
    _add_common(p, default_epochs=2)
    p.set_defaults(func=cmd_prune)


def _add_common(p: argparse.ArgumentParser, default_epochs: int | None = None) -> None:
    p.add_argument("--data", required=True, help="training data: an .npz file (x, y) or a DataSpec")
    p.add_argument("--val", help="validation data scored after each epoch (same forms)")
    g = p.add_argument_group("training (flag > --train-config > default)")
    g.add_argument("--train-config", metavar="JSON", help="a file of TrainConfig settings")
    for flag, (_, typ, text) in _TRAIN_FLAGS.items():
        extra = f" (default {default_epochs})" if flag == "--epochs" and default_epochs else ""
        g.add_argument(flag, type=typ, help=text + extra)
    g.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir/last.pt if it exists")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--output", metavar="PATH", help="write the trained model here")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")
    p.set_defaults(default_epochs=default_epochs)


def train_config_from_args(args: argparse.Namespace) -> Any:
    """Defaults, then ``--train-config``, then the flags given."""
    from ..report.jsonio import read_json
    from ..train import TrainConfig

    settings: dict[str, Any] = {}
    if getattr(args, "default_epochs", None):
        settings["epochs"] = args.default_epochs
    if args.train_config:
        doc = read_json(args.train_config, "train config")
        if not isinstance(doc, dict):
            raise InputError(f"train config {args.train_config!r} must hold a JSON object of TrainConfig settings")
        settings.update(doc)
    for flag, (name, _, _) in _TRAIN_FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            settings[name] = value
    if args.resume:
        settings["resume"] = True
    if args.no_progress:
        settings["progress"] = False
    return TrainConfig.from_dict(settings)


def load_arrays(source: str, labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """``(x, y)`` from an ``.npz`` file or a DataSpec; ``y`` is None when absent or ``labels`` is False.

    Raises:
        InputError: a missing or malformed file or spec.
    """
    if source.endswith(".npz"):
        from .quantize import load_data

        x, y = load_data(source, None)
    else:
        from ..data import as_arrays, resolve_data

        x, y = as_arrays(resolve_data(source, progress=True))
    return x, (y if labels else None)


def _save_state(module: Any, path: str) -> Path:
    import torch

    from .._files import atomic_file

    out = Path(path).expanduser()
    try:
        with atomic_file(out) as tmp:
            torch.save(module.state_dict(), str(tmp))
    except OSError as exc:
        raise ArtifactError(f"cannot write {str(out)!r}: {exc.strerror or exc}; check the directory") from None
    return out


def _finish(args: argparse.Namespace, doc: dict[str, Any], history: list[dict[str, Any]]) -> None:
    print(f"{'epoch':>5} {'loss':>8} {'val top-1':>9}")
    for h in history:
        val = f"{h['val_top1']:9.2f}" if h.get("val_top1") is not None else f"{'-':>9}"
        print(f"{h['epoch']:>5} {h['loss']:8.4f} {val}")
    if args.json:
        from .._files import atomic_write_json

        atomic_write_json(args.json, doc, indent=2, default=str)


def cmd_train(args: argparse.Namespace) -> int:
    from ..models import load_model
    from ..train import fit

    config = train_config_from_args(args)
    model = load_model(model_spec_from_args(args))
    val = load_arrays(args.val) if args.val else None
    result = fit(model, load_arrays(args.data), config, val=val)
    _finish(args, {"train": result.to_dict()}, result.history)
    if args.output:
        print(f"wrote {_save_state(model.module, args.output)} (load it with --weights)")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from ..compress import DistillConfig, distill
    from ..models import InputSpec, ModelSpec, load_model

    config = DistillConfig(temperature=args.temperature, alpha=args.alpha, train=train_config_from_args(args))
    inp = InputSpec(shape=args.input_shape) if args.input_shape else None
    opts = {"trust_pickle": True} if args.trust_pickle else {}
    teacher, student = (load_model(ModelSpec(src, weights=w, num_classes=args.num_classes, input=inp, options=opts))
                        for src, w in ((args.teacher, args.teacher_weights), (args.student, args.student_weights)))
    val = load_arrays(args.val) if args.val else None
    result = distill(teacher, student, load_arrays(args.data, labels=not args.no_labels), config, val=val)
    _finish(args, {"distill": {**result.to_dict(), "temperature": args.temperature, "alpha": args.alpha}},
            result.history)
    if args.output:
        print(f"wrote {_save_state(student.module, args.output)} (load it with --weights)")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    import torch

    from ..compress import PruneConfig, prune
    from ..compress.prune import as_loaded
    from ..models import load_model

    finetune = None if args.epochs == 0 else train_config_from_args(args)  # --epochs 0: prune only
    config = PruneConfig(target_flops_ratio=args.target, steps=args.steps, finetune=finetune,
                         importance=args.importance, ignore=tuple(args.ignore), round_to=args.round_to)
    model = load_model(model_spec_from_args(args))
    val = load_arrays(args.val) if args.val else None
    result = prune(model, None, config, load_arrays(args.data), val=val)
    print(result.table())
    print(f"MACs {result.macs_before:,} -> {result.macs_after:,} ({result.flops_ratio:.3f}), "
          f"params {result.params_before:,} -> {result.params_after:,}")
    if args.json:
        from .._files import atomic_write_json

        doc = {"prune": {**result.to_dict(), "config": config.to_dict()}}
        atomic_write_json(args.json, doc, indent=2, default=str)
    if args.output:  # the architecture changed, so a state dict alone cannot be loaded: save the module
        from .._files import atomic_file

        with atomic_file(Path(args.output).expanduser()) as tmp:
            torch.save(result.model, str(tmp))
        print(f"wrote {args.output} (a pickled module: load it with --trust-pickle)")
    if args.onnx:
        import shutil

        from ..export import export_onnx

        path = export_onnx(as_loaded(result.model, model.input, f"{model.name}-pruned"))
        shutil.copyfile(path, args.onnx)
        print(f"wrote {args.onnx}")
    return 0
