"""Train: one small training loop shared by ``effstack train``, distillation, QAT, ternary and prune fine-tuning.

>>> from effstack.train import TrainConfig, fit                                # doctest: +SKIP
>>> result = fit(model, (x, y), TrainConfig(epochs=5, checkpoint_dir="ckpt"))  # doctest: +SKIP
"""

from .config import TrainConfig
from .loop import TrainResult, evaluate, fit

__all__ = ["TrainConfig", "TrainResult", "evaluate", "fit"]
