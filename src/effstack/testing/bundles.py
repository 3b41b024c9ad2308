"""Real bundles of tiny models for tests, laddered with made-up measurements (nothing is timed)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_test_bundle"]


def write_test_bundle(folder: str | Path, source: str = "effstack.testing:tiny_mlp",
                      engines: tuple[str, ...] = ("onnxruntime",)) -> Path:
    """Climb a ladder of ``source`` on ``engines`` with invented speeds and write its bundle to ``folder``.

    The bundle is real (the artifact, serving.json, a manifest with hashes; max batch 4): ONNX Runtime gives
    ``model.onnx``, no engine leaves the torch baseline (``model.ts``). Its name is the folder's.
    """
    from ..ladder import Budget, Ladder, Measured, Variant
    from ..ladder.bundle import write_bundle
    from ..models import load_model

    folder = Path(folder)
    model = load_model(source)

    def measure(variant, config):
        speed = {"torch": 100.0, "onnxruntime": 400.0}.get(config.engine)
        if speed is None:
            return Measured(error="not measured in this test")
        return Measured(throughput=speed * config.batch, p99_ms=0.1 * config.batch, accuracy=90.0)

    ladder = Ladder(Variant(folder.name, model, params=model.params), Budget(5.0), measure, engines=engines,
                    precisions=(), max_batch=4, model_name=folder.name)
    return write_bundle(ladder.climb(), folder)
