"""LightningSelfConsumingLoop and GenerationGuard on a tiny neural generator: regimes, provenance, guard, determinism."""
import math
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from collapse_guard import Rule, SyntheticSource
from collapse_guard._compat import LightningModule
from collapse_guard.loop import GenerationGuard, LightningSelfConsumingLoop, NeuralLoopResult

N_REAL, N_HELD = 48, 16


class TinyGaussian(LightningModule):
    """A 2-D Gaussian fitted by gradient descent on the negative log-likelihood; samples in the data's format."""

    def __init__(self):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(2))
        self.log_sigma = nn.Parameter(torch.zeros(2))

    def training_step(self, batch, batch_idx):
        x = batch[0]
        z = (x - self.mu) / self.log_sigma.exp()
        return (0.5 * z.pow(2) + self.log_sigma).sum(1).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.2)

    def sample(self, n, generator):
        eps = torch.randn(n, 2, generator=generator)
        return (self.mu + self.log_sigma.exp() * eps).detach()  # a tensor: the loop wraps it in a TensorDataset


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    real = TensorDataset(torch.randn(N_REAL, 2, generator=g) * 2.0 + 1.0)
    held = TensorDataset(torch.randn(N_HELD, 2, generator=g) * 2.0 + 1.0)
    return real, held


def std_metric(gen):
    return gen.samples.tensors[0].std()


def make_loop(regime="replace", **kwargs):
    opts = dict(metrics={"std": std_metric}, max_epochs=2, batch_size=16, num_threads=1)
    opts.update(kwargs)
    return LightningSelfConsumingLoop(lambda g: TinyGaussian(), regime, **opts)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_regimes_sources_and_real_shares():
    real, held = data()
    rep = make_loop("replace").run(real, 2, heldout=held, seed=0)
    acc = make_loop("accumulate", samples_per_generation=16).run(real, 2, heldout=held, seed=0)
    fresh = make_loop("fresh", real_fraction=0.25).run(real, 2, heldout=held, seed=0)
    assert isinstance(rep, NeuralLoopResult) and rep.generations.tolist() == [0, 1, 2]
    # generation 0 trains on real data only, in every regime, and is the same fit for the same seed
    for res in (rep, acc, fresh):
        assert res.records[0].sources == [] and res.records[0].trained_real_fraction == 1.0
    assert rep.value("std", 0) == fresh.value("std", 0)
    # replace: only the previous generation's samples
    assert [[s["name"] for s in r.sources] for r in rep.records] == [[], ["gen1"], ["gen2"]]
    assert [r.trained_real_fraction for r in rep.records[1:]] == [0.0, 0.0]
    assert rep.records[1].samples_per_epoch == N_REAL  # dataset size fixed
    # accumulate: real data plus every earlier generation, real share N / (N + g M)
    assert [[s["name"] for s in r.sources] for r in acc.records] == [[], ["gen1"], ["gen1", "gen2"]]
    assert acc.records[2].real_fraction == pytest.approx(N_REAL / (N_REAL + 32))
    assert acc.records[2].samples_per_epoch == N_REAL + 32
    # fresh: the previous generation plus a fixed real subset of f / (1 - f) * M samples, batches at share f
    assert [[s["name"] for s in r.sources] for r in fresh.records] == [[], ["gen1"], ["gen2"]]
    assert fresh.records[1].real_pool_size == round(0.25 / 0.75 * N_REAL) == fresh.records[2].real_pool_size
    assert fresh.records[2].trained_real_fraction == pytest.approx(0.25, abs=1 / 16)


def test_sources_carry_provenance_and_table():
    real, held = data()
    from collapse_guard import RatioMonitor

    monitors = []

    def callbacks(generation):
        monitors.append(RatioMonitor())
        return [monitors[-1]]

    metrics = {"std": std_metric, "logged": lambda gen: gen.trainer.callback_metrics["collapse/real_fraction"]}
    res = make_loop(
        "replace", generator_name="TinyGaussian(2-D)", generator_params={"lr": 0.2}, callbacks=callbacks,
        metrics=metrics,
    ).run(real, 2, heldout=held, seed=3)
    assert len(monitors) == 3  # one per fit: the user's callbacks see every generation's MixedDataModule
    assert res.series("logged").tolist() == [1.0, 0.0, 0.0]  # what RatioMonitor logged in each fit
    assert sorted(res.synthetic) == ["gen1", "gen2", "gen3"]
    src = res.synthetic["gen2"]
    assert isinstance(src, SyntheticSource) and src.generation == 2 and src.generator == "TinyGaussian(2-D)"
    assert src.params["trained_on"] == "gen1" and src.params["regime"] == "replace" and src.params["lr"] == 0.2
    assert src.params["seed"] == 3 and src.params["samples"] == N_REAL == len(src.data)
    # what generation 2 trained on is generation 2's source, as the MixedDataModule recorded it
    prov = res.records[2].sources[0]
    assert prov["kind"] == "synthetic" and prov["generation"] == 2 and prov["generator"] == "TinyGaussian(2-D)"
    assert prov["size"] == N_REAL
    assert res.records[2].samples_per_source["gen2"] > 0 and res.records[2].samples_per_source["real"] == 0
    lines = res.table({"std": "std"}).splitlines()
    assert lines[0].split() == ["gen", "real%", "std", "action"] and len(lines) == 4
    assert res.series("std").shape == (3,) and res.at("std", 1).shape == (1,)


def test_deterministic_given_seed_and_leaves_global_rng():
    real, held = data()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = make_loop("fresh", real_fraction=0.2, fresh_real="resample").run(real, 2, heldout=held, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    b = make_loop("fresh", real_fraction=0.2, fresh_real="resample").run(real, 2, heldout=held, seed=5)
    c = make_loop("fresh", real_fraction=0.2, fresh_real="resample").run(real, 2, heldout=held, seed=6)
    assert torch.equal(a.data.tensors[0], b.data.tensors[0])
    assert a.series("std").tolist() == b.series("std").tolist()
    assert not torch.equal(a.data.tensors[0], c.data.tensors[0])


def share_metric(gen):
    """Healthy (1) at generation 0 and when at least half of the batches were real, else 0.5."""
    return 1.0 if gen.generation == 0 or gen.datamodule.real_fraction >= 0.5 else 0.5


def test_guard_injects_for_the_next_generation_with_events():
    real, held = data()
    guard = GenerationGuard([Rule("health", relative=0.1, baseline="first", name="health")], real_fraction_step=0.5)
    res = make_loop(metrics={"health": share_metric}, guard=guard).run(real, 3, heldout=held, seed=0)
    assert [r.action for r in res.records] == ["ok", "inject", "ok", "ok"]
    assert [r.real_fraction for r in res.records] == [1.0, 0.0, 0.5, 0.5]
    assert res.records[2].trained_real_fraction == pytest.approx(0.5, abs=1 / 16)
    assert res.synthetic["gen3"].params["real_fraction"] == 0.5
    (event,) = res.events
    assert event.generation == 1 and event.action == "inject" and event.rule == "health"
    assert event.value == 0.5 and event.bound == pytest.approx(0.9)
    assert event.real_fraction_before == 0.0 and event.real_fraction_after == 0.5
    assert "below bound 0.9000" in event.reason and "real share 0.00 -> 0.50 from generation 2" in event.reason


def test_guard_refit_rejects_the_generation_and_escalates():
    real, held = data()
    guard = GenerationGuard([Rule("health", relative=0.1, baseline="first")], real_fraction_step=0.25, refit=True)
    res = make_loop(metrics={"health": share_metric}, guard=guard).run(real, 2, heldout=held, seed=0)
    fits = [(r.generation, r.attempt, r.real_fraction, r.accepted, r.action) for r in res.records]
    assert fits == [
        (0, 0, 1.0, True, "ok"),
        (1, 0, 0.0, False, "inject"),
        (1, 1, 0.25, False, "inject"),
        (1, 2, 0.5, True, "ok"),
        (2, 0, 0.5, True, "ok"),
    ]
    # only accepted generations are handed on and recorded in the metric arrays
    assert res.series("health").tolist() == [1.0, 1.0, 1.0]
    assert res.synthetic["gen2"].params["real_fraction"] == 0.5
    assert len(res.events) == 2 and all("generation 1 rejected" in e.reason for e in res.events)
    assert "* " in res.table({"h": "health"}).splitlines()[2] + " "


def test_guard_stops_the_loop_and_uses_reserve():
    real, held = data()
    reserve = TensorDataset(torch.randn(10, 2))
    guard = GenerationGuard([Rule("health", relative=0.1, baseline="first")], max_injections=1, inject_fraction=0.5,
                            real_fraction_step=0.25)
    res = make_loop(metrics={"health": share_metric}, guard=guard).run(real, 4, heldout=held, seed=0, reserve=reserve)
    assert [r.action for r in res.records] == ["ok", "inject", "stop"]
    assert res.stopped_at == 2 and res.generations.tolist() == [0, 1, 2] and len(res.records) == 3
    assert res.records[2].real_pool_size == N_REAL + 5  # half of the reserve joined the real pool
    assert "5 fresh real samples injected (5 left in reserve)" in res.events[0].reason
    assert res.events[-1].action == "stop" and "collapse persists after 1 injection" in res.events[-1].reason


def test_generation_guard_without_lightning():
    guard = GenerationGuard(
        [Rule("recall", relative=0.1, baseline="first"), Rule("ppl", mode="min", relative=0.1, baseline="first", action="warn")],
        real_fraction_step=0.5,
        max_real_fraction=0.5,
    )
    assert guard.check(0, {"recall": 1.0, "ppl": 10.0}, 1.0).action == "ok"
    with pytest.warns(UserWarning, match="warning only"):
        d = guard.check(1, {"recall": 0.95, "ppl": 12.0}, 0.0)
    assert d.action == "warn" and d.real_fraction == 0.0 and guard.real_fraction_floor == 0.0
    d = guard.check(2, {"recall": 0.8, "ppl": 12.0}, 0.0)  # the strongest action wins
    assert d.action == "inject" and d.real_fraction == 0.5 and len(d.events) == 1  # one event for the action,
    assert d.events[0].rules == ("recall", "ppl")                                    # listing both rules
    state = guard.state_dict()
    d = guard.check(3, {"recall": 0.8, "ppl": 10.0}, 0.5)  # no higher share and no reserve left
    assert d.action == "stop" and guard.stopped and "already 0.50" in d.events[0].reason
    restored = GenerationGuard(guard.rules, real_fraction_step=0.5, max_real_fraction=0.5)
    restored.load_state_dict(state)
    assert restored.real_fraction_floor == 0.5 and len(restored.events) == 2 and not restored.stopped
    with pytest.raises(KeyError, match="recorded: \\['ppl'\\]"):
        restored.check(4, {"ppl": 1.0}, 0.5)
    for bad in (dict(rules=[]), dict(action="boom"), dict(real_fraction_step=0.0), dict(max_real_fraction=1.5)):
        with pytest.raises(ValueError):
            GenerationGuard(**{"rules": [Rule("x", relative=0.1)], **bad})
    assert math.isclose(restored.states[0].baseline(), 1.0)


def test_bad_arguments():
    real, held = data()
    with pytest.raises(ValueError, match="unknown regime"):
        make_loop("recycle")
    with pytest.raises(ValueError, match="real_fraction"):
        make_loop("fresh", real_fraction=1.0)
    with pytest.raises(TypeError, match="GenerationGuard"):
        make_loop(guard=object())
    with pytest.raises(ValueError, match="needs 144 real samples"):
        make_loop("fresh", real_fraction=0.75).run(real, 1, heldout=held)
    with pytest.raises(ValueError, match="heldout"):
        make_loop().run(real, 1, heldout=TensorDataset(torch.empty(0, 2)))
    guard = GenerationGuard([Rule("missing", relative=0.1)])
    with pytest.raises(KeyError, match="missing"):
        make_loop(guard=guard).run(real, 0, heldout=held)


def test_vae_and_charlm_building_blocks():
    from reproductions.charlm import CharGRU, CharVocab, charlm_metrics, text_split
    from reproductions.vae import DigitsVAE, digits_split, vae_metrics

    real, held = digits_split(n_train=200, seed=0)
    res = LightningSelfConsumingLoop(lambda g: DigitsVAE(), metrics=vae_metrics(), max_epochs=1, num_threads=1).run(
        real, 1, heldout=TensorDataset(held.tensors[0][:100]), seed=0
    )
    assert {"latent_std", "latent/recall", "latent/coverage", "pixel/coverage", "heldout_mse"} <= set(res.metrics)
    x = res.data.tensors[0]
    assert x.shape == (200, 64) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    train, heldout, vocab = text_split(seq_len=16, n_train=40, n_heldout=40, seed=0)
    assert vocab.decode(vocab.encode("The list")) == "The list" and isinstance(vocab, CharVocab)
    lm = LightningSelfConsumingLoop(
        lambda g: CharGRU(len(vocab), seq_len=16), metrics=charlm_metrics(vocab), max_epochs=1, num_threads=1
    ).run(train, 1, heldout=heldout, seed=0)
    assert lm.data.tensors[0].shape == (40, 16) and int(lm.data.tensors[0].min()) >= 1  # BOS is never generated
    assert 1.0 < lm.value("heldout_ppl", 0) < len(vocab) * 2
    assert {"text/vocab_coverage", "text/distinct_4", "text/char_entropy", "text/word_ttr"} <= set(lm.metrics)


def test_docstring_examples():
    import doctest

    import reproductions.charlm as charlm
    import collapse_guard.loop.guard as guard
    import collapse_guard.loop.neural as neural
    import reproductions.vae as vae

    for module in (guard, neural, vae, charlm):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_example_scripts_run_with_one_command(capsys):
    """``python integration_examples/self_consuming_{vae,charlm}.py`` (tiny sizes here; the full runs are slow tests)."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "integration_examples"
    mods = {}
    for name in ("self_consuming_vae", "self_consuming_charlm"):
        spec = importlib.util.spec_from_file_location(f"example_{name}", root / f"{name}.py")
        mods[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mods[name])
    out = mods["self_consuming_vae"].main(["--generations", "1", "--seeds", "0", "--epochs", "2"])
    text = capsys.readouterr().out
    assert "seed 0, replace, guarded" in text and "latent std" in text and "guard margin 15%" in text
    assert set(out["runs"][0]) == {"replace", "guarded"}
    out = mods["self_consuming_charlm"].main(["--generations", "1", "--epochs", "1"])
    text = capsys.readouterr().out
    assert "first generation each rule fires" in text and "vocab cov" in text
    assert out["replace"].generations.tolist() == [0, 1]
