"""A small VAE on real 8x8 digits for self-consuming loops, and the indicators of Shumailov et al.'s VAE experiment.

Shumailov et al. (Nature 631, 2024; official notebook) train a VAE on MNIST, sample a dataset from it, train the
next VAE on those samples only, and so on; as a measure of diversity they encode every generation's samples with
the generation-0 encoder and take the standard deviation of the latent means: 0.674 -> 0.608 -> 0.527 -> 0.468 ->
0.433 over 5 generations. :class:`DigitsVAE` is that experiment scaled to scikit-learn's 1797
real 8x8 digits and a 2-core CPU (64-32-8), and :func:`vae_metrics` adds the k-NN indicators against held-out real
digits (recall and coverage; Kynkäänniemi et al. 2019, Naeem et al. 2020).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from collapse_guard._compat import LightningModule
from collapse_guard._digits import split_digits_parts
from reproductions._epoch_loss import EpochLoss

PIXEL_MAX = 16.0


def digits_split(n_train: int = 1000, seed: int = 0) -> Tuple[TensorDataset, TensorDataset]:
    """scikit-learn's 1797 real 8x8 digits, pixels scaled to ``[0, 1]``, split into training and held-out real data.

    Args:
        n_train: real training digits (generation 0); the other ``1797 - n_train`` are held out.
        seed: seed of the permutation.

    Returns:
        ``(train, heldout)``: ``TensorDataset`` s of one float32 tensor ``(n, 64)`` each (unlabelled: the VAE is
        unconditional).

    Raises:
        ValueError: if ``n_train`` is not in ``[1, 1796]``.

    Example::

        >>> train, heldout = digits_split(1000)
        >>> len(train), len(heldout), tuple(train[0][0].shape)
        (1000, 797, (64,))
    """
    if not 1 <= n_train < 1797:
        raise ValueError(f"n_train must be in [1, 1796], got {n_train}")
    parts = split_digits_parts(seed, {"train": n_train, "heldout": None})
    return tuple(TensorDataset(torch.as_tensor(x / PIXEL_MAX)) for x, _ in parts.values())


def dataset_tensor(ds) -> Tensor:
    """The first tensor of a ``TensorDataset`` (or of any dataset of ``(x, ...)`` tuples, stacked)."""
    if isinstance(ds, TensorDataset):
        return ds.tensors[0]
    return torch.stack([ds[i][0] for i in range(len(ds))])


class DigitsVAE(LightningModule):
    r"""A small fully-connected VAE (64-``hidden``-``latent``) for 8x8 digits in ``[0, 1]``.

    Encoder ``64 -> hidden (ReLU) -> (mu, log var)`` of a diagonal Gaussian posterior; decoder
    ``latent -> hidden (ReLU) -> 64`` with a sigmoid mean. The likelihood is Gaussian with one learned variance
    shared by all pixels, so the objective does not depend on the scale of the data (a Bernoulli likelihood on
    the blurred means of a previous generation drives the posterior into collapse within 2-3 generations, far
    faster than published). The training loss is the negative ELBO per sample (reconstruction + KL).

    :meth:`sample` draws ``z ~ N(0, I)`` and returns the decoder means, as generated images are usually taken
    (and as the next generation sees them): the pixel noise of the likelihood is not added.

    Args:
        hidden: hidden width.
        latent: latent dimension.
        lr: Adam learning rate.

    Example::

        >>> vae = DigitsVAE()
        >>> x = vae.sample(4, torch.Generator().manual_seed(0)).tensors[0]
        >>> tuple(x.shape), bool((x >= 0).all() and (x <= 1).all())
        ((4, 64), True)

    The experiment it scales down: Shumailov et al., "AI models collapse when trained on recursively generated
    data", Nature 631 (2024), VAE on MNIST (official notebook).
    """

    def __init__(self, hidden: int = 32, latent: int = 8, lr: float = 3e-3, dim: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.latent = latent
        self.lr = lr
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.log_sigma2 = nn.Parameter(torch.tensor(-3.0))  # shared pixel log-variance of the likelihood
        self.epoch_loss = EpochLoss()

    def encode(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Posterior mean and log-variance, each ``(n, latent)``."""
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def decode(self, z: Tensor) -> Tensor:
        """Decoder mean in ``[0, 1]``, ``(n, 64)``."""
        return torch.sigmoid(self.decoder(z))

    def negative_elbo(self, x: Tensor) -> Tensor:
        """Per-sample negative ELBO (nats, Gaussian likelihood with the learned shared variance), ``(n,)``."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        sq = (self.decode(z) - x).pow(2).sum(1)
        d = x.shape[1]
        rec = 0.5 * sq / self.log_sigma2.exp() + 0.5 * d * (self.log_sigma2 + math.log(2 * math.pi))
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
        return rec + kl

    def training_step(self, batch, batch_idx):
        x = batch[0]
        loss = self.negative_elbo(x).mean()
        self.epoch_loss.add(loss, len(x))
        return loss

    def on_train_epoch_end(self) -> None:
        self.epoch_loss.log(self, "train_loss")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> TensorDataset:
        """``n`` generated digits (decoder means of ``z ~ N(0, I)``) as a ``TensorDataset`` of ``(n, 64)``.

        Args:
            n: number of samples.
            generator: the ``torch.Generator`` of the prior draws (CPU).

        Returns:
            ``TensorDataset(x)``, the format of :func:`digits_split`'s datasets.
        """
        z = torch.randn(n, self.latent, generator=generator).to(self.device)
        return TensorDataset(self.decode(z).cpu())

    @torch.no_grad()
    def latent_means(self, x: Tensor) -> Tensor:
        """Posterior means of ``x``, ``(n, latent)`` (the features of the indicators below)."""
        return self.encode(x.to(self.device))[0].cpu()

    @torch.no_grad()
    def reconstruction_mse(self, x: Tensor) -> float:
        """Mean squared error per pixel of the reconstructions ``decode(mu(x))``."""
        x = x.to(self.device)
        return float((self.decode(self.encode(x)[0]) - x).pow(2).mean())


def latent_std(encoder: DigitsVAE, x: Tensor) -> float:
    """Shumailov et al.'s diversity measure: the std of the latent means of ``x`` under ``encoder``.

    The standard deviation over all entries of the ``(n, latent)`` matrix of posterior means (generation-0
    encoder, the generation's samples). 0.674 -> 0.433 over 5 generations of ``replace`` on MNIST (one run).

    Args:
        encoder: the generation-0 VAE.
        x: samples ``(n, 64)``.

    Returns:
        The std (float, ``ddof=1``).
    """
    return float(encoder.latent_means(x).std())


def vae_metrics(k: int = 5) -> Dict[str, callable]:
    """The indicators of the digits VAE loop, for :class:`~collapse_guard.loop.LightningSelfConsumingLoop`.

    * ``latent_std``: :func:`latent_std` of the generation's samples under the generation-0 encoder;
    * ``latent/{precision,recall,density,coverage}``: k-NN indicators of the samples against held-out real
      digits, in the feature space of the generation-0 encoder's latent means (a fixed feature map, as FID's
      Inception features);
    * ``pixel/{precision,recall,density,coverage}``: the same in pixel space;
    * ``heldout_mse``: the generation's reconstruction error on held-out real digits (per pixel).

    Args:
        k: neighbour rank of the k-NN balls (MAD used 5).

    Returns:
        ``name -> f(Generation)``.
    """
    from collapse_guard.metrics.functional import prdc

    def _latent_std(gen) -> float:
        return latent_std(gen.first_model, dataset_tensor(gen.samples))

    def _latent_prdc(gen):
        enc = gen.first_model
        return prdc(enc.latent_means(dataset_tensor(gen.heldout)), enc.latent_means(dataset_tensor(gen.samples)), k=k)

    def _pixel_prdc(gen):
        return prdc(dataset_tensor(gen.heldout), dataset_tensor(gen.samples), k=k)

    def _heldout_mse(gen) -> float:
        return gen.model.reconstruction_mse(dataset_tensor(gen.heldout))

    return {"latent_std": _latent_std, "latent": _latent_prdc, "pixel": _pixel_prdc, "heldout_mse": _heldout_mse}


#: the indicators the VAE guard watches, with the names the tables print
VAE_INDICATORS = {"latent std": "latent_std", "recall": "latent/recall", "coverage": "latent/coverage"}


def vae_guard(margin: float = 0.15, refit: bool = True, **kwargs):
    """The generation guard of the digits VAE loop: every :data:`VAE_INDICATORS` within ``margin`` of generation 0.

    Three rules, ``Rule(name, mode="max", relative=margin, baseline="first")``: the std of the latent means
    (Shumailov et al.'s measure), k-NN recall and coverage against held-out real digits. Two independent
    generation-0 fits (seeds 0-7, 1000 real digits, 100 epochs) differ with a standard deviation of 7.0% (latent
    std), 1.9% (recall) and 8.8% (coverage) of the mean: the default margin of 15% is 2.1, 7.9 and 1.7 of those
    standard deviations, so an occasional injection is set off by the noise of coverage rather than by collapse.

    Args:
        margin: relative margin below generation 0, in ``(0, 1]``.
        refit: reject and refit the generation that breaks the margin (:class:`~collapse_guard.loop.GenerationGuard`).
        kwargs: other :class:`~collapse_guard.loop.GenerationGuard` arguments; defaults ``real_fraction_step=0.25``,
            ``max_real_fraction=0.75`` (every generation keeps at least 25% synthetic samples).

    Returns:
        A :class:`~collapse_guard.loop.GenerationGuard`.
    """
    from collapse_guard.callbacks.rules import Rule
    from collapse_guard.loop.guard import GenerationGuard

    rules = [Rule(m, mode="max", relative=margin, baseline="first", name=n) for n, m in VAE_INDICATORS.items()]
    opts = {"real_fraction_step": 0.25, "max_real_fraction": 0.75, **kwargs}
    return GenerationGuard(rules, action="inject", refit=refit, **opts)


def run_vae_experiment(
    generations: int = 5,
    seeds=(0, 1, 2),
    margin: float = 0.15,
    max_epochs: int = 100,
    n_train: int = 1000,
    refit: bool = True,
    num_threads: Optional[int] = 1,
    progress=None,
    workers: int = 1,
    worker_nice: int = 0,
) -> dict:
    """Shumailov et al.'s VAE experiment on real digits, unguarded and guarded, for each seed.

    For every seed: ``replace`` over ``generations`` generations without a guard, then the same loop (same seed:
    generation 0 is the same fit) with :func:`vae_guard`. The guarded run takes the fits it shares with the
    unguarded one (generation 0, and each later attempt 0 until the guard first acts) from it instead of
    repeating them (:class:`reproductions._reuse.ReusingLoop`): the results are those of two separate runs.

    Args:
        generations: generations after generation 0.
        seeds: run seeds.
        margin: the guard's relative margin below generation 0.
        max_epochs: epochs per fit.
        n_train: real training digits (the rest, ``1797 - n_train``, is held out).
        refit: the guard rejects and refits a generation that breaks the margin (else it raises the next
            generation's real share only).
        num_threads: torch threads during the runs.
        progress: ``f(str)`` called with a line after every run, or ``None``.
        workers: processes that run the seeds side by side (``spawn``; each seed's result is the same as in one
            process, the seeds being independent); 1 runs them here, one after the other.
        worker_nice: niceness added to those processes (``os.nice``): with other work running beside them (the
            slow tests on two cores), they yield the CPU to it. No effect on the results.

    Returns:
        ``{"runs": {seed: {"replace": NeuralLoopResult, "guarded": NeuralLoopResult}}, "summary": {...}}``; the
        summary holds, per indicator, the mean over seeds of generation 0, of the last generation unguarded and of
        the worst accepted generation guarded (values and changes relative to generation 0), and the guard's real
        share.
    """
    seeds = tuple(seeds)
    args = (generations, margin, max_epochs, n_train, refit, num_threads)
    runs = {}
    if workers > 1 and len(seeds) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")  # no fork of a process that has run torch / Lightning
        pool_args = dict(mp_context=context, initializer=_be_nice, initargs=(worker_nice,))
        with ProcessPoolExecutor(min(workers, len(seeds)), **pool_args) as pool:
            futures = {seed: pool.submit(_run_vae_seed, seed, *args) for seed in seeds}
            for seed, future in futures.items():
                runs[seed] = future.result()
                if progress is not None:
                    for name, res in runs[seed].items():
                        progress(_run_line(seed, name, res))
    else:
        for seed in seeds:
            runs[seed] = _run_vae_seed(seed, *args, progress=progress)
    return {"runs": runs, "summary": summarize_vae(runs, generations, margin)}


def _be_nice(increment: int) -> None:
    if increment:
        import os

        os.nice(increment)


def _run_line(seed, name, res) -> str:
    return f"seed {seed} {name}: {len(res.records)} fits, {sum(r.seconds for r in res.records):.1f} s"


def vae_loop(guard=None, max_epochs: int = 100, num_threads: Optional[int] = 1, cache=None):
    """The self-consuming loop of :func:`run_vae_experiment` (``replace``, a fresh :class:`DigitsVAE` each fit).

    Args:
        guard: a :class:`~collapse_guard.loop.GenerationGuard` (e.g. :func:`vae_guard`) or ``None``.
        max_epochs: epochs per fit.
        num_threads: torch threads during the run.
        cache: a :class:`reproductions._reuse.FitCache` shared with the loops of the same seed (only ``guard``
            may differ), or ``None``: a plain :class:`~collapse_guard.loop.LightningSelfConsumingLoop`.
    """
    from collapse_guard.loop.neural import LightningSelfConsumingLoop
    from reproductions._reuse import ReusingLoop

    options = dict(
        metrics=vae_metrics(),
        guard=guard,
        max_epochs=max_epochs,
        num_threads=num_threads,
        generator_name="DigitsVAE(64-32-8)",
        generator_params={"sampling": "decoder mean of z ~ N(0, I)", "max_epochs": max_epochs},
    )
    if cache is None:
        return LightningSelfConsumingLoop(lambda g: DigitsVAE(), "replace", **options)
    return ReusingLoop(lambda g: DigitsVAE(), "replace", cache=cache, **options)


def _run_vae_seed(seed, generations, margin, max_epochs, n_train, refit, num_threads, progress=None) -> dict:
    """One seed of :func:`run_vae_experiment`: ``{"replace": NeuralLoopResult, "guarded": NeuralLoopResult}``."""
    from reproductions._reuse import FitCache

    real, heldout = digits_split(n_train=n_train, seed=0)
    cache = FitCache()  # the unguarded run's fits, for the guarded run
    out = {}
    for name, guard in (("replace", None), ("guarded", vae_guard(margin, refit=refit))):
        loop = vae_loop(guard, max_epochs=max_epochs, num_threads=num_threads, cache=cache)
        out[name] = loop.run(real, generations, heldout=heldout, seed=seed)
        if progress is not None:
            progress(_run_line(seed, name, out[name]))
    return out


def summarize_vae(runs: dict, generations: int, margin: float) -> dict:
    """Summary of :func:`run_vae_experiment`'s runs (means over seeds); see there."""
    summary: dict = {"margin": margin, "generations": generations, "indicators": {}}
    for label, key in VAE_INDICATORS.items():
        g0, last, worst, worst_unguarded = [], [], [], []
        for res in runs.values():
            base = res["replace"].value(key, 0)
            g0.append(base)
            last.append(res["replace"].series(key)[-1])
            guarded = res["guarded"].series(key)
            worst.append(float(guarded[1:].min()) if len(guarded) > 1 else float("nan"))
        g0a, lasta, worsta = np.array(g0), np.array(last), np.array(worst)
        summary["indicators"][label] = {
            "generation0": float(g0a.mean()),
            "generation0_std": float(g0a.std(ddof=1)) if len(g0a) > 1 else float("nan"),
            "last_unguarded": float(lasta.mean()),
            "change_unguarded": float(np.mean(lasta / g0a - 1.0)),
            "worst_guarded": float(worsta.mean()),
            "change_guarded_worst": float(np.min(worsta / g0a - 1.0)),
        }
    shares, stops, injections = [], [], []
    for res in runs.values():
        recs = [r for r in res["guarded"].records if r.accepted and r.generation > 0]
        total = sum(sum(r.samples_per_source.values()) for r in recs)
        real_n = sum(r.samples_per_source.get("real", 0) + r.samples_per_source.get("reserve", 0) for r in recs)
        shares.append(real_n / max(1, total))
        stops.append(res["guarded"].stopped_at)
        injections.append(sum(1 for e in res["guarded"].events if e.action == "inject"))
    summary["guarded_real_share"] = float(np.mean(shares))
    summary["guarded_stopped_at"] = stops
    summary["guarded_completed"] = [s is None for s in stops]
    summary["guarded_injection_events"] = injections
    return summary
