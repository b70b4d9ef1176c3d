"""Published figures O1-O6 (Dohmatob et al. 2024; Gerstgrasser et al. 2024; Shumailov
et al. 2024; Bertrand et al. 2024; Alemohammad et al. 2024) within their tolerances."""
import pytest

from reproductions.oracles import oracle_o1, oracle_o2, oracle_o3, oracle_o4, oracle_o5, oracle_o6


def _check(rows):
    bad = [str(r) for r in rows if not r.ok]
    assert not bad, "\n".join(bad)
    assert rows


def test_o1_linear_regression():
    _check(oracle_o1())  # published scale: 300 seeds, d=50, T=200, 10 rounds


def test_o2_gaussian_replace():
    _check(oracle_o2())  # 1000 seeds, M=100, 1000 generations (vectorised over seeds)


def test_o3_gaussian_accumulate():
    _check(oracle_o3())


def test_o4_gaussian_fresh_real_share():
    _check(oracle_o4(include_resample=False))


def test_o5_zipf_categorical():
    _check(oracle_o5())


def test_o6_gmm_scaled():
    # collapse runs on g / M: M = 250 and 500 generations stand for M = 1000 and 2000 generations
    _check(oracle_o6(seeds=12, M=250, generations=500))


@pytest.mark.slow
@pytest.mark.xdist_group("one_core")  # under make test-slow: after the character LM, beside the VAE's processes
def test_o6_gmm_published_scale():
    _check(oracle_o6())
