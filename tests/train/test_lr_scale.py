"""fit's ``lr_scale``: parameters named by a substring train at a multiple of the learning rate (QAT's steps)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from effstack.train import TrainConfig, fit  # noqa: E402


def test_lr_scale_sets_each_group_rate():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 8)).astype(np.float32), rng.integers(0, 4, 64)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    bias = [p.detach().clone() for n, p in net.named_parameters() if n.endswith("bias")]
    weight = [p.detach().clone() for n, p in net.named_parameters() if n.endswith("weight")]
    fit(net, (x, y), TrainConfig(epochs=2, batch_size=16, lr=1e-2, progress=False), lr_scale={"bias": 0.0})
    after = dict(net.named_parameters())
    assert all(torch.equal(a, b) for a, b in zip(bias, [after["0.bias"], after["2.bias"]]))  # lr 0: untouched
    assert not torch.equal(weight[0], after["0.weight"])  # the rest trains at the config's lr
