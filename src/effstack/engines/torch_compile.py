"""torch.compile with the inductor backend and weight freezing (fp32, bf16).

Freezing folds the (frozen, inference-only) weights into the graph so inductor can pre-pack them
for oneDNN; on this CPU it took ResNet-50 from 35 to 56 images/s. Compiling is slow the first time
(15-19 s for ResNet-50 cold), so sessions warm up once per batch size at load.

The precision each compute layer ran in is read from the graph dynamo hands inductor (each Conv/Linear's
output dtype, autocast applied), through a thin backend in front of inductor; a layer that no compiled graph
held (it ran in a graph break, or the graph came from a cache this session's backend never saw) reads
:data:`~effstack.engines.base.NOT_OBSERVED` rather than the precision asked for.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import EngineError
from .base import Session, SessionOptions
from .torch_eager import _COMPUTE, TorchEagerEngine, TorchSession, compute_layers, precision_of


def graph_precisions(gm: Any, names: dict[str, str] | None = None) -> dict[str, str]:
    """Compute layer -> precision in a dynamo FX graph: the dtype of the last floating-point value computed
    inside each Conv/Linear module (``node.meta["nn_module_stack"]``, innermost module). ``names`` maps the
    stack's module keys (``str(id(module))``) to the model's layer names; other keys fall back to the path."""
    out: dict[str, str] = {}
    for node in gm.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        dtype = getattr(node.meta.get("example_value"), "dtype", None)
        if not stack or dtype is None or not getattr(dtype, "is_floating_point", False):
            continue
        key, (path, kind) = list(stack.items())[-1]
        if (kind.__name__ if isinstance(kind, type) else str(kind).rsplit(".", 1)[-1]) not in _COMPUTE:
            continue
        out[(names or {}).get(str(key)) or _layer_path(str(path))] = precision_of(dtype)
    return out


def _layer_path(path: str) -> str:
    """dynamo's module path -> ``named_modules`` style: ``L['fn'].layer1[0].conv1`` -> ``layer1.0.conv1``."""
    path = re.sub(r"^L\['[^']*'\]", "", path)
    path = re.sub(r"\._modules\['([^']*)'\]", r".\1", path)
    return re.sub(r"\[(\d+)\]", r".\1", path).lstrip(".")


class _ObservingInductor:
    """Inductor (with ``mode``'s options), first reading each compute layer's precision off the graph it gets."""

    def __init__(self, mode: str | None, dynamic: bool, module: Any, seen: dict[str, str]):
        from torch import _TorchCompileInductorWrapper

        self._inductor = _TorchCompileInductorWrapper(mode, None, dynamic)
        self._names = {str(id(m)): name for name, m in compute_layers(module)}
        self._seen = seen

    def __call__(self, gm: Any, example_inputs: Any) -> Any:
        self._seen.update(graph_precisions(gm, self._names))
        return self._inductor(gm, example_inputs)

    def __getattr__(self, name: str) -> Any:  # compiler_name, get_compiler_config, reset: inductor's own
        return getattr(self._inductor, name)


RECOMPILE_LIMIT = 64  # dynamo's recompile limit is raised to at least this when a session is compiled


class TorchCompileEngine(TorchEagerEngine):
    name = "torch_compile"

    def load(self, model: Any, options: SessionOptions) -> Session:
        import torch
        import torch._inductor.config as inductor_config

        self.check(options)
        if model.module is None:
            raise EngineError(f"engine 'torch_compile' needs a PyTorch model, but {model.name!r} came as ONNX")
        knobs = options.knobs
        inductor_config.freezing = bool(knobs.get("freezing", True))
        dynamo_config = torch._dynamo.config
        # each session of the same model class (another batch, precision or instance) is a recompile of its
        # forward; past dynamo's limit (8 by default) the call silently runs *eager*, which a benchmark would then
        # report as compiled. The ladder, the planner and the tests build many such sessions in one process.
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
        dynamic = bool(knobs.get("dynamic", False))
        seen: dict[str, str] = {}
        compiled = torch.compile(
            model.module,
            backend=_ObservingInductor(knobs.get("mode", None), dynamic, model.module, seen),
            dynamic=dynamic,
            fullgraph=False,
        )
        session = TorchSession(self.name, model, options, module=compiled, observed=seen)
        try:  # compile now, for the batch the session will see, so timing never includes compilation
            session.run(model.input.example(options.batch))
        except Exception as exc:
            raise EngineError(f"torch.compile failed for {model.name!r}: {' '.join(str(exc).split())[:200]}") from None
        if not seen and session._layer_names:  # the backend never got a graph: nothing was compiled
            session.close()
            raise EngineError(
                f"torch.compile did not compile {model.name!r}: dynamo ran it eager (its recompile limit of "
                f"{dynamo_config.recompile_limit} for this model's forward is used up in this process, or every "
                "layer fell into a graph break); load it in a fresh process, or raise "
                "torch._dynamo.config.recompile_limit")
        return session
