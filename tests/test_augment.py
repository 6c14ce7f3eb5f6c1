"""Invariants of the batched augmentations: shape, range, determinism, strength semantics."""
import pytest
import torch

from sslviz.engine.augment import (
    OPS,
    _geometric_matrix,
    _warp,
    class_strength_multiplier,
    jitter_points,
    point_sigma,
    strong_images,
    to_float,
    weak_images,
)


def _gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _images(b: int = 64, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random images: natural-looking enough for colour ops to act on."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, c, 4, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def _index_image(size: int) -> torch.Tensor:
    """One-channel image whose pixel (i, j) holds its own flat index, scaled into [0, 1)."""
    return (torch.arange(size * size, dtype=torch.float32) / (size * size)).reshape(1, 1, size, size)


def test_to_float_range():
    x = torch.tensor([0, 128, 255], dtype=torch.uint8).reshape(1, 1, 1, 3)
    out = to_float(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 128 / 255, 1.0]))


@pytest.mark.parametrize("shape", [(16, 3, 32, 32), (16, 1, 8, 8)])
@pytest.mark.parametrize("strength", [0.0, 1.0, 5.0])
def test_strong_preserves_shape_dtype_range(shape, strength):
    x = torch.rand(shape)
    for out in (
        weak_images(x, hflip=True, generator=_gen(0)),
        strong_images(x, torch.full((shape[0],), strength), hflip=True, generator=_gen(0)),
    ):
        assert out.shape == x.shape and out.dtype == x.dtype
        assert out.min() >= 0 and out.max() <= 1


def test_same_seed_same_output_different_seed_differs():
    x = _images()
    s = torch.ones(len(x))
    a = strong_images(x, s, hflip=True, generator=_gen(1))
    b = strong_images(x, s, hflip=True, generator=_gen(1))
    c = strong_images(x, s, hflip=True, generator=_gen(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_strength_zero_is_exactly_the_weak_view():
    x = _images()
    weak = weak_images(x, hflip=True, generator=_gen(3))
    strength = torch.ones(len(x))
    strength[::2] = 0.0
    strong = strong_images(x, strength, hflip=True, generator=_gen(3))
    assert torch.equal(strong[::2], weak[::2])
    assert not torch.equal(strong[1::2], weak[1::2])


def test_higher_strength_moves_further_from_weak_view():
    x = _images(b=128)
    weak = weak_images(x, hflip=True, generator=_gen(4))
    dists = []
    for s in (0.25, 0.5, 1.0, 2.0):
        strong = strong_images(x, torch.full((len(x),), s), hflip=True, generator=_gen(4))
        dists.append((strong - weak).abs().mean().item())
    assert dists == sorted(dists), dists
    assert dists[-1] > 1.5 * dists[0]


def test_no_hflip_never_flips():
    ramp = torch.linspace(0, 1, 32).expand(128, 1, 32, 32).contiguous()
    out = weak_images(ramp, hflip=False, generator=_gen(5))
    left, right = out[..., :8].mean((1, 2, 3)), out[..., -8:].mean((1, 2, 3))
    assert (left < right).all()
    flipped = weak_images(ramp, hflip=True, generator=_gen(5))
    n_flipped = (flipped[..., :8].mean((1, 2, 3)) > flipped[..., -8:].mean((1, 2, 3))).sum().item()
    assert 32 < n_flipped < 96  # about half


@pytest.mark.parametrize("size", [8, 32])
def test_pad_crop_shift_is_bounded_and_exact(size):
    pad = int(0.125 * size)
    x = _index_image(size).expand(256, 1, size, size)
    out = weak_images(x, hflip=False, generator=_gen(6))
    # The centre pixel tells each sample's shift; the interior must be that exact shift.
    flat_index = (out[:, 0, size // 2, size // 2] * size * size).round().long()
    dy, dx = flat_index // size - size // 2, flat_index % size - size // 2
    assert dy.abs().max() <= pad and dx.abs().max() <= pad
    assert set(dy.tolist()) == set(dx.tolist()) == set(range(-pad, pad + 1))  # every shift occurs
    for b in range(0, 256, 17):
        inner = out[b, 0, pad:size - pad, pad:size - pad]
        src = x[0, 0, pad + dy[b]:size - pad + dy[b], pad + dx[b]:size - pad + dx[b]]
        assert torch.equal(inner, src)


def test_cutout_is_a_grey_box_of_expected_side():
    white = torch.ones(128, 3, 32, 32)
    out = strong_images(white, torch.ones(128), hflip=True, generator=_gen(7), n_ops=0)
    grey = (out == 0.5).all(1)  # (B, H, W)
    assert ((out == 0.5) | (out == 1.0)).all()
    counts = grey.sum((1, 2))
    assert (counts > 0).all() and (counts <= 16 * 16).all()  # side 0.5 * 32, clipped at borders
    assert (counts == 16 * 16).any()
    rows, cols = grey.any(2).sum(1), grey.any(1).sum(1)
    assert torch.equal(rows * cols, counts)  # a filled rectangle


def test_cutout_side_grows_with_strength_and_is_capped():
    white = torch.ones(256, 1, 32, 32)
    side = {}
    for s in (0.5, 1.0, 1.5, 4.0):
        out = strong_images(white, torch.full((256,), s), hflip=False, generator=_gen(8), n_ops=0)
        side[s] = (out == 0.5).any(2).sum(-1).max().item()
    assert side == {0.5: 8, 1.0: 16, 1.5: 24, 4.0: 24}


def test_warp_fills_exposed_pixels_with_grey():
    white = torch.ones(4, 1, 32, 32)
    op = torch.full((4,), OPS.index("translate_x"))
    matrix = _geometric_matrix(op, torch.ones(4), 32, 32)  # shift by 0.3 * 32 = 9.6 pixels
    out = _warp(white, matrix)
    assert out.min() >= 0.5 - 1e-6
    exposed = (out < 0.75).float().mean().item()
    assert abs(exposed - 0.3) < 0.05


def test_jitter_points():
    x = torch.zeros(20000, 2)
    sigma = torch.full((20000,), 0.5)
    sigma[:10000] = 0.0
    out = jitter_points(x, sigma, generator=_gen(10))
    assert out.shape == x.shape
    assert torch.equal(out[:10000], x[:10000])
    assert abs(out[10000:].std().item() - 0.5) < 0.02
    scalar = jitter_points(x, 0.1, generator=_gen(10))
    assert abs(scalar.std().item() - 0.1) < 0.005


def test_class_strength_multiplier_by_hand():
    torch.testing.assert_close(class_strength_multiplier([100, 25, 4], 0.5), torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(
        class_strength_multiplier([100, 25, 4], 0.5, max_multiplier=10.0), torch.tensor([1.0, 2.0, 5.0])
    )
    torch.testing.assert_close(class_strength_multiplier([100, 25, 4], 0.0), torch.ones(3))
    torch.testing.assert_close(class_strength_multiplier(torch.tensor([10, 0]), 1.0, 100.0), torch.tensor([1.0, 10.0]))
    assert class_strength_multiplier([5, 5], 1.0).dtype == torch.float32


def test_point_jitter_never_below_the_weak_view():
    # Labeled points of a class with multiplier m get extra strength aug_strength * (m - 1): near 0 for classes
    # just rarer than the head. Their jitter must still be at least the weak view's (it was 0.5 * s before).
    torch.testing.assert_close(point_sigma(torch.tensor([0.0, 0.1, 1.0])), torch.tensor([0.1, 0.14, 0.5]))
    assert point_sigma(None) == pytest.approx(point_sigma(torch.tensor(0.0)).item()) == pytest.approx(0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_agree_statistically():
    x = _images(b=512)
    s = torch.rand(512, generator=_gen(11)) * 2
    cpu = strong_images(x, s, hflip=True, generator=_gen(12))
    cuda = strong_images(x.cuda(), s.cuda(), hflip=True, generator=_gen(12, "cuda")).cpu()
    assert cuda.shape == cpu.shape
    assert abs(cpu.mean().item() - cuda.mean().item()) < 0.02
    assert abs(cpu.std().item() - cuda.std().item()) < 0.02
    # Strength 0 is exact on both devices.
    zero = torch.zeros(512, device="cuda")
    torch.testing.assert_close(
        strong_images(x.cuda(), zero, hflip=True, generator=_gen(13, "cuda")),
        weak_images(x.cuda(), hflip=True, generator=_gen(13, "cuda")),
        rtol=0,
        atol=0,
    )


def test_cpu_subset_colour_ops_equal_the_whole_batch_path_used_on_cuda():
    # The CUDA branch (every op on the whole batch, torch.where per sample) runs here on the CPU,
    # so the GPU path's outputs are checked against the CPU path's without a GPU.
    from sslviz.engine.augment import OPS, _colour_ops

    g = torch.Generator().manual_seed(3)
    x = torch.rand(256, 3, 16, 16, generator=g)
    op = torch.randint(0, len(OPS), (256,), generator=g)
    magnitude = torch.rand(256, generator=g) * 1.5
    signed = torch.where(torch.rand(256, generator=g) < 0.5, -magnitude, magnitude)
    subset = _colour_ops(x, op, magnitude, signed, whole_batch=False)
    batched = _colour_ops(x, op, magnitude, signed, whole_batch=True)
    torch.testing.assert_close(subset, batched, rtol=0, atol=1e-6)
    assert not torch.equal(subset, x)  # the ops did change the colour-op samples


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_strong_view_and_thresholds_never_sync_with_the_host_on_cuda():
    from sslviz.engine import techniques

    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.rand(64, 3, 32, 32, device="cuda")
    strength = torch.rand(64, device="cuda") * 2
    predicted = torch.randint(-1, 10, (500,), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        weak_images(x, hflip=True, generator=g)
        strong_images(x, strength, hflip=True, generator=g)
        techniques.flexmatch_thresholds(0.95, predicted, 10, warmup=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
