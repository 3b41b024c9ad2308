"""InputAdapter: a model takes another model's input (resize + re-normalisation inside the graph)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from effstack.errors import ConfigError
from effstack.models import InputSpec
from effstack.models.adapt import InputAdapter, adapt_input


class Probe(nn.Module):
    """Returns what it was given, flattened: the adapter's work is visible in the output."""

    def forward(self, x):
        self.seen = x
        return x.flatten(1)


def test_same_input_needs_no_adapter():
    spec = InputSpec((3, 8, 8), mean=(0.5,) * 3, std=(0.5,) * 3)
    probe = Probe()
    assert adapt_input(probe, spec, spec) is probe


def test_renormalisation_maps_the_outer_pixels_onto_the_inner_normalisation():
    outer = InputSpec((3, 4, 4), mean=(0.5, 0.4, 0.3), std=(0.5, 0.25, 0.2))
    inner = InputSpec((3, 4, 4), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    probe = Probe()
    adapted = adapt_input(probe, inner, outer)
    pixels = torch.rand(2, 3, 4, 4)  # raw [0, 1] pixels
    as_outer = (pixels - torch.tensor(outer.mean).view(1, 3, 1, 1)) / torch.tensor(outer.std).view(1, 3, 1, 1)
    adapted(as_outer)
    want = (pixels - torch.tensor(inner.mean).view(1, 3, 1, 1)) / torch.tensor(inner.std).view(1, 3, 1, 1)
    torch.testing.assert_close(probe.seen, want, atol=1e-5, rtol=1e-5)


def test_resizes_to_the_inner_side_or_the_one_asked_for():
    outer = InputSpec((3, 26, 26), mean=(0.5,) * 3, std=(0.5,) * 3)
    inner = InputSpec((3, 22, 22), mean=(0.5,) * 3, std=(0.5,) * 3)
    probe = Probe()
    a = adapt_input(probe, inner, outer)
    assert isinstance(a, InputAdapter) and not a.renormalise
    a(torch.zeros(1, 3, 26, 26))
    assert tuple(probe.seen.shape[-2:]) == (22, 22)
    adapt_input(probe, inner, outer, size=(16, 16))(torch.zeros(1, 3, 26, 26))
    assert tuple(probe.seen.shape[-2:]) == (16, 16)
    with pytest.raises(ConfigError, match="same channels"):
        adapt_input(probe, InputSpec((1, 22, 22)), outer)


def test_an_adapted_model_exports_and_runs_on_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    from effstack.engines import SessionOptions, get_engine
    from effstack.models import from_module
    from effstack.testing import tiny_cnn

    outer = InputSpec((3, 40, 40), mean=(0.5,) * 3, std=(0.5,) * 3)
    inner = InputSpec((3, 32, 32), mean=(0.4,) * 3, std=(0.3,) * 3)
    module = adapt_input(tiny_cnn(size=32).eval(), inner, outer)
    model = from_module(module, outer, "adapted")
    x = outer.example(2)
    with torch.inference_mode():
        want = module(torch.from_numpy(x)).numpy()
    got = get_engine("onnxruntime").load(model, SessionOptions("fp32")).run(x)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
