"""A character-level language model trained on real text mixed with generated text, guarded by collapse_guard.

    python integration_examples/language_model.py            # about 80 s on 2 CPU cores
    python integration_examples/language_model.py --quick    # about 30 s

The first half of this file is "your" code: a DataModule of real English text (the help texts that ship with
CPython, ``pydoc_data.topics``) cut into 65-character windows, batches ``{"input_ids", "labels"}`` with the labels
already shifted (``labels[:, t]`` is the character after ``input_ids[:, t]``), and a small causal transformer whose
``forward(input_ids)`` returns logits ``(B, T, V)``.

The second half makes generated text the way published collapse happens (a character 5-gram model fitted on the real
training text, then refitted on its own samples generation after generation at temperature 0.7: rare words die out,
the text narrows to a few frequent phrases, "the same as the same as") and trains four times with the same model,
seed and epochs: on real text only, guarded; with the real share dropping from 90% to 10% after 6 epochs and
generation 12 filling the rest, unguarded; the same guarded by ``HeldOutRealCheck()`` and ``CollapseGuard()``; and
the same schedule with a healthy source (the first generation at temperature 1), guarded. The guard must act on the
collapsed source and leave the healthy one and the real-only fit alone.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from side_by_side import fit_record, four_fits, print_tables, real_losses  # the tables below, shared by the examples

CONTEXT = 64
FIRST_CHAR, VOCAB = 32, 95  # printable ASCII: characters 32..126 are tokens 0..94


# -- your code, unchanged -------------------------------------------------------------------------------------------
def encode(text: str) -> np.ndarray:
    """Characters to token ids (whitespace runs become one space, anything outside printable ASCII a '?')."""
    ids = np.frombuffer(" ".join(text.split()).encode("ascii", "replace"), dtype=np.uint8).astype(np.int64)
    return ids - FIRST_CHAR


def decode(ids) -> str:
    return "".join(chr(int(i) + FIRST_CHAR) for i in ids)


class Windows(Dataset):
    """Token windows ``(N, CONTEXT + 1)`` as samples ``{"input_ids": w[:-1], "labels": w[1:]}``."""

    def __init__(self, windows) -> None:
        self.windows = torch.as_tensor(windows, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        w = self.windows[i]
        return {"input_ids": w[:-1], "labels": w[1:]}


class HelpTextDataModule(pl.LightningDataModule):
    """CPython's help texts (about 450,000 characters) in 65-character windows: train / val (512) / test (1024)."""

    def __init__(self, batch_size: int = 32, val_size: int = 512, test_size: int = 1024, seed: int = 0) -> None:
        super().__init__()
        self.batch_size, self.val_size, self.test_size, self.seed = batch_size, val_size, test_size, seed

    def setup(self, stage: str) -> None:
        from pydoc_data.topics import topics

        ids = encode(" ".join(topics[k] for k in sorted(topics)))
        n = len(ids) // (CONTEXT + 1)
        windows = np.unique(ids[: n * (CONTEXT + 1)].reshape(n, CONTEXT + 1), axis=0)  # no window twice
        windows = windows[np.random.default_rng(self.seed).permutation(len(windows))]
        val, test = self.val_size, self.val_size + self.test_size
        self.val, self.test, self.train = Windows(windows[:val]), Windows(windows[val:test]), Windows(windows[test:])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=256)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test, batch_size=256)


class CharTransformer(pl.LightningModule):
    """A causal transformer: embedding 64, 2 layers of 4 heads, context 64; ``forward(input_ids)`` -> logits."""

    def __init__(self, dim: int = 64, layers: int = 2, lr: float = 3e-3) -> None:
        super().__init__()
        self.lr = lr
        self.embed = nn.Embedding(VOCAB, dim)
        self.position = nn.Parameter(torch.randn(CONTEXT, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, 4, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, VOCAB)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(CONTEXT), persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        h = self.embed(input_ids) + self.position[:t]
        return self.head(self.blocks(h, mask=self.causal[:t, :t], is_causal=True))

    def loss(self, batch: dict) -> torch.Tensor:
        return F.cross_entropy(self(batch["input_ids"]).flatten(0, 1), batch["labels"].flatten())

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train_loss", loss)
        return loss

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self.loss(batch), batch_size=len(batch["labels"]))  # the mean token loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


# -- synthetic text: generations of a character n-gram model trained on its own samples ----------------------------
class CharNGram:
    """A character n-gram model (counts of each context's next character), sampled many sequences at once.

    ``temperature`` < 1 sharpens the counts (``count ** (1 / temperature)``): the frequent continuations win.
    """

    def __init__(self, order: int = 5) -> None:
        self.order = order

    def fit(self, windows: np.ndarray) -> "CharNGram":
        k = self.order
        grams = np.lib.stride_tricks.sliding_window_view(windows, k + 1, axis=1).reshape(-1, k + 1)
        codes, self.counts = np.unique(grams @ VOCAB ** np.arange(k, -1, -1), return_counts=True)
        self.next, context = codes % VOCAB, codes // VOCAB
        self.contexts, self.row_start, self.row_len = np.unique(context, return_index=True, return_counts=True)
        self.row = np.repeat(np.arange(len(self.contexts)), self.row_len)  # codes are sorted: rows are contiguous
        self.starts = windows[:, :k]
        return self

    def sample(self, n: int, length: int, temperature: float, rng: np.random.Generator) -> np.ndarray:
        """``n`` sequences of ``length`` tokens, each begun with the first characters of a fitted sequence."""
        w = self.counts.astype(np.float64) ** (1.0 / temperature)
        cum = np.cumsum(w)
        row_total = np.add.reduceat(w, self.row_start)
        before = np.append(0.0, np.cumsum(row_total)[:-1])
        cum = self.row + (cum - before[self.row]) / row_total[self.row]  # row r's choices lie in (r, r + 1]
        out = np.empty((n, length), dtype=np.int64)
        out[:, : self.order] = self.starts[rng.integers(len(self.starts), size=n)]
        place = VOCAB ** np.arange(self.order - 1, -1, -1)
        for t in range(self.order, length):
            code = out[:, t - self.order: t] @ place
            row = np.minimum(np.searchsorted(self.contexts, code), len(self.contexts) - 1)
            unseen = self.contexts[row] != code  # a context only seen at the end of a sequence: jump anywhere
            row[unseen] = rng.integers(len(self.contexts), size=int(unseen.sum()))
            pick = np.searchsorted(cum, row + rng.random(n), side="right")
            out[:, t] = self.next[np.clip(pick, self.row_start[row], self.row_start[row] + self.row_len[row] - 1)]
        return out


def synthetic_text(real_dm: HelpTextDataModule, collapsed_generation: int = 12, samples: int = 2000,
                   seed: int = 0) -> dict:
    """``{"healthy": ..., "collapsing": ...}`` ``SyntheticSource``s of ``samples`` windows each.

    healthy: generation 1 at temperature 1 (a 5-gram model of the real training text);
    collapsing: generation ``collapsed_generation`` of a chain refitted on its own samples at temperature 0.7.
    """
    from collapse_guard import SyntheticSource

    real_dm.setup("fit")
    real = real_dm.train.windows.numpy()  # the generator sees the real training split only
    rng = np.random.default_rng(seed)
    healthy = CharNGram().fit(real).sample(samples, CONTEXT + 1, 1.0, rng)
    current = real
    for g in range(collapsed_generation):  # each generation as large as the real training text, the last `samples`
        n = samples if g == collapsed_generation - 1 else len(real)
        current = CharNGram().fit(current).sample(n, CONTEXT + 1, 0.7, rng)
    return {
        "healthy": SyntheticSource(Windows(healthy), generator="char 5-gram", generation=1,
                                   params={"temperature": 1.0}),
        "collapsing": SyntheticSource(Windows(current), generator="char 5-gram", generation=collapsed_generation,
                                      params={"temperature": 0.7, "regime": "replace"}),
    }


# -- four fits: your model and DataModule, with the lines that add collapse_guard ----------------------------------
#: epochs, windows an epoch, epochs at 90% real text before the real share drops to 10%, held-out and test windows,
#: windows of each synthetic source
FULL = {"epochs": 14, "per_epoch": 640, "warmup": 6, "val_size": 512, "test_size": 1024, "samples": 2000}
QUICK = {"epochs": 10, "per_epoch": 320, "warmup": 6, "val_size": 256, "test_size": 512, "samples": 1000}


def real_share(warmup: int):
    """The share of real windows in each epoch's batches: 90% for ``warmup`` epochs, then 10%."""
    return lambda epoch: 0.9 if epoch < warmup else 0.1


def trainer(epochs: int, callbacks: list, out: str) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                      default_root_dir=out, num_sanity_val_steps=0)


def fit(source, guarded: bool, epochs: int, per_epoch: int, warmup: int, data: dict, out: str) -> dict:
    """One fit of ``CharTransformer`` on ``HelpTextDataModule`` mixed with ``source`` (``None``: real text only)."""
    from collapse_guard import CollapseGuard, HeldOutRealCheck, MixedDataModule, RatioMonitor

    pl.seed_everything(0, verbose=False)
    real_dm = HelpTextDataModule(**data)
    dm = MixedDataModule(
        real=real_dm,                                   # your DataModule: its batches reach training_step unchanged
        synthetic=source,                               # {"name": SyntheticSource}, or None for real text only
        real_fraction=real_share(warmup) if source else 1.0,  # the real share of every batch, per epoch
        holdout="val",                                  # your validation set: held out, never trained on
        reserve=0.3,                                    # fresh real text for the guard to inject
        samples_per_epoch=per_epoch,
    )
    check = HeldOutRealCheck()                          # infers a language model from the (B, T) integer labels
    guard = CollapseGuard() if guarded else None        # the default rules of that task
    model = CharTransformer()
    fitted = trainer(epochs, [RatioMonitor(), check] + ([guard] if guard else []), out)
    fitted.fit(model, datamodule=dm)

    final = real_losses(model, real_dm, lambda: trainer(1, [], out), "test_loss")
    return fit_record(fitted, check, guard, dm, heldout_ppl=float(np.exp(final["held-out"])),
                      test_ppl=float(np.exp(final["test"])))


def print_table(fits: dict) -> None:
    """Per fit and epoch: the real share, the held-out real loss, perplexity, token accuracy and the guard's action."""
    print_tables(fits, [("loss", "collapse/heldout_real/loss", ".3f"), ("ppl", "collapse/heldout_real/perplexity", ".2f"),
                         ("acc", "collapse/heldout_real/token_acc", ".3f")],
                 [("held-out ppl", "heldout_ppl", ".2f"), ("test ppl", "test_ppl", ".2f"),
                         ("real share", "real_share", ".2f")])


def main(quick: bool = False, out: str = "runs/language_model") -> dict:
    """The four fits; prints their table and returns ``{fit name: {ratio, checks, events, heldout_ppl, test_ppl,
    real_share}}`` (``events`` is ``None`` for the unguarded fit)."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    settings = QUICK if quick else FULL
    run = (settings["epochs"], settings["per_epoch"], settings["warmup"])
    data = {"val_size": settings["val_size"], "test_size": settings["test_size"]}
    sources = synthetic_text(HelpTextDataModule(**data), collapsed_generation=12, samples=settings["samples"])
    healthy, collapsing = {"gen1": sources["healthy"]}, {"gen12": sources["collapsing"]}
    fits = four_fits(lambda source, guarded: fit(source, guarded, *run, data, out), healthy, collapsing)
    print()
    print_table(fits)
    print()
    real = HelpTextDataModule(**data)
    real.setup("fit")
    for name, windows in (("real", real.train.windows), ("healthy", sources["healthy"].data.windows),
                          ("collapsing", sources["collapsing"].data.windows)):
        words = decode(windows[:1000].flatten()).split()
        print(f"{name:>10}: {len(set(words)):>4} distinct words in 1000 windows, e.g. {decode(windows[1])!r}")
    print(f"\n{time.perf_counter() - start:.0f} s")
    return fits


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller, faster run")
    parser.add_argument("--out", default="runs/language_model", help="Lightning's root folder")
    args = parser.parse_args()
    for noise in ("does not have many workers", "LeafSpec", "no `validation_step`", "ambiguous collection"):
        warnings.filterwarnings("ignore", f".*{noise}.*")
    main(quick=args.quick, out=args.out)
