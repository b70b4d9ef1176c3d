"""Benchmark: collapse_guard's chunked k-NN precision/recall/density/coverage against the ``prdc`` package.

Both run on the same seeded inputs (default 10,000 real and 10,000 generated 64-D features, k=5); the script
prints the best-of-``repeats`` wall time of each and both sets of values, and checks that they agree to 1e-5
relative. ``prdc`` is run on float64 copies of the features (its exact mode; with float32 input its own
distance rounding flips a few comparisons, shown for reference) and uses its default thread pool
(``n_jobs=8``); ours runs with ``torch.set_num_threads(--threads)`` (default 1, the conservative setting on a
shared machine).

Usage::

    python benchmarks/bench_metrics.py [--n 10000] [--dim 64] [--k 5] [--repeats 3] [--threads 1] [--others]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import time

import torch

from collapse_guard.metrics.functional import (
    effective_rank,
    frechet_distance,
    maximum_mean_discrepancy,
    prdc,
    vendi_score,
)

KEYS = ("precision", "recall", "density", "coverage")


def best_time(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def fmt(values: dict) -> str:
    return "  ".join(f"{k}={float(values[k]):.6f}" for k in KEYS)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="samples per set")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--std", type=float, default=0.8, help="std of the generated Gaussian (real: 1)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads for collapse_guard")
    p.add_argument("--skip-float32-prdc", action="store_true", help="do not also run prdc on float32 input")
    p.add_argument("--others", action="store_true", help="also time Fréchet, MMD², Vendi, effective rank")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    real = torch.randn(args.n, args.dim, generator=g)
    fake = args.std * torch.randn(args.n, args.dim, generator=g)
    real64, fake64 = real.double().numpy(), fake.double().numpy()

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"inputs: real {tuple(real.shape)}, fake {tuple(fake.shape)} (N(0,1) vs N(0,{args.std}^2)), k={args.k}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f}; torch {torch.__version__} with {torch.get_num_threads()} thread(s)"
    )

    prdc(real[:500], fake[:500], k=args.k)  # warm-up
    t_ours, ours = best_time(lambda: prdc(real, fake, k=args.k), args.repeats)
    print(f"collapse_guard prdc          : {t_ours:8.3f} s   {fmt(ours)}")

    import prdc as prdc_pkg  # noqa: E402  (dev dependency)

    def run_pkg(a, b):
        with contextlib.redirect_stdout(io.StringIO()):
            return prdc_pkg.compute_prdc(a, b, args.k)

    t_ref, ref = best_time(lambda: run_pkg(real64, fake64), args.repeats)
    print(f"prdc.compute_prdc (float64)  : {t_ref:8.3f} s   {fmt(ref)}")
    if not args.skip_float32_prdc:
        t_ref32, ref32 = best_time(lambda: run_pkg(real.numpy(), fake.numpy()), 1)
        print(f"prdc.compute_prdc (float32)  : {t_ref32:8.3f} s   {fmt(ref32)}")

    rel = max(abs(float(ours[k]) - float(ref[k])) / max(abs(float(ref[k])), 1e-300) for k in KEYS)
    equal = rel <= 1e-5
    print(f"speed-up vs prdc (float64)   : {t_ref / t_ours:8.2f} x")
    print(f"max relative difference      : {rel:.3e}  ({'equal to 1e-5' if equal else 'NOT EQUAL'})")

    if args.others:
        for name, fn in (
            ("frechet_distance", lambda: frechet_distance(real, fake)),
            ("maximum_mean_discrepancy", lambda: maximum_mean_discrepancy(real, fake)),
            ("vendi_score (fake)", lambda: vendi_score(fake)),
            ("effective_rank (fake)", lambda: effective_rank(fake)),
        ):
            t, v = best_time(fn, args.repeats)
            print(f"{name:29s}: {t:8.3f} s   value={float(v):.6f}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
