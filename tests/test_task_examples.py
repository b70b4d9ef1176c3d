"""The language-model and regression integration examples (``--quick``): the held-out real indicators of each task
are logged, the default guard acts on the collapsing source only, and the guarded fit ends better on real test data
than the unguarded one."""
from __future__ import annotations

import math

import pytest

from cg_testing import load_example


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


load = load_example


FITS = {"real only, guarded", "collapsing", "collapsing, guarded", "healthy, guarded"}


def check_fits(fits: dict, keys: tuple, epochs: int) -> None:
    """Every fit ran, logged ``keys`` at every check, and the default guard acted on the collapsing source only."""
    assert set(fits) == FITS
    for name, fit in fits.items():
        assert fit["checks"], name
        for row in fit["checks"]:
            assert all(math.isfinite(row[k]) for k in keys), (name, row)
    assert fits["collapsing"]["events"] is None  # not guarded
    assert len(fits["collapsing"]["ratio"]) == epochs  # and not stopped
    assert fits["real only, guarded"]["events"] == [], fits["real only, guarded"]["events"]
    assert fits["healthy, guarded"]["events"] == [], fits["healthy, guarded"]["events"]
    assert fits["collapsing, guarded"]["events"], "the guard did not act on the collapsing source"
    # the guard acted after the real share fell, not while the fit trained on 90% real data
    falls = min(r["epoch"] for r in fits["collapsing"]["ratio"] if r["real_fraction"] < 0.85)
    assert min(e.epoch for e in fits["collapsing, guarded"]["events"]) >= falls


def test_language_model_example(tmp_path, capsys):
    example = load("language_model")
    fits = example.main(quick=True, out=str(tmp_path))
    out = capsys.readouterr().out
    assert "held-out ppl" in out and "distinct words" in out
    check_fits(fits, ("collapse/heldout_real/loss", "collapse/heldout_real/perplexity",
                      "collapse/heldout_real/token_acc", "collapse/heldout_real/loss_stderr"), example.QUICK["epochs"])
    for fit in fits.values():
        for row in fit["checks"]:
            assert row["collapse/heldout_real/perplexity"] == pytest.approx(math.exp(row["collapse/heldout_real/loss"]),
                                                                            rel=1e-4)
    unguarded, guarded = fits["collapsing"], fits["collapsing, guarded"]
    # the collapsed text raised the held-out real loss well above its best, and the guard kept the fit nearer it
    loss = [r["collapse/heldout_real/loss"] for r in unguarded["checks"]]
    assert loss[-1] > min(loss) + 0.1
    assert guarded["test_ppl"] < unguarded["test_ppl"] - 0.5
    assert fits["healthy, guarded"]["test_ppl"] < unguarded["test_ppl"] - 0.5


def test_regression_example(tmp_path, capsys):
    example = load("regression_diabetes")
    fits = example.main(quick=True, out=str(tmp_path))
    assert "held-out mse" in capsys.readouterr().out
    check_fits(fits, ("collapse/heldout_real/loss", "collapse/heldout_real/mse", "collapse/heldout_real/r2",
                      "collapse/heldout_real/pred_var_ratio"), example.QUICK["epochs"])
    unguarded, guarded = fits["collapsing"], fits["collapsing, guarded"]
    # the collapsing labels pulled the predictions towards the mean: variance ratio down, held-out MSE up
    first = {k: unguarded["checks"][7][f"collapse/heldout_real/{k}"] for k in ("mse", "pred_var_ratio")}
    last = {k: unguarded["checks"][-1][f"collapse/heldout_real/{k}"] for k in ("mse", "pred_var_ratio")}
    assert last["pred_var_ratio"] < first["pred_var_ratio"] / 2 and last["mse"] > first["mse"] + 0.1
    # the default rule fires late here (its unit holds the learning phase's moves), so the margins are small
    assert guarded["test_mse"] < unguarded["test_mse"] - 0.02
    assert guarded["heldout_mse"] < unguarded["heldout_mse"] - 0.04
