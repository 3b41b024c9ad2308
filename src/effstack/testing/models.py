"""Tiny models built in code, deterministic by seed, with non-degenerate BatchNorm statistics.

Each factory returns an ``nn.Module`` carrying an ``input_spec`` attribute, so it loads with
``load_model("effstack.testing:tiny_cnn")``.
"""

from __future__ import annotations

from ..models.spec import InputSpec


def _seeded_bn(module, seed: int) -> None:
    """Give every BatchNorm layer random but sane running statistics (random-init BN is identity)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(0.8 + 0.4 * torch.rand(n, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=g))


def tiny_cnn(num_classes: int = 10, width: int = 16, size: int = 32, seed: int = 0):
    """Conv-BN-ReLU ×3, global pool, linear. Input (3, size, size) float32."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    w = width
    model = nn.Sequential(
        nn.Conv2d(3, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
        nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(),
        nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * w, num_classes),
    )
    _seeded_bn(model, seed)
    model.input_spec = InputSpec(shape=(3, size, size))
    return model.eval()



def tiny_resnet(num_classes: int = 10, width: int = 16, size: int = 32, seed: int = 0):
    """Two residual blocks (exercises Add nodes and skip connections in the exporters)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c: int):
            super().__init__()
            self.c1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.b1 = nn.BatchNorm2d(c)
            self.c2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.b2 = nn.BatchNorm2d(c)

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            return torch.relu(x + self.b2(self.c2(y)))

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        Block(width), Block(width), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes),
    )
    _seeded_bn(model, seed)
    model.input_spec = InputSpec(shape=(3, size, size))
    return model.eval()


def tiny_mlp(num_classes: int = 4, features: int = 16, hidden: int = 32, seed: int = 0):
    """Linear-ReLU-Linear on flat vectors. Input (features,) float32."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
    model.input_spec = InputSpec(shape=(features,), layout="NC")
    return model.eval()
