"""Classifier registry: a points MLP, two small CPU-friendly CNNs, WRN-28-2 and two text models.

Image and point models take float input. Image models take ``(B, C, H, W)`` in ``[0, 1]``
and normalise inside (``(x - 0.5) / 0.25``), so augmentations and models agree
on one input range; the MLP takes raw 2-D coordinates. Text models take int64
token ids ``(B, L)`` padded with ``text.PAD``; their ``input_shape`` is ``(L, V)`` with ``V`` the vocabulary
size. No model uses
dtype-specific ops, so all run under bf16 autocast (the image models under ``channels_last`` too).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .text import PAD

WRN_BN_MOMENTUM = 0.001  # FixMatch's WRN: BN statistics average over ~1000 steps
WRN_LEAKY_SLOPE = 0.1
# Word vectors move EMBED_LR_SCALE ** 2 times faster under SGD than the rest (see _ScaledEmbedding). wordnet,
# gamma 50, 1,000 steps, seeds 0-1, validation balanced accuracy of fixmatch / balanced: scale 20 0.424 / 0.466,
# 50 0.444 / 0.486, 100 0.452 / 0.497, 200 0.458 / 0.496 (and balanced's rare-class lead gone).
EMBED_LR_SCALE = 100.0
# The text CNN sums word vectors over windows and takes a max, where the mean of text_bow averages them out: at
# scale 100 it diverged (NaN loss) by step 30-80 on both the H200 (bf16) and the CPU (fp32), wordnet defaults.
TEXT_CNN_EMBED_LR_SCALE = 10.0


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


class _ScaledEmbedding(nn.Embedding):
    """``nn.Embedding`` whose table is stored divided by ``scale`` and multiplied back on lookup.

    Same initial vectors (N(0, 1)) and forward, but SGD moves the vectors ``scale ** 2`` times faster: a word's row
    gets a gradient only from the few batches it occurs in, averaged with the sentence's other words, so at the
    learning rate the other models train with (0.03, shared by every dataset) the table would barely move in a
    1,000-step run. Weight decay shrinks the vectors at the same relative rate as before.
    """

    def __init__(self, vocab_size: int, dim: int, scale: float) -> None:
        super().__init__(vocab_size, dim, padding_idx=PAD)
        self.scale = scale
        with torch.no_grad():
            self.weight.div_(scale)

    def forward(self, ids: Tensor) -> Tensor:
        return super().forward(ids) * self.scale


class _MeanEmbedding(nn.Module):
    """Token embeddings averaged over the words of each sequence (padding left out): ``(B, L)`` -> ``(B, dim)``."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.embed = _ScaledEmbedding(vocab_size, dim, EMBED_LR_SCALE)

    def forward(self, ids: Tensor) -> Tensor:
        words = (ids != PAD).unsqueeze(-1)  # (B, L, 1)
        return (self.embed(ids) * words).sum(1) / words.sum(1).clamp(min=1)


class _TextCNN(nn.Module):
    """Kim's CNN: embeddings, 1-D convolutions of widths 3, 4, 5, max over time, concatenated."""

    def __init__(self, vocab_size: int, dim: int, channels: int, widths=(3, 4, 5)) -> None:
        super().__init__()
        self.embed = _ScaledEmbedding(vocab_size, dim, TEXT_CNN_EMBED_LR_SCALE)
        self.convs = nn.ModuleList(nn.Conv1d(dim, channels, w, padding=w // 2) for w in widths)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.embed(ids).transpose(1, 2)  # (B, dim, L)
        pad = (ids == PAD).unsqueeze(1)  # (B, 1, L): padding must not win the max
        outs = [conv(x)[..., :ids.shape[1]].masked_fill(pad, float("-inf")).amax(2) for conv in self.convs]
        return torch.relu(torch.cat(outs, 1))


def _check_text(name: str, input_shape: tuple) -> int:
    """Return the vocabulary size ``V`` of text input ``(L, V)``, or raise ValueError saying what ``name`` needs."""
    if len(input_shape) != 2:
        raise ValueError(f"Model {name!r} needs text: input shape (L, V), L token ids from a vocabulary of V. "
                         f"Got {tuple(input_shape)} instead.")
    return input_shape[1]


def text_bow(*, input_shape: tuple, num_classes: int) -> nn.Module:
    """Mean of 64-d word embeddings, a 128-unit ReLU layer, linear: trains in seconds on a CPU (~1.3M parameters
    at a 20k vocabulary, nearly all in the embedding table, of which a step touches only the batch's words)."""
    vocab = _check_text("text_bow", input_shape)
    return nn.Sequential(_MeanEmbedding(vocab, 64), nn.Linear(64, 128), nn.ReLU(inplace=True),
                         nn.Linear(128, num_classes))


def text_cnn(*, input_shape: tuple, num_classes: int) -> nn.Module:
    """1-D CNN for a GPU: 128-d embeddings, 3 x 256 filters of widths 3-5, max over time, linear (~3.0M
    parameters at a 20k vocabulary)."""
    vocab = _check_text("text_cnn", input_shape)
    return nn.Sequential(_TextCNN(vocab, 128, 256), nn.Linear(3 * 256, num_classes))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "cnn_digits": cnn_digits,
    "cnn32": cnn32,
    "wrn28_2": wrn28_2,
    "text_bow": text_bow,
    "text_cnn": text_cnn,
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


def count_parameters(model: nn.Module) -> int:
    """Total number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
