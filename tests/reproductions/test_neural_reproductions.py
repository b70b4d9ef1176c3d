"""The neural reproductions docs/self_consuming_loops.md reports (minutes on 2 CPU cores): run with ``python -m pytest -m slow tests/reproductions``.

Each test runs the configuration of its ``integration_examples/`` script and checks the figures reported, with
tolerances wide enough for other CPUs and library versions but narrow enough to catch a loop that no longer
collapses (or a guard that no longer holds it).
"""
import warnings

import pytest


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.slow
def test_vae_replace_collapses_and_the_guard_holds_the_margin():
    from reproductions.vae import run_vae_experiment

    # the seeds side by side in 3 processes (the same results as one after the other; see run_vae_experiment), which
    # under `make test-slow` (2 workers) leave the CPU to the character LM and O6 running one after the other beside
    # them (group "one_core"): both finish at about the same time
    out = run_vae_experiment(generations=5, seeds=(0, 1, 2), margin=0.15, workers=3, worker_nice=5)
    s = out["summary"]["indicators"]
    # generation 0 (reported: latent std 0.872, recall 0.934, coverage 0.716, means over seeds 0-2)
    assert 0.78 < s["latent std"]["generation0"] < 0.96
    assert s["recall"]["generation0"] > 0.88 and s["coverage"]["generation0"] > 0.62
    # unguarded replace, generation 5 (reported: -24%, -60%, -49%; Shumailov et al.: latent std -36% on MNIST)
    assert s["latent std"]["change_unguarded"] < -0.15
    assert s["recall"]["change_unguarded"] < -0.40
    assert s["coverage"]["change_unguarded"] < -0.30
    for res in (r["replace"] for r in out["runs"].values()):  # falls generation after generation
        assert res.series("latent_std")[-1] < res.series("latent_std")[1] < res.series("latent_std")[0]
    # guarded: every accepted generation within 15% of generation 0, all 5 generations, still partly synthetic
    for label in ("latent std", "recall", "coverage"):
        assert s[label]["change_guarded_worst"] >= -0.15 - 1e-9
    assert all(out["summary"]["guarded_completed"])
    assert out["summary"]["guarded_real_share"] <= 0.75 + 1e-9  # reported: 63% real, 37% synthetic
    for runs in out["runs"].values():
        res = runs["guarded"]
        assert res.events and all(e.action == "inject" for e in res.events)
        assert all(r.trained_real_fraction < 1.0 for r in res.records if r.generation > 0)
        assert res.records[0].metrics == runs["replace"].records[0].metrics  # the same generation-0 fit
        assert res.synthetic["gen1"].data is runs["replace"].synthetic["gen1"].data  # fitted once (FitCache)


@pytest.mark.slow
@pytest.mark.xdist_group("one_core")
def test_charlm_replace_perplexity_rises_and_diversity_falls():
    from reproductions.charlm import run_charlm_experiment

    out = run_charlm_experiment(generations=8, seed=0)
    res = out["replace"]
    ppl = res.series("heldout_ppl")
    # held-out real perplexity rises (reported: 9.73 at generation 0, 15.6 at 1, 65.1 at 8)
    assert 7.0 < ppl[0] < 13.0 and ppl[-1] > 3.0 * ppl[0]
    assert out["ppl_plus_margin"] == 1
    # diversity of the generated text falls (reported at generation 8: coverage -60%, distinct-4 -14%); the
    # character entropy does not (3.210 -> 3.207 here, -8% on an earlier machine): not asserted
    for key, least in (("text/vocab_coverage", 0.40), ("text/distinct_4", 0.10)):
        series = res.series(key)
        assert series[-1] < (1.0 - least) * series[0], key
    # the tail indicator fires with perplexity (lead 0, in the same event: one event names every rule that fired);
    # distinct-4 fires later (negative lead)
    assert out["first_fired"]["vocab cov"] == 1 and out["lead"]["vocab cov"] == 0
    assert out["first_fired"]["distinct-4"] is not None and out["lead"]["distinct-4"] < 0
