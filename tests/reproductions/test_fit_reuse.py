"""The VAE experiment's guarded run takes the fits it shares with the unguarded run from it (reproductions._reuse):
the same records, metrics and events as a guarded run that fits everything itself (a few tiny fits, seconds)."""
import dataclasses
import warnings

import pytest


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _records(result):
    return [{k: v for k, v in dataclasses.asdict(r).items() if k != "seconds"} for r in result.records]


def test_the_guarded_run_reuses_the_unguarded_fits_and_computes_the_same():
    from reproductions.vae import _run_vae_seed, digits_split, vae_guard, vae_loop

    kwargs = dict(generations=2, margin=0.05, max_epochs=3, n_train=300, refit=True, num_threads=1)
    runs = _run_vae_seed(0, **kwargs)
    real, heldout = digits_split(n_train=300, seed=0)
    plain = vae_loop(vae_guard(0.05), max_epochs=3).run(real, 2, heldout=heldout, seed=0)
    reused = runs["guarded"]
    # generation 0 was not fitted again: the guarded run handed on the unguarded run's very samples
    assert reused.synthetic["gen1"].data is runs["replace"].synthetic["gen1"].data
    assert plain.synthetic["gen1"].data is not runs["replace"].synthetic["gen1"].data
    assert any(r.attempt > 0 for r in reused.records)  # the guard acted, so fits of its own followed
    assert _records(reused) == _records(plain)
    assert [dataclasses.asdict(e) for e in reused.events] == [dataclasses.asdict(e) for e in plain.events]
    for name in plain.metrics:
        assert (reused.series(name) == plain.series(name)).all(), name
