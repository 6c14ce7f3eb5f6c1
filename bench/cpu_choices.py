"""Measure the two CPU-path choices in sslviz, each side by side in one run.

1. Colour ops of the strong augmentation: run each op only on the samples that drew it
   (the CPU path) vs every op on the whole batch with a per-sample ``torch.where``
   (the CUDA path, which avoids host syncs). Same generator state, same output.
2. Memory layout for the image CNNs' training step: channels_last vs contiguous (NCHW).

    python bench/cpu_choices.py --threads 1 --repeats 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sslviz.engine import augment  # noqa: E402
from sslviz.engine.models import build_model  # noqa: E402


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def colour_ops(batch: int, size: int, repeats: int) -> tuple[float, float]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g)
    op = torch.randint(0, len(augment.OPS), (batch,), generator=g)
    magnitude = torch.rand(batch, generator=g)
    subset = _median_ms(lambda: augment._colour_ops(x, op, magnitude, magnitude, whole_batch=False), repeats)
    whole = _median_ms(lambda: augment._colour_ops(x, op, magnitude, magnitude, whole_batch=True), repeats)
    return subset, whole


def layout(model_name: str, shape: tuple, batch: int, repeats: int) -> tuple[float, float]:
    out = []
    for channels_last in (True, False):
        torch.manual_seed(0)
        model = build_model(model_name, input_shape=shape, num_classes=10)
        x, y = torch.rand(batch, *shape), torch.randint(0, 10, (batch,))
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def step():
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        out.append(_median_ms(step, repeats))
    return out[0], out[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (sslviz workers use cores // slots)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=512, help="images per step (B * (1 + mu) = 512 at B=64, mu=7)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats}")
    subset, whole = colour_ops(args.batch * 7 // 8, 32, args.repeats)
    print(f"colour ops (448,3,32,32): subset {subset:.1f} ms, whole batch {whole:.1f} ms, ratio {whole / subset:.2f}x")
    for name, shape in (("cnn_digits", (1, 8, 8)), ("cnn32", (3, 32, 32))):
        cl, nchw = layout(name, shape, args.batch, args.repeats)
        print(f"{name} step ({args.batch} images): channels_last {cl:.1f} ms, NCHW {nchw:.1f} ms, ratio {nchw / cl:.2f}x")


if __name__ == "__main__":
    main()
