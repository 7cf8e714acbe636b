"""Model registry: the standard architectures of the lottery-ticket literature.

``get(name, num_classes=10, input_shape=None, **options)`` builds a freshly initialised model.
Conv and Linear weights use Kaiming-normal (fan-in) initialisation, biases zero, BN γ=1, β=0,
as in open_lth; the seed is the caller's (``torch.manual_seed``) or ``seed=``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from .registry import Registry

__all__ = ["MODELS", "get", "names", "register", "MLP", "ConvNet", "VGG", "CifarResNet"]

#: name → factory ``f(num_classes, input_shape, **options) -> nn.Module``
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
register = MODELS.register
names = MODELS.names


def get(name: str, num_classes: int = 10, input_shape: Sequence[int] | None = None, *,
        seed: int | None = None, **options) -> nn.Module:
    """A new model `name` for `num_classes` classes and inputs of `input_shape` (default per model)."""
    factory = MODELS[name]
    if seed is not None:
        torch.manual_seed(seed)
    model = factory(num_classes=num_classes, input_shape=input_shape, **options)
    init_weights(model)
    model.pathnet_name = name  # lets training pick the model's default recipe
    return model


def init_weights(model: nn.Module) -> nn.Module:
    """Kaiming-normal (fan-in) weights, zero biases, unit BN scales."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


class MLP(nn.Sequential):
    """Flatten, then Linear+ReLU layers of the given widths, then a Linear classifier."""

    def __init__(self, in_features: int, widths: Sequence[int], num_classes: int):
        layers: list[nn.Module] = [nn.Flatten()]
        for w in widths:
            layers += [nn.Linear(in_features, w), nn.ReLU()]
            in_features = w
        layers.append(nn.Linear(in_features, num_classes))
        super().__init__(*layers)


def _conv(dims: int, cin: int, cout: int, **kw) -> nn.Module:
    return (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1](cin, cout, **kw)


def _bn(dims: int, c: int) -> nn.Module:
    return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[dims - 1](c)


def _pool(dims: int) -> nn.Module:
    return (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[dims - 1](2)


def _features(cfg: Sequence, in_channels: int, dims: int, batch_norm: bool) -> tuple[nn.Sequential, int, int]:
    """Conv3×3(+BN)+ReLU for ints, 2× max-pool for 'M'; returns (features, channels, pools)."""
    layers: list[nn.Module] = []
    pools = 0
    for v in cfg:
        if v == "M":
            layers.append(_pool(dims))
            pools += 1
            continue
        layers.append(_conv(dims, in_channels, v, kernel_size=3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(_bn(dims, v))
        layers.append(nn.ReLU())
        in_channels = v
    return nn.Sequential(*layers), in_channels, pools


class ConvNet(nn.Module):
    """Conv-2/4/6 of Frankle & Carbin: 3×3 conv pairs with max-pooling, then a 256-256 MLP head."""

    def __init__(self, cfg: Sequence, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        dims = len(input_shape) - 1
        self.features, channels, pools = _features(cfg, input_shape[0], dims, batch_norm=False)
        spatial = math.prod(s // 2 ** pools for s in input_shape[1:])
        if spatial == 0:
            raise ValueError(f"input {tuple(input_shape)} is too small for {pools} poolings")
        self.classifier = MLP(channels * spatial, hidden, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class VGG(nn.Module):
    """CIFAR VGG (open_lth/Synaptic-Flow style): conv stack, global average, one Linear classifier."""

    def __init__(self, cfg: Sequence, input_shape: Sequence[int], num_classes: int, batch_norm: bool = True):
        super().__init__()
        dims = len(input_shape) - 1
        self.features, channels, _ = _features(cfg, input_shape[0], dims, batch_norm)
        self.pool = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)[dims - 1](1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


_VGG_CFG = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class BasicBlock(nn.Module):
    """Two 3×3 convs with BN; identity shortcut, or 1×1 conv + BN when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int, dims: int = 2):
        super().__init__()
        self.conv1 = _conv(dims, cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = _bn(dims, cout)
        self.conv2 = _conv(dims, cout, cout, kernel_size=3, padding=1, bias=False)
        self.bn2 = _bn(dims, cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(_conv(dims, cin, cout, kernel_size=1, stride=stride, bias=False),
                                          _bn(dims, cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs (He et al. 2016): widths 16-32-64, n blocks per stage; 1-D or 3-D
    convolutions for inputs of one or three positional axes."""

    def __init__(self, depth: int, input_shape: Sequence[int], num_classes: int, width: int = 16):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n, dims = (depth - 2) // 6, len(input_shape) - 1
        self.conv = _conv(dims, input_shape[0], width, kernel_size=3, padding=1, bias=False)
        self.bn = _bn(dims, width)
        blocks, cin = [], width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, stride=2 if stage > 0 and i == 0 else 1, dims=dims))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)[dims - 1](1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = self.blocks(torch.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(self.pool(out), 1))


def _shape(input_shape, default):
    return tuple(input_shape) if input_shape is not None else default


@register("lenet300")
def lenet300(num_classes, input_shape=None):
    """LeNet-300-100 (open_lth's mnist_lenet_300_100)."""
    return MLP(math.prod(_shape(input_shape, (1, 28, 28))), (300, 100), num_classes)


@register("mlp")
def mlp(num_classes, input_shape=None, widths=(128, 128)):
    """An MLP of any widths (default 128-128)."""
    return MLP(math.prod(_shape(input_shape, (1, 28, 28))), tuple(widths), num_classes)


for _n, _cfg in {2: [64, 64, "M"], 4: [64, 64, "M", 128, 128, "M"],
                 6: [64, 64, "M", 128, 128, "M", 256, 256, "M"]}.items():
    def _convnet(num_classes, input_shape=None, _cfg=_cfg):
        return ConvNet(_cfg, _shape(input_shape, (3, 32, 32)), num_classes)
    _convnet.__doc__ = f"Conv-{_n} (Frankle & Carbin 2019)."
    register(f"conv{_n}")(_convnet)

for _depth, _cfg in _VGG_CFG.items():
    def _vgg(num_classes, input_shape=None, batch_norm=True, _cfg=_cfg):
        return VGG(_cfg, _shape(input_shape, (3, 32, 32)), num_classes, batch_norm)
    _vgg.__doc__ = f"VGG-{_depth} for CIFAR (batch_norm=True by default)."
    register(f"vgg{_depth}")(_vgg)

for _depth in (20, 32, 56):
    def _resnet(num_classes, input_shape=None, width=16, _depth=_depth):
        return CifarResNet(_depth, _shape(input_shape, (3, 32, 32)), num_classes, width)
    _resnet.__doc__ = f"ResNet-{_depth} for CIFAR (1×1 conv shortcuts where the shape changes)."
    register(f"resnet{_depth}")(_resnet)


@register("resnet18")
def resnet18(num_classes, input_shape=None):
    """torchvision's ResNet-18 (ImageNet stem)."""
    import torchvision

    return torchvision.models.resnet18(weights=None, num_classes=num_classes)


@register("vit_tiny")
def vit_tiny(num_classes, input_shape=None, depth=4, width=64, heads=4):
    """A small Vision Transformer (torchvision's; patches of 7 pixels on 28×28 inputs, else 4)."""
    import torchvision

    c, h, w = _shape(input_shape, (3, 32, 32))
    if h != w:
        raise ValueError(f"vit_tiny needs square images, got {h}×{w}")
    patch = 7 if h % 7 == 0 else 4
    model = torchvision.models.VisionTransformer(image_size=h, patch_size=patch, num_layers=depth, num_heads=heads,
                                                 hidden_dim=width, mlp_dim=2 * width, num_classes=num_classes)
    if c != 3:
        model.conv_proj = nn.Conv2d(c, width, patch, stride=patch)
    return model


def default_input_shape(name: str) -> tuple[int, ...]:
    """The input shape a model is built for when none is given."""
    if name in ("lenet300", "mlp"):
        return (1, 28, 28)
    if name == "resnet18":
        return (3, 224, 224)
    return (3, 32, 32)
