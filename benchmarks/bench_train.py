"""Training throughput with and without augmentation, and Lens's loop vs a bare PyTorch loop.

Both loops train the same ResNet-18 (same initial weights, AdamW with the two parameter
groups, per-step cosine schedule) on the same decoded CIFAR-10 images with the same
batch size. The bare loop gets the most favourable setup: the whole subset already
normalised as one float tensor, no per-class bookkeeping, no progress bar. Lens's loop
is ``lens.training.train_epoch`` / ``evaluate`` exactly as ``lens train`` runs them
(uint8 images converted per batch, per-class statistics, tqdm).

A third loop is Lens's loop with augmentation: ``lens.augment.build`` of the ``--augment``
kinds (default: all four, the worst case), the per-image batched transform that ``lens
train --augment-from`` and ``lens experiment`` use, seeded from its own ``torch.Generator``.
Its throughput is compared with the same loop without augmentation (issue 15: target
>= 0.9x).

The loops alternate in chunks of ``--chunk-batches`` batches (bare, lens, lens+augment,
rotating which goes first) so that a noisy shared machine penalises them alike; the script
prints the overall throughput of each, their ratios, and the median of the per-chunk
ratios. Evaluation is compared batch by batch the same way, with and without the 512-d
features. Targets: every ratio >= 0.9.

    .venv/bin/python benchmarks/bench_train.py [--data ../shared/data/cifar10] [--images 4000]
        [--eval-images 2000] [--batch-size 128] [--reps 1] [--chunk-batches 4] [--device auto] [--threads N]
        [--augment random_resized_crop,brightness_contrast,colour_jitter,random_erasing]
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from lens import augment
from lens.datasets import open_source
from lens.models import build_resnet18, channel_stats, normalize, resolve_device
from lens.training import (
    EVAL_BATCH_SIZE,
    build_optimizer,
    evaluate,
    stats_tensors,
    steps_per_epoch,
    to_device_images,
    train_epoch,
)

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bare_train(model, opt, sched, x, y, batch_size, generator, device) -> float:
    model.train()
    _sync(device)
    t0 = time.perf_counter()
    order = torch.randperm(x.shape[0], generator=generator).to(device)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    _sync(device)
    return time.perf_counter() - t0


def bare_eval(model, x, batch_size) -> tuple[float, np.ndarray]:
    model.eval()
    t0 = time.perf_counter()
    outs = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            outs.append(model(x[start : start + batch_size]).cpu())
    return time.perf_counter() - t0, torch.cat(outs).numpy()


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--eval-images", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--reps", type=int, default=1, help="passes over the subset")
    ap.add_argument("--chunk-batches", type=int, default=4, help="batches per timed chunk")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--augment", default=",".join(augment.KINDS),
                    help="comma-separated augmentation kinds for the augmented loop")
    return ap.parse_args()


@dataclass
class Data:
    """The decoded subsets as each loop takes them: uint8 on the device (Lens), normalised up front (bare)."""

    n_train: int
    n_eval: int
    n_classes: int
    xu: torch.Tensor
    yt: torch.Tensor
    xf: torch.Tensor
    xu_eval: torch.Tensor
    xf_eval: torch.Tensor
    mean_t: torch.Tensor
    std_t: torch.Tensor


def _load(args: argparse.Namespace, device: str) -> Data:
    t0 = time.perf_counter()
    source = open_source(args.data)
    train = source.load("train", limit=args.images, seed=0, size=32)
    test = source.load("test", limit=args.eval_images, seed=0, size=32)
    print(f"decoded {len(train):,} train + {len(test):,} test images once in {time.perf_counter() - t0:.1f}s "
          f"(device {device}, {torch.get_num_threads()} threads, batch {args.batch_size})")
    mean, std = channel_stats(train.images)
    mean_t, std_t = stats_tensors(mean, std, device)
    return Data(
        len(train), len(test), len(source.class_names),
        to_device_images(train.images, device), torch.from_numpy(train.labels).to(device),
        normalize(train.images, mean, std).contiguous().to(device),
        to_device_images(test.images, device), normalize(test.images, mean, std).contiguous().to(device),
        mean_t, std_t,
    )


def _train_loops(d: Data, init, args: argparse.Namespace, transform, device: str) -> tuple[list, Any]:
    """One training function per loop (bare, lens, lens + augmentation), each taking a slice; and
    the model the Lens loop trains (evaluated afterwards)."""
    steps = steps_per_epoch(d.n_train, args.batch_size) * (args.reps + 1)  # the lr matters little here

    def fresh():
        m = copy.deepcopy(init)
        opt, sched = build_optimizer(m, head_lr=1e-3, backbone_lr=1e-3, total_steps=steps)
        return m, opt, sched

    bare_m, bare_opt, bare_sched = fresh()
    lens_m, lens_opt, lens_sched = fresh()
    aug_m, aug_opt, aug_sched = fresh()
    g_bare, g_lens, g_aug = (torch.Generator().manual_seed(0) for _ in range(3))
    bs, common = args.batch_size, dict(mean_t=d.mean_t, std_t=d.std_t, num_classes=d.n_classes, progress=False)
    return [
        lambda sl: bare_train(bare_m, bare_opt, bare_sched, d.xf[sl], d.yt[sl], bs, g_bare, device),
        lambda sl: train_epoch(lens_m, lens_opt, lens_sched, d.xu[sl], d.yt[sl], batch_size=bs, generator=g_lens,
                               **common).seconds,
        lambda sl: train_epoch(aug_m, aug_opt, aug_sched, d.xu[sl], d.yt[sl], batch_size=bs, generator=g_aug,
                               transform=transform, **common).seconds,
    ], lens_m


def _alternate(loops: list, slices: list[slice], reps: int) -> tuple[np.ndarray, ...]:
    """Seconds of each loop per slice, the loops run side by side in rotating order.

    On a shared machine the load changes by the second, so each chunk of one loop is compared
    with the chunks of the others run right beside it.
    """
    triples = []
    i = 0
    for _ in range(reps):
        for sl in slices:
            times = [0.0, 0.0, 0.0]
            for j in range(3):  # rotate the order so that no loop always runs first
                k = (i + j) % 3
                times[k] = loops[k](sl)
            triples.append(tuple(times))
            i += 1
    return tuple(np.array(v) for v in zip(*triples))


def _transform_ms(transform, xb, device: str) -> float:
    """The transform alone on one batch (what augmentation adds to each step), in ms."""
    transform(xb)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(10):
        transform(xb)
    _sync(device)
    return (time.perf_counter() - t0) / 10 * 1000


def _eval_loops(d: Data, model) -> list:
    bare_eval(model, d.xf_eval[:EVAL_BATCH_SIZE], EVAL_BATCH_SIZE)  # warm-up
    evaluate(model, d.xu_eval[:EVAL_BATCH_SIZE], mean_t=d.mean_t, std_t=d.std_t, progress=False)
    return [
        lambda sl: bare_eval(model, d.xf_eval[sl], EVAL_BATCH_SIZE)[0],
        lambda sl: evaluate(model, d.xu_eval[sl], mean_t=d.mean_t, std_t=d.std_t, progress=False).seconds,
        lambda sl: evaluate(model, d.xu_eval[sl], mean_t=d.mean_t, std_t=d.std_t, features=True,
                            progress=False).seconds,
    ]


def _print_table(train_times, n_img: int, eval_times, n_ev: int, same: bool, kinds: list[str], aug_ms: float,
                 batch_size: int) -> None:
    tb_all, tl_all, ta_all = train_times
    eb_all, el_all, ef_all = eval_times
    print()
    print(f"{'':34s}{'bare':>9s}{'lens':>9s}{'ratio':>8s}{'median pair':>13s}")
    rows = [
        ("train images/s", n_img / tb_all.sum(), n_img / tl_all.sum(), np.median(tb_all / tl_all)),
        ("eval images/s", n_ev / eb_all.sum(), n_ev / el_all.sum(), np.median(eb_all / el_all)),
        ("eval + 512-d features images/s", n_ev / eb_all.sum(), n_ev / ef_all.sum(), np.median(eb_all / ef_all)),
    ]
    for name, b, l, med in rows:
        print(f"{name:34s}{b:9.1f}{l:9.1f}{l / b:8.3f}{med:13.3f}")
    print(f"eval logits identical (atol 1e-4): {same}")
    print()
    print(f"{'augmentation (' + ','.join(kinds) + ')':34s}")
    print(f"{'':34s}{'plain':>9s}{'augment':>9s}{'ratio':>8s}{'median pair':>13s}")
    print(f"{'train images/s':34s}{n_img / tl_all.sum():9.1f}{n_img / ta_all.sum():9.1f}"
          f"{tl_all.sum() / ta_all.sum():8.3f}{np.median(tl_all / ta_all):13.3f}")
    print(f"transform alone: {aug_ms:.1f} ms per batch of {batch_size} "
          f"({batch_size / aug_ms * 1000:,.0f} images/s)")
    print("ratio = lens / bare (and augment / plain) throughput over all chunks; median pair = median of the "
          "per-chunk ratios. Target: >= 0.9")


def main() -> None:
    args = _args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    d = _load(args, device)
    torch.manual_seed(0)
    init = build_resnet18(d.n_classes).to(device)
    params = {kind: p for kind, _, p in augment.RULES}
    kinds = [k.strip() for k in args.augment.split(",") if k.strip()]
    specs = [augment.AugmentSpec(k, dict(params[k]), "benchmark") for k in kinds]
    transform = augment.build(specs, d.xu.shape[-1], generator=torch.Generator().manual_seed(1))
    loops, lens_m = _train_loops(d, init, args, transform, device)
    warm = slice(0, args.batch_size * 2)  # warm-up: a few batches each (allocator, kernels)
    for loop in loops:
        loop(warm)
    chunk = args.batch_size * args.chunk_batches
    train_times = _alternate(loops, [slice(s, s + chunk) for s in range(0, d.n_train - chunk + 1, chunk)],
                             args.reps)
    tb_all, tl_all, ta_all = train_times
    print(f"  train: {len(tb_all)} chunks of {chunk} images per loop; per-chunk lens/bare ratios "
          f"{np.round(tb_all / tl_all, 2).tolist()}")
    print(f"  per-chunk augmented/plain ratios {np.round(tl_all / ta_all, 2).tolist()}")
    aug_ms = _transform_ms(transform, d.xu[: args.batch_size], device)

    eval_times = _alternate(_eval_loops(d, lens_m),
                            [slice(s, s + EVAL_BATCH_SIZE) for s in range(0, d.n_eval, EVAL_BATCH_SIZE)], args.reps)
    _, bare_logits = bare_eval(lens_m, d.xf_eval, EVAL_BATCH_SIZE)
    lens_logits = evaluate(lens_m, d.xu_eval, mean_t=d.mean_t, std_t=d.std_t, progress=False).logits
    same = np.allclose(bare_logits, lens_logits, atol=1e-4)
    _print_table(train_times, chunk * len(tb_all), eval_times, d.n_eval * args.reps, same, kinds, aug_ms,
                 args.batch_size)


if __name__ == "__main__":
    main()
