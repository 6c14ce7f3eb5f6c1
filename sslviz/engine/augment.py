"""Batched tensor augmentations for FixMatch: weak, strong (RandAugment + Cutout), point jitter and text (EDA).

Every op works on a whole batch on the tensor's own device: no PIL, no Python
loop over samples. All randomness comes from the ``torch.Generator`` passed in
(it must live on the same device as the data), and each call draws a fixed
number of values whatever the data or strengths are, so a run is reproducible
and its generator state can be checkpointed.

Strong augmentation takes a per-sample ``strength``: 0 gives the weak view,
1 is standard FixMatch strength, larger values augment harder (up to the
clamps below). Colour ops are computed for the whole batch and picked per
sample with ``torch.where``; geometric ops are composed into one affine matrix
per sample and applied with a single ``grid_sample``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .lazy import F, torch  # torch on first use: see sslviz/engine/lazy.py

if TYPE_CHECKING:
    from torch import Tensor

from .text import PAD

WEAK_POINT_SIGMA = 0.1  # toy2d points lie roughly in [-3, 3]
STRONG_POINT_SIGMA = 0.5

PAD_FRACTION = 0.125  # weak translation: up to 12.5% of H, as in FixMatch
MAX_MAGNITUDE = 2.0  # strength * U[0, 1] is clamped here, so strength > 2 adds nothing
ENHANCE_MAX = 0.9  # brightness/colour/contrast/sharpness factor 1 +- 0.9 at magnitude 1
POSTERIZE_MAX_DROP = 4  # bits dropped at magnitude 1 (8 -> 4 bits, as in FixMatch)
ROTATE_MAX_DEG = 30.0
SHEAR_MAX = 0.3
TRANSLATE_MAX = 0.3  # fraction of the image side
CUTOUT_FRACTION = 0.5  # cutout side = 0.5 * H at strength 1, as in FixMatch
CUTOUT_MAX_FRACTION = 0.75
GREY = 0.5  # fill for cutout and for pixels warped in from outside the image

OPS = (
    "identity", "autocontrast", "brightness", "color", "contrast", "equalize", "posterize",
    "rotate", "sharpness", "shear_x", "shear_y", "solarize", "translate_x", "translate_y",
)
GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def to_float(x_uint8: Tensor) -> Tensor:
    """Convert uint8 images ``(B, C, H, W)`` to float32 in ``[0, 1]``."""
    return x_uint8.to(torch.float32).div_(255.0)


def weak_images(x: Tensor, *, hflip: bool, generator: torch.Generator) -> Tensor:
    """FixMatch weak view: random horizontal flip, then pad-and-crop translation.

    Parameters
    ----------
    x : Tensor
        Float images ``(B, C, H, W)`` in ``[0, 1]``.
    hflip : bool
        Flip each sample with probability 0.5. Off for data where left/right
        matters (digits).
    generator : torch.Generator
        Source of randomness, on ``x.device``.

    Returns
    -------
    Tensor
        Same shape and dtype. Each sample is shifted by an integer offset in
        ``[-pad, pad]`` per axis, ``pad = int(0.125 * H)``, with reflect
        padding, so pixel values are copied exactly.
    """
    B, _, H, W = x.shape
    pad = int(PAD_FRACTION * H)
    # Always draw the flips so the generator advances the same way either way.
    flip = (_rand(generator, x, B) < 0.5) & hflip
    offsets = torch.randint(0, 2 * pad + 1, (2, B), generator=generator, device=x.device)
    rows = offsets[0, :, None] + torch.arange(H, device=x.device)  # (B, H)
    cols = torch.arange(W, device=x.device).expand(B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + offsets[1, :, None]  # (B, W)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad else x
    return _gather_rows_cols(padded, rows, cols)


def strong_images(
    x: Tensor,
    strength: Tensor,
    *,
    hflip: bool,
    generator: torch.Generator,
    n_ops: int = 2,
) -> Tensor:
    """FixMatch strong view: weak view, then RandAugment with per-sample strength, then Cutout.

    Parameters
    ----------
    x : Tensor
        Float images ``(B, C, H, W)`` in ``[0, 1]``.
    strength : Tensor
        ``(B,)`` floats >= 0 (a Python float is broadcast). Each op's magnitude
        is ``U[0, 1] * strength`` clamped to ``MAX_MAGNITUDE``; the Cutout side
        is ``min(0.5 * strength, 0.75) * H``.
    hflip : bool
        Passed to :func:`weak_images`.
    generator : torch.Generator
        Source of randomness, on ``x.device``.
    n_ops : int
        RandAugment rounds; in each, every sample picks one op from ``OPS``
        uniformly, and a random sign for signed ops.

    Returns
    -------
    Tensor
        Same shape and dtype, in ``[0, 1]``. A sample with strength 0 equals
        ``weak_images(x, hflip=hflip, generator=g)`` for a generator ``g`` in
        the same state, exactly: the weak view takes the first draws.
    """
    B, _, H, W = x.shape
    weak = weak_images(x, hflip=hflip, generator=generator)
    strength = torch.as_tensor(strength, dtype=x.dtype, device=x.device).expand(B)
    out = weak
    inverse_map = torch.eye(3, dtype=x.dtype, device=x.device).expand(B, 3, 3)
    has_geometric = torch.zeros(B, dtype=torch.bool, device=x.device)
    for _ in range(n_ops):  # rounds, not samples: each round is batched
        op = torch.randint(0, len(OPS), (B,), generator=generator, device=x.device)
        magnitude = (_rand(generator, x, B) * strength).clamp(max=MAX_MAGNITUDE)
        signed = torch.where(_rand(generator, x, B) < 0.5, -magnitude, magnitude)
        out = _colour_ops(out, op, magnitude, signed)
        # grid_sample maps output to input coordinates, so later ops multiply on the right.
        inverse_map = inverse_map @ _geometric_matrix(op, signed, H, W)
        has_geometric |= _op_mask(op, *GEOMETRIC_OPS)
    # Samples without a geometric op skip resampling to stay exact.
    out = torch.where(has_geometric[:, None, None, None], _warp(out, inverse_map), out)
    out = _cutout(out, strength, generator).clamp_(0.0, 1.0)
    return torch.where((strength > 0)[:, None, None, None], out, weak)


def jitter_points(x: Tensor, sigma: Tensor | float, *, generator: torch.Generator) -> Tensor:
    """Add Gaussian noise ``N(0, sigma^2)`` to 2-D points ``(B, 2)``; ``sigma`` is a float or ``(B,)``."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + (sigma[:, None] if torch.is_tensor(sigma) else sigma) * noise


WEAK_TOKEN_DROP = 0.1  # weak text view: each word dropped with this probability
EDA_RATE = 0.1  # EDA's alpha: each operation touches this fraction of the words at strength 1
EDA_MAX_RATE = 0.5  # rate cap, so the rarest classes keep half their words in place
SWAP_ROUNDS = 8  # at most this many swaps per sentence (rate * length expected, as EDA's n = alpha * l)


def weak_text(ids: Tensor, *, generator: torch.Generator) -> Tensor:
    """Weak text view: light token dropout (each word deleted with probability ``WEAK_TOKEN_DROP``; one always stays).

    Parameters
    ----------
    ids : Tensor
        int64 ``(B, L)`` token ids, words first and ``PAD`` after.
    generator : torch.Generator
        Source of randomness, on ``ids.device``.

    Returns
    -------
    Tensor
        Same shape and dtype, the kept words left-aligned.
    """
    return _delete_tokens(ids, torch.full((ids.shape[0],), WEAK_TOKEN_DROP, device=ids.device), generator)


def strong_text(ids: Tensor, strength: Tensor, synonyms: Tensor, *, generator: torch.Generator) -> Tensor:
    """EDA strong view: weak view, then synonym replacement, random insertion, random swap and random deletion.

    Parameters
    ----------
    ids : Tensor
        int64 ``(B, L)`` token ids, words first and ``PAD`` after.
    strength : Tensor
        ``(B,)`` floats >= 0 (a Python float is broadcast). Every operation's rate is
        :func:`eda_rate`, ``min(EDA_RATE * strength, EDA_MAX_RATE)``: replacement and deletion hit each word with that probability,
        insertion adds a synonym of a random word of the sentence after each word with that probability (words
        pushed past ``L`` are cut), and ``rate * length`` swaps are made on average (at most ``SWAP_ROUNDS``).
    synonyms : Tensor
        int64 ``(V, S)``: synonym ids of each token id, -1 after (``Dataset.synonyms``); words without one are
        neither replaced nor inserted.
    generator : torch.Generator
        Source of randomness, on ``ids.device``.

    Returns
    -------
    Tensor
        Same shape and dtype. A sample with strength 0 equals ``weak_text(ids, generator=g)`` for a generator ``g``
        in the same state: the weak view takes the first draws.
    """
    weak = weak_text(ids, generator=generator)
    strength = torch.as_tensor(strength, dtype=torch.float32, device=ids.device).expand(ids.shape[0])
    rate = eda_rate(strength)
    out = _replace_synonyms(weak, rate, synonyms, generator)
    out = _insert_synonyms(out, rate, synonyms, generator)
    out = _swap_tokens(out, rate, generator)
    out = _delete_tokens(out, rate, generator)
    return torch.where((strength > 0)[:, None], out, weak)


def eda_rate(strength: Tensor) -> Tensor:
    """Per-sample rate of each EDA operation: ``min(EDA_RATE * strength, EDA_MAX_RATE)``.

    >>> eda_rate(torch.tensor([0.0, 1.0, 3.0, 10.0]))
    tensor([0.0000, 0.1000, 0.3000, 0.5000])
    """
    return (EDA_RATE * strength).clamp(max=EDA_MAX_RATE)


def _random_synonym(words: Tensor, synonyms: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A uniformly drawn synonym of each token id in ``words`` and whether it has one (else the word itself)."""
    table = synonyms[words]  # (..., S)
    count = (table >= 0).sum(-1)
    pick = (torch.rand(words.shape, generator=generator, device=words.device) * count).long()
    pick = pick.clamp(max=table.shape[-1] - 1).unsqueeze(-1)
    return torch.where(count > 0, table.gather(-1, pick).squeeze(-1), words), count > 0


def _replace_synonyms(ids: Tensor, rate: Tensor, synonyms: Tensor, generator: torch.Generator) -> Tensor:
    """Each word with a synonym is replaced by a random one with probability ``rate``."""
    candidate, has = _random_synonym(ids, synonyms, generator)
    hit = torch.rand(ids.shape, generator=generator, device=ids.device) < rate[:, None]
    return torch.where(hit & has & (ids != PAD), candidate, ids)


def _insert_synonyms(ids: Tensor, rate: Tensor, synonyms: Tensor, generator: torch.Generator) -> Tensor:
    """After each word, with probability ``rate``, a synonym of a random word of the same sentence."""
    B, L = ids.shape
    length = (ids != PAD).sum(1, keepdim=True)
    source = (torch.rand((B, L), generator=generator, device=ids.device) * length).long().clamp(max=L - 1)
    candidate, has = _random_synonym(ids.gather(1, source), synonyms, generator)
    insert = (torch.rand((B, L), generator=generator, device=ids.device) < rate[:, None]) & has & (ids != PAD)
    # Interleave word, optional insertion, word, ...: then keep what is kept, left-aligned, cut at L.
    both = torch.stack([ids, candidate], 2).reshape(B, 2 * L)
    keep = torch.stack([ids != PAD, insert], 2).reshape(B, 2 * L)
    return _compact(both, keep)[:, :L]


def _swap_tokens(ids: Tensor, rate: Tensor, generator: torch.Generator) -> Tensor:
    """``SWAP_ROUNDS`` rounds; in each, a sentence swaps two random words with probability ``rate * length /
    SWAP_ROUNDS`` (so ``rate * length`` swaps on average, as EDA)."""
    B, L = ids.shape
    length = (ids != PAD).sum(1, keepdim=True)
    draws = torch.rand((SWAP_ROUNDS, 3, B, 1), generator=generator, device=ids.device)
    p_swap = rate[:, None] * length / SWAP_ROUNDS
    out = ids.clone()
    for u in draws:  # rounds, not samples: each round is batched
        i = (u[0] * length).long().clamp(max=L - 1)
        j = (u[1] * length).long().clamp(max=L - 1)
        a, b = out.gather(1, i), out.gather(1, j)
        swap = u[2] < p_swap
        out.scatter_(1, i, torch.where(swap, b, a))
        out.scatter_(1, j, torch.where(swap, a, b))
    return out


def _delete_tokens(ids: Tensor, rate: Tensor, generator: torch.Generator) -> Tensor:
    """Each word deleted with probability ``rate``; a sentence that would lose every word keeps its first."""
    words = ids != PAD
    keep = words & (torch.rand(ids.shape, generator=generator, device=ids.device) >= rate[:, None])
    keep[:, 0] |= ~keep.any(1) & words[:, 0]
    return _compact(ids, keep)


def _compact(ids: Tensor, keep: Tensor) -> Tensor:
    """The kept ids of each row, in order and left-aligned, ``PAD`` after.

    >>> _compact(torch.tensor([[5, 6, 7, 8]]), torch.tensor([[True, False, True, False]])).tolist()
    [[5, 7, 0, 0]]
    """
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices
    kept = ids.gather(1, order)
    return torch.where(torch.arange(ids.shape[1], device=ids.device) < keep.sum(1, keepdim=True), kept, PAD)


def class_strength_multiplier(
    class_counts: Sequence[int] | Tensor, alpha: float, max_multiplier: float = 3.0
) -> Tensor:
    """Per-class strong-augmentation multiplier that grows as a class gets rarer.

    ``m_c = min((n_max / n_c) ** alpha, max_multiplier)``, with ``n_c = 0``
    treated as 1. ``alpha = 0`` gives all ones (plain FixMatch).

    Parameters
    ----------
    class_counts : sequence of int or Tensor
        ``(K,)`` labelled examples per class.
    alpha : float
        Exponent, >= 0.
    max_multiplier : float
        Cap, so the rarest classes are not augmented beyond recognition.

    Returns
    -------
    Tensor
        ``(K,)`` float32, on ``class_counts``' device when it is a tensor.

    Examples
    --------
    >>> class_strength_multiplier([100, 25, 4], alpha=0.5)
    tensor([1., 2., 3.])
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float32).clamp(min=1.0)
    return ((counts.max() / counts) ** alpha).clamp(max=max_multiplier)


def point_sigma(strength: Tensor | None) -> Tensor | float:
    """Jitter of 2-D points: the weak sigma at strength None or 0, rising linearly to the strong sigma at 1.

    As for images, where strength 0 is exactly the weak view, so extra augmentation never means less jitter.

    >>> point_sigma(None), point_sigma(torch.tensor([0.0, 1.0, 0.5]))
    (0.1, tensor([0.1000, 0.5000, 0.3000]))
    """
    if strength is None:
        return WEAK_POINT_SIGMA
    return WEAK_POINT_SIGMA + (STRONG_POINT_SIGMA - WEAK_POINT_SIGMA) * strength


# -- helpers --------------------------------------------------------------------
def _rand(generator: torch.Generator, x: Tensor, n: int) -> Tensor:
    """``n`` uniform draws on ``x``'s device and dtype."""
    return torch.rand(n, generator=generator, device=x.device, dtype=x.dtype)


def _op_mask(op: Tensor, *names: str) -> Tensor:
    """Boolean ``(B,)``: the sample's op is one of ``names``."""
    mask = torch.zeros_like(op, dtype=torch.bool)
    for name in names:
        mask |= op == OPS.index(name)
    return mask


def _gather_rows_cols(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``out[b, c, i, j] = x[b, c, rows[b, i], cols[b, j]]``."""
    B, C, _, Wp = x.shape
    H, W = rows.shape[1], cols.shape[1]
    x = x.gather(2, rows[:, None, :, None].expand(B, C, H, Wp))
    return x.gather(3, cols[:, None, None, :].expand(B, C, H, W))


def _grey(x: Tensor) -> Tensor:
    """Luma ``(B, 1, H, W)``, ITU-R 601 weights for RGB (as PIL's ``convert('L')``)."""
    if x.shape[1] == 3:
        return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    return x.mean(1, keepdim=True)


def _blend(degenerate: Tensor, x: Tensor, factor: Tensor) -> Tensor:
    """PIL ``ImageEnhance``: ``degenerate + factor * (x - degenerate)``."""
    return degenerate + factor[:, None, None, None] * (x - degenerate)


def _autocontrast(x: Tensor) -> Tensor:
    """Stretch each channel to ``[0, 1]``; constant channels are left alone."""
    lo = x.amin((2, 3), keepdim=True)
    hi = x.amax((2, 3), keepdim=True)
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp(min=1e-6), x)


def _equalize(x: Tensor) -> Tensor:
    """Histogram-equalize each channel over 256 levels; constant channels are left alone."""
    B, C, H, W = x.shape
    levels = (x * 255).round().long().clamp(0, 255).reshape(B * C, H * W)
    hist = torch.zeros(B * C, 256, device=x.device).scatter_add_(
        1, levels, torch.ones(levels.shape, device=x.device)
    )
    cdf = hist.cumsum(1)
    cdf_min = cdf.gather(1, levels.amin(1, keepdim=True))  # count at the darkest level present
    span = H * W - cdf_min
    lut = (cdf - cdf_min) / span.clamp(min=1)
    out = lut.gather(1, levels).reshape(B, C, H, W).to(x.dtype)
    return torch.where((span > 0).reshape(B, C, 1, 1), out, x)


def _posterize(x: Tensor, magnitude: Tensor) -> Tensor:
    """Keep ``8 - round(4 * magnitude)`` bits (at least 2) of each 8-bit level."""
    bits = (8 - (POSTERIZE_MAX_DROP * magnitude).round()).clamp(min=2)
    step = (2.0 ** (8 - bits))[:, None, None, None]
    return torch.floor((x * 255).round() / step) * step / 255


def _solarize(x: Tensor, magnitude: Tensor) -> Tensor:
    """Invert levels >= ``256 * (1 - magnitude)`` (PIL threshold semantics on 8-bit levels)."""
    threshold = (256.0 / 255.0) * (1 - magnitude)
    return torch.where(x >= threshold[:, None, None, None], 1 - x, x)


def _sharpness_degenerate(x: Tensor) -> Tensor:
    """PIL's SMOOTH kernel ``[[1,1,1],[1,5,1],[1,1,1]] / 13`` per channel, edges replicated."""
    # 3x3 box sum plus 4x the centre; avg_pool is much faster than a depthwise conv on CPU.
    box_sum = 9 * F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (box_sum + 4 * x) / 13


def _colour_ops(x: Tensor, op: Tensor, magnitude: Tensor, signed: Tensor, *, whole_batch: bool | None = None) -> Tensor:
    """Apply each sample's colour op (geometric and identity ops pass ``x`` through).

    On CUDA every op runs on the whole batch and ``torch.where`` picks per sample:
    no host sync. On the CPU, where compute is the bottleneck, each op runs only on
    the samples that drew it (about 1/14 of the batch each).
    """
    # Enhance factors 1 +- 0.9 * m, kept positive so strengths > 1 cannot invert.
    factor = (1 + ENHANCE_MAX * signed).clamp(min=0.05)
    ops = {
        "autocontrast": lambda x, f, m: _autocontrast(x),
        "brightness": lambda x, f, m: _blend(torch.zeros_like(x), x, f),
        "color": lambda x, f, m: _blend(_grey(x), x, f),
        "contrast": lambda x, f, m: _blend(_grey(x).mean((1, 2, 3), keepdim=True), x, f),
        "equalize": lambda x, f, m: _equalize(x),
        "posterize": lambda x, f, m: _posterize(x, m),
        "sharpness": lambda x, f, m: _blend(_sharpness_degenerate(x), x, f),
        "solarize": lambda x, f, m: _solarize(x, m),
    }
    if x.is_cuda if whole_batch is None else whole_batch:
        out = x
        for name, apply in ops.items():
            out = torch.where(_op_mask(op, name)[:, None, None, None], apply(x, factor, magnitude), out)
    else:
        out = x.clone()
        for name, apply in ops.items():
            idx = _op_mask(op, name).nonzero().squeeze(1)
            if len(idx):
                out[idx] = apply(x[idx], factor[idx], magnitude[idx])
    return out.clamp(0.0, 1.0)


def _geometric_matrix(op: Tensor, signed: Tensor, H: int, W: int) -> Tensor:
    """Per-sample ``(B, 3, 3)`` output-to-input map in pixel units about the image centre."""
    B = op.shape[0]
    eye = torch.eye(3, dtype=signed.dtype, device=signed.device).expand(B, 3, 3)
    angle = signed * math.radians(ROTATE_MAX_DEG)
    cos, sin = torch.cos(angle), torch.sin(angle)
    shear = signed * SHEAR_MAX
    matrices = {name: eye.clone() for name in GEOMETRIC_OPS}
    matrices["rotate"][:, 0, 0], matrices["rotate"][:, 0, 1] = cos, -sin
    matrices["rotate"][:, 1, 0], matrices["rotate"][:, 1, 1] = sin, cos
    matrices["shear_x"][:, 0, 1] = shear
    matrices["shear_y"][:, 1, 0] = shear
    matrices["translate_x"][:, 0, 2] = signed * TRANSLATE_MAX * W
    matrices["translate_y"][:, 1, 2] = signed * TRANSLATE_MAX * H
    out = eye
    for name, matrix in matrices.items():
        out = torch.where(_op_mask(op, name)[:, None, None], matrix, out)
    return out


def _warp(x: Tensor, inverse_map: Tensor) -> Tensor:
    """Resample ``x`` through pixel-unit maps ``(B, 3, 3)``; outside pixels become grey."""
    _, _, H, W = x.shape
    # Pixel offsets u from the centre are normalised as 2u/W (align_corners=False).
    # Rows of an identity scaled by Python scalars (kernel arguments): torch.tensor([...], device=cuda), or
    # assigning a scalar into one element, is a blocking host-to-device copy (caught by the CUDA sync test).
    to_norm = torch.eye(3, dtype=x.dtype, device=x.device)
    to_pixel = torch.eye(3, dtype=x.dtype, device=x.device)
    to_norm[0].mul_(2.0 / W), to_norm[1].mul_(2.0 / H)
    to_pixel[0].mul_(W / 2.0), to_pixel[1].mul_(H / 2.0)
    theta = (to_norm @ inverse_map @ to_pixel)[:, :2]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Zero padding of (x - grey) fills with grey, as FixMatch's fill=(128, 128, 128).
    return F.grid_sample(x - GREY, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + GREY


def _cutout(x: Tensor, strength: Tensor, generator: torch.Generator) -> Tensor:
    """Grey square of side ``min(0.5 * strength, 0.75) * H`` at a uniform centre, clipped at borders."""
    B, _, H, W = x.shape
    side = ((CUTOUT_FRACTION * strength).clamp(max=CUTOUT_MAX_FRACTION) * H).round().long()
    u = torch.rand(2, B, generator=generator, device=x.device)
    centre = torch.stack([u[0] * H, u[1] * W]).long()
    start = centre - side // 2  # (2, B)
    rows = torch.arange(H, device=x.device)
    cols = torch.arange(W, device=x.device)
    in_rows = (rows >= start[0, :, None]) & (rows < (start[0] + side)[:, None])  # (B, H)
    in_cols = (cols >= start[1, :, None]) & (cols < (start[1] + side)[:, None])  # (B, W)
    box = in_rows[:, :, None] & in_cols[:, None, :]
    return torch.where(box[:, None], torch.full_like(x, GREY), x)
