"""Held-out check set-up on one process and on two DDP ranks (issue 16: "split the work across ranks").

A real dataset of ``--rows`` rows of 32 float32 and an int64 label behind a plain ``Dataset.__getitem__`` (no bulk
access: the held-out check reads every row once, stacks and hashes them), ``holdout=0.1``, one small synthetic
source. The script times ``MixedDataModule.setup("fit")`` inside a Trainer (CPU, ``devices=1`` or ``devices=2,
strategy="ddp"`` over gloo) and the rows each rank read during it; training is skipped. Wall-clock seconds of rank 0,
best of ``--repeats`` fresh set-ups (digest cache cleared). Two ranks help only where the machine has a free core for
each: on a 2-core machine under load the gain is smaller than 2x.

Usage::

    python benchmarks/holdout_ranks.py                  # 200k rows, 1 then 2 ranks (~1 min)
    python benchmarks/holdout_ranks.py --rows 40000 --repeats 1
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset


class Rows(Dataset):
    """``n`` rows behind ``__getitem__`` only, counting reads."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.x = torch.from_numpy(rng.standard_normal((n, 32), dtype=np.float32))
        self.y = torch.from_numpy(rng.integers(0, 10, n))
        self.reads = 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        self.reads += 1
        return self.x[i], self.y[i]


def one_run(rows: int, devices: int, repeats: int) -> dict:
    import pytorch_lightning as pl

    from collapse_guard import MixedDataModule
    from collapse_guard.data import digest_cache

    class Timed(MixedDataModule):
        def setup(self, stage):
            start = time.perf_counter()
            super().setup(stage)
            self.seconds = time.perf_counter() - start

    class Stop(pl.Callback):
        def setup(self, trainer, pl_module, stage):
            raise SystemExit(0)

    class Model(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(32, 10)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    best, reads, rank = float("inf"), 0, 0
    for _ in range(repeats):
        digest_cache.clear_cache()
        real = Rows(rows)
        synthetic = TensorDataset(torch.randn(2000, 32), torch.randint(0, 10, (2000,)))
        dm = Timed(real, {"g": synthetic}, real_fraction=0.5, holdout=0.1, batch_size=256)
        trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, callbacks=[Stop()], max_epochs=1)
        try:
            trainer.fit(Model(), datamodule=dm)
        except SystemExit:
            pass
        best, reads, rank = min(best, dm.seconds), real.reads, trainer.global_rank
    return {"rank": rank, "seconds": best, "reads": reads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--devices", type=int, default=0, help="internal: run one configuration")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    if args.devices:
        result = one_run(args.rows, args.devices, args.repeats)
        print("RESULT " + json.dumps(result), flush=True)  # every rank prints its own
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    print(f"load (1 min) before: {os.getloadavg()[0]:.1f}; {os.cpu_count()} cores; {args.rows} rows")
    print(f"{'ranks':>5}  {'set-up s (rank 0)':>17}  {'rows read per rank':>18}")
    for devices in (1, 2):
        out = subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--repeats", str(args.repeats),
                              "--devices", str(devices)], capture_output=True, text=True, env=env)
        results = [json.loads(line[7:]) for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if not results:
            sys.exit(out.stderr[-3000:])
        first = min(results, key=lambda r: r["rank"])
        print(f"{devices:>5}  {first['seconds']:>17.2f}  {'/'.join(str(r['reads']) for r in sorted(results, key=lambda r: r['rank'])):>18}")


if __name__ == "__main__":
    main()
