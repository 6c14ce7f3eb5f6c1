"""Classifier registry: a points MLP, two small CPU-friendly CNNs and WRN-28-2.

Every model takes float input. Image models take ``(B, C, H, W)`` in ``[0, 1]``
and normalise inside (``(x - 0.5) / 0.25``), so augmentations and models agree
on one input range; the MLP takes raw 2-D coordinates. No model uses
dtype-specific ops, so all run under ``channels_last`` and bf16 autocast.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

WRN_BN_MOMENTUM = 0.001  # FixMatch's WRN: BN statistics average over ~1000 steps
WRN_LEAKY_SLOPE = 0.1


class _Standardize(nn.Module):
    """Map ``[0, 1]`` pixels to roughly zero mean, unit variance."""

    def forward(self, x: Tensor) -> Tensor:
        return (x - 0.5) / 0.25


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (no bias, BN follows), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _check_image_shape(name: str, input_shape: tuple, needs: str, fits: Callable[[int, int], bool]) -> int:
    """Return the channel count of ``(C, H, W)``, or raise ValueError saying what ``name`` needs."""
    if len(input_shape) != 3 or not fits(input_shape[1], input_shape[2]):
        raise ValueError(f"Model {name!r} needs input shape {needs}. Got {tuple(input_shape)} instead.")
    return input_shape[0]


# -- models ---------------------------------------------------------------------
def mlp(*, input_shape: tuple, num_classes: int) -> nn.Module:
    """Points MLP ``D -> 128 -> 128 -> K`` with ReLU; needs ``input_shape == (D,)``."""
    if len(input_shape) != 1:
        raise ValueError(f"Model 'mlp' needs input shape (D,), e.g. (2,). Got {tuple(input_shape)} instead.")
    return nn.Sequential(
        nn.Linear(input_shape[0], 128), nn.ReLU(inplace=True),
        nn.Linear(128, 128), nn.ReLU(inplace=True),
        nn.Linear(128, num_classes),
    )


def cnn_digits(*, input_shape: tuple, num_classes: int) -> nn.Module:
    """Small CNN for tiny images (sklearn digits are 8x8), about 56k parameters.

    conv32 - conv64 stride 2 - conv64 stride 2 - global average pool - linear.
    Striding early keeps a 512-image FixMatch step fast on a CPU. Needs
    ``(C, H, W)`` with ``H, W <= 16``: larger images make it slow for no gain.
    """
    channels = _check_image_shape(
        "cnn_digits", input_shape, "(C, H, W) with H, W <= 16", lambda h, w: h <= 16 and w <= 16
    )
    return nn.Sequential(
        _Standardize(),
        _conv_bn_relu(channels, 32),
        _conv_bn_relu(32, 64, stride=2),
        _conv_bn_relu(64, 64, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )


def cnn32(*, input_shape: tuple, num_classes: int) -> nn.Module:
    """CPU-sized CNN for 32x32 images, about 0.25M parameters.

    Channels 16 - 32 - 64 - 128 - 128 at 32, 16, 8, 4, 4 pixels, global
    average pool, linear head. Narrow at high resolution (where compute goes)
    and wide at low resolution (where parameters are cheap), so a 512-image
    step stays under a second on two CPU cores. Needs ``(C, 32, 32)``.
    """
    channels = _check_image_shape("cnn32", input_shape, "(C, 32, 32)", lambda h, w: h == w == 32)
    return nn.Sequential(
        _Standardize(),
        _conv_bn_relu(channels, 16),
        _conv_bn_relu(16, 32, stride=2),
        _conv_bn_relu(32, 64, stride=2),
        _conv_bn_relu(64, 128, stride=2),
        _conv_bn_relu(128, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    )


class _WideBlock(nn.Module):
    """Pre-activation residual block: (BN, LeakyReLU, conv3x3) twice, plus shortcut.

    When the shape changes, the shortcut is a 1x1 conv on the pre-activated
    input, as in Zagoruyko & Komodakis' WRN.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in, momentum=WRN_BN_MOMENTUM)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, momentum=WRN_BN_MOMENTUM)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.act = nn.LeakyReLU(WRN_LEAKY_SLOPE, inplace=True)
        reshapes = stride != 1 or c_in != c_out
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if reshapes else None

    def forward(self, x: Tensor) -> Tensor:
        pre = self.act(self.bn1(x))
        out = self.conv2(self.act(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """Wide ResNet (pre-activation) for 32x32 images, as used by FixMatch.

    Parameters
    ----------
    in_channels : int
        Image channels.
    num_classes : int
        Output logits.
    depth : int
        ``6 n + 4`` layers; ``n`` blocks per stage.
    widen : int
        Width multiplier over the base widths 16, 32, 64.
    """

    def __init__(self, in_channels: int, num_classes: int, depth: int = 28, widen: int = 2) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4. Got {depth} instead.")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        blocks = []
        for stage, stride in enumerate((1, 2, 2)):
            blocks += [
                _WideBlock(widths[stage] if i == 0 else widths[stage + 1], widths[stage + 1], stride if i == 0 else 1)
                for i in range(n)
            ]
        self.features = nn.Sequential(
            _Standardize(),
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            *blocks,
            nn.BatchNorm2d(widths[-1], momentum=WRN_BN_MOMENTUM),
            nn.LeakyReLU(WRN_LEAKY_SLOPE, inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(widths[-1], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """Kaiming-normal convs (fan_out, leaky ReLU), unit BN, Xavier head with zero bias."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=WRN_LEAKY_SLOPE, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_normal_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


def wrn28_2(*, input_shape: tuple, num_classes: int) -> nn.Module:
    """WRN-28-2 (about 1.47M parameters), FixMatch's CIFAR-10 model; needs ``(C, 32, 32)``."""
    channels = _check_image_shape("wrn28_2", input_shape, "(C, 32, 32)", lambda h, w: h == w == 32)
    return WideResNet(channels, num_classes, depth=28, widen=2)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "cnn_digits": cnn_digits,
    "cnn32": cnn32,
    "wrn28_2": wrn28_2,
}


class Classifier(nn.Module):
    """A backbone that maps inputs to features, a linear head on them, and room for extra heads.

    ``forward`` is ``fc(backbone(x))``. Techniques that need features (ABC's balanced head, ACR's second
    branch) add their heads to ``heads`` before training starts, so the optimiser, the EMA copy and the
    checkpoint carry them like any other parameter.
    """

    def __init__(self, backbone: nn.Module, fc: nn.Linear) -> None:
        super().__init__()
        self.backbone, self.fc = backbone, fc
        self.heads = nn.ModuleDict()

    @property
    def feature_dim(self) -> int:
        return self.fc.in_features

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.backbone(x))


def build_model(name: str, *, input_shape: tuple, num_classes: int) -> Classifier:
    """Build registered model ``name`` for inputs of ``input_shape`` (no batch axis), as a :class:`Classifier`.

    Raises
    ------
    ValueError
        If ``name`` is not in ``MODELS`` (the message lists the valid names),
        or the model cannot take ``input_shape`` (the message says what it needs).
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Valid names: {', '.join(sorted(MODELS))}.")
    net = MODELS[name](input_shape=tuple(input_shape), num_classes=num_classes)
    if isinstance(net, WideResNet):
        return Classifier(net.features, net.fc)
    *body, fc = net  # the Sequential models end in their linear head
    return Classifier(nn.Sequential(*body), fc)


def default_model_name(input_shape: tuple, device: str) -> str:
    """Pick a model for the data: MLP for points, small CNN for tiny images, WRN-28-2 only on CUDA.

    >>> default_model_name((2,), "cpu"), default_model_name((1, 8, 8), "cpu")
    ('mlp', 'cnn_digits')
    >>> default_model_name((3, 32, 32), "cpu"), default_model_name((3, 32, 32), "cuda:0")
    ('cnn32', 'wrn28_2')
    """
    if len(input_shape) == 1:
        return "mlp"
    if max(input_shape[1:]) <= 16:
        return "cnn_digits"
    # WRN-28-2 takes seconds per step on a CPU; the small CNN keeps CPU runs interactive.
    return "wrn28_2" if str(device).startswith("cuda") else "cnn32"


def count_parameters(model: nn.Module) -> int:
    """Total number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
