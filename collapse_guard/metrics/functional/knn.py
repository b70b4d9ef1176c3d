"""k-nearest-neighbour manifold indicators: precision, recall, density and coverage.

* precision and recall: Kynkäänniemi, Karras, Laine, Lehtinen, Aila, "Improved Precision and Recall Metric for
  Assessing Generative Models", NeurIPS 2019.
* density and coverage: Naeem, Oh, Uh, Choi, Yoo, "Reliable Fidelity and Diversity Metrics for Generative
  Models", ICML 2020 (reference implementation: the ``prdc`` package, ``prdc.compute_prdc``).

Every function compares a synthetic set (the papers' "fake" samples: a synthetic source's or a generative
model's samples) with held-out real data. A collapsing generator keeps its samples inside the real manifold
(precision stays high, density rises above 1) while it stops covering it: recall falls first, coverage last.

All work is done on row blocks (see :mod:`collapse_guard.metrics.functional._chunk`), so memory is
``O(chunk_size * N)`` rather than ``O(N^2)``, and every comparison is exact in float64: float32 products screen
the pairs and the ones within rounding error of a threshold are recomputed from coordinate differences.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from collapse_guard.metrics.functional._chunk import (
    DEFAULT_BLOCK_ELEMENTS,
    block_rows,
    check_features,
    check_k,
    check_pair,
    Frame,
    error_constant,
    exact_pair_sqdist,
    exact_row_reduce,
    with_ieee_fp32_matmul,
)
from collapse_guard.metrics._deprecation import renamed_kwargs

__all__ = ["knn_radii", "prdc", "knn_precision", "knn_recall", "density", "coverage"]

_EXTRA_CANDIDATES = 8  # float32 candidates kept beyond the k + 1 needed, so that exact re-ranking rarely fails


_GROUP = 8  # columns per group of the two-stage k-smallest search
_FAR = 1.0e37  # float32 value of padding columns: never among the k smallest


def _smallest(blk: Tensor, m: int, n_valid: int) -> tuple[Tensor, Tensor]:
    """``m`` smallest entries of each row of ``blk`` (sorted) and their column indices.

    Two stages, both exact: the minimum of each strided column class ``c, c + W, c + 2W, ...`` (``W`` columns
    per class, ``_GROUP`` members each), then a ``topk`` over the members of the ``m`` classes with the smallest
    minima. The ``m`` smallest entries of a row lie in those classes (each class minimum is an entry of the row,
    so the m-th smallest class minimum is at least the m-th smallest entry), and the second stage reads
    ``m * _GROUP`` entries per row instead of ``N``: about twice as fast as ``topk`` on the whole row.
    """
    b, n_pad = blk.shape
    if n_pad % _GROUP or n_pad // _GROUP < 4 * m:
        return torch.topk(blk[:, :n_valid], m, dim=1, largest=False, sorted=True)
    w = n_pad // _GROUP
    class_min = blk.view(b, _GROUP, w).amin(dim=1)
    _, cls = torch.topk(class_min, m, dim=1, largest=False, sorted=False)
    cols = (cls[:, :, None] + w * torch.arange(_GROUP, device=blk.device)).reshape(b, m * _GROUP)
    vals, pos = torch.topk(torch.gather(blk, 1, cols), m, dim=1, largest=False, sorted=True)
    return vals, torch.gather(cols, 1, pos)


@with_ieee_fp32_matmul
def _sq_radii(x: Tensor, frame: Frame, k: int, chunk_size: Optional[int]) -> Tensor:
    """Exact squared distance of each row of ``x`` to its k-th nearest other row (float64, units of ``x``).

    ``x`` holds the original values (used, cast to float64, for every exact distance); ``frame`` maps them to
    the centred, scaled coordinates of the float32 screen.
    """
    n, d = x.shape
    sq = frame.sqnorms(x)
    m = min(k + 1 + _EXTRA_CANDIDATES, n)
    n_pad = n
    if n // _GROUP >= 4 * m:
        n_pad = -(-n // _GROUP) * _GROUP  # padding columns evaluate to _FAR: never candidates
    left = frame.left(x, sq)
    right_t = frame.right_t(x, sq, pad_to=n_pad, pad_value=_FAR)
    c = error_constant(d)
    sq_max = float(sq.max())
    s2 = frame.scale**2
    rows = block_rows(n_pad, chunk_size)
    buf = torch.empty(min(rows, n), n_pad, dtype=torch.float32, device=x.device)
    radii = torch.empty(n, dtype=torch.float64, device=x.device)
    # rows of the exact candidate re-ranking per sub-block, so that (rows, m, d) stays within budget
    sub = max(1, DEFAULT_BLOCK_ELEMENTS // max(1, m * d))
    for s in range(0, n, rows):
        e = min(s + rows, n)
        blk = torch.mm(left[s:e], right_t, out=buf[: e - s])
        vals, idx = _smallest(blk, m, n)
        for t in range(0, e - s, sub):
            te = min(t + sub, e - s)
            cand = x[idx[t:te]].double()  # (b, m, d)
            ex = (x[s + t : s + te, None, :].double() - cand).pow_(2).sum(-1)
            radii[s + t : s + te] = torch.kthvalue(ex, k + 1, dim=1).values
        if m < n:
            # every column outside the candidates has a true squared distance >= last float32 value - bound
            bound = vals[:, -1].double() - c * (2.0 * sq[s:e] + 2.0 * sq_max)
            bad = torch.nonzero(s2 * radii[s:e] > bound).flatten()
            if bad.numel():
                rows_bad = bad + s
                radii[rows_bad] = exact_row_reduce(
                    x[rows_bad], x, lambda ex, a, b: torch.kthvalue(ex, k + 1, dim=1).values
                )
    return radii


def knn_radii(features: Tensor, k: int = 5, chunk_size: Optional[int] = None) -> Tensor:
    """Distance of each sample to its k-th nearest neighbour among the other samples.

    This is the radius of the k-NN ball around each sample that defines the manifold estimates of
    Kynkäänniemi et al. (2019) and Naeem et al. (2020); it equals ``prdc``'s
    ``compute_nearest_neighbour_distances(features, k)`` (the ``(k+1)``-th smallest distance, self included).

    Args:
        features: feature matrix, shape ``(N, D)``, any real dtype; ``N > k``.
        k: neighbour rank, ``1 <= k < N``.
        chunk_size: rows per distance block (``None``: as many as fit 2**23 float32 entries). Memory is
            ``O(chunk_size * N)``; results do not depend on it.

    Returns:
        Tensor of shape ``(N,)``, dtype float64, Euclidean distances ``>= 0`` in the units of ``features``.

    Raises:
        ValueError: if ``features`` is not a finite, non-empty 2-D tensor or ``k`` is not in ``[1, N)``.

    Example::

        >>> x = torch.tensor([[0.0], [1.0], [3.0]])
        >>> knn_radii(x, k=1)
        tensor([1., 1., 2.], dtype=torch.float64)
    """
    check_features(features, "features")
    check_k(k, features.shape[0], "features")
    return _sq_radii(features, Frame(features), k, chunk_size).sqrt_()


@with_ieee_fp32_matmul
def _prdc_core(
    real: Tensor,
    synthetic: Tensor,
    k: int,
    chunk_size: Optional[int],
    want_pdc: bool,
    want_recall: bool,
) -> dict[str, Tensor]:
    check_pair(real, synthetic)
    if want_pdc:
        check_k(k, real.shape[0], "real")
    if want_recall:
        check_k(k, synthetic.shape[0], "synthetic")
    r, f = real, synthetic  # exact distances use the original values (exact ties stay exact)
    frame = Frame(real, synthetic)
    s2 = frame.scale**2
    n_real, d = r.shape
    n_synthetic = f.shape[0]
    device = r.device
    c = error_constant(d)

    # exact squared radii in original units; precision, density, coverage need the real ones
    rr2 = _sq_radii(r, frame, k, chunk_size) if want_pdc else torch.zeros(n_real, dtype=torch.float64, device=device)
    rf2 = _sq_radii(f, Frame(f), k, chunk_size) if want_recall else None  # intra-set: centred on its own mean
    sq_r = frame.sqnorms(r)
    sq_f = frame.sqnorms(f)

    # folded float32 screen in the centred, scaled frame: e[j, i] ~ s2 * (|f_j - r_i|^2 - rr2_i),
    # synthetic rows j, real columns i; its rounding error is below a_row[j] + b_col[i]
    left = frame.left(f, sq_f)
    right_t = frame.right_t(r, sq_r - s2 * rr2)
    b_col = c * (2.0 * sq_r + s2 * rr2)
    a_row = c * 2.0 * sq_f
    a_max = float(a_row.max())
    b_max = float(b_col.max())
    if want_recall:
        a_row_rec = a_row + c * s2 * rf2
        a_max_rec = float(a_row_rec.max())
        rf2_32 = (s2 * rf2).float()

    rows = block_rows(n_real, chunk_size)
    buf = torch.empty(min(rows, n_synthetic), n_real, dtype=torch.float32, device=device)
    aux = torch.empty_like(buf)
    counts = torch.empty(n_synthetic, dtype=torch.float64, device=device)
    cov_min = torch.full((n_real,), float("inf"), dtype=torch.float32, device=device)
    rec_min = torch.full((n_real,), float("inf"), dtype=torch.float32, device=device)
    sum_dtype = torch.float32 if n_real < 2**24 else torch.float64
    for s in range(0, n_synthetic, rows):
        e = min(s + rows, n_synthetic)
        blk = torch.mm(left[s:e], right_t, out=buf[: e - s])
        tmp = aux[: e - s]
        if want_pdc:
            cov_min = torch.minimum(cov_min, blk.amin(dim=0))
        if want_recall:
            torch.sub(blk, rf2_32[s:e, None], out=tmp)
            rec_min = torch.minimum(rec_min, tmp.amin(dim=0))
        if want_pdc:
            # count of negative entries per row from the float32 signs: (n - sum sign) / 2
            min_abs = torch.abs(blk, out=tmp).amin(dim=1).double()
            amb = torch.nonzero(min_abs <= a_row[s:e] + b_max).flatten()
            if amb.numel():
                # entries within their error bound of 0: replace their float32 vote by the exact one
                sub_abs = tmp[amb]
                sub_tol = (a_row[s:e][amb, None] + b_col[None, :]).float()
                jj, ii = torch.nonzero(sub_abs <= sub_tol, as_tuple=True)
                rows_j = amb[jj]
                vote32 = (1.0 - torch.sign(blk[rows_j, ii]).double()) * 0.5
                ex = exact_pair_sqdist(f, r, rows_j + s, ii)
                vote = (ex < rr2[ii]).double()
                correction = torch.zeros(e - s, dtype=torch.float64, device=device)
                correction.index_add_(0, rows_j, vote - vote32)
            sgn = torch.sign(blk, out=tmp).sum(dim=1, dtype=sum_dtype).double()
            counts[s:e] = (n_real - sgn) * 0.5
            if amb.numel():
                counts[s:e] += correction

    out: dict[str, Tensor] = {}
    if want_pdc:
        out["precision"] = out["recall"] = None  # fixes the key order: precision, recall, density, coverage
        out["precision"] = (counts > 0).double().mean()
        out["density"] = counts.sum() / (k * n_synthetic)
        # coverage: real i covered iff its nearest synthetic lies strictly inside its own k-NN ball
        tol = a_max + b_col
        cmin = cov_min.double()
        covered = cmin < -tol
        amb = torch.nonzero((cmin.abs() <= tol)).flatten()
        if amb.numel():
            rr2_amb = rr2[amb]
            covered[amb] = exact_row_reduce(r[amb], f, lambda ex, a, b: ex.amin(dim=1) < rr2_amb[a:b])
        out["coverage"] = covered.double().mean()
    if want_recall:
        # recall: real i recalled iff some synthetic ball contains it: min_j (|f_j - r_i|^2 - rf2_j) < 0
        g = rec_min.double() + s2 * rr2
        tol = a_max_rec + b_col
        recalled = g < -tol
        amb = torch.nonzero(g.abs() <= tol).flatten()
        if amb.numel():
            recalled[amb] = exact_row_reduce(r[amb], f, lambda ex, a, b: (ex < rf2[None, :]).any(dim=1))
        out["recall"] = recalled.double().mean()
    return {key: v for key, v in out.items() if v is not None}


@renamed_kwargs(fake="synthetic")
def prdc(real: Tensor, synthetic: Tensor, k: int = 5, chunk_size: Optional[int] = None) -> dict[str, Tensor]:
    """k-NN precision, recall, density and coverage of synthetic features against held-out real features.

    With ``B(x, r)`` the open ball of radius ``r`` around ``x`` and ``NND_k(x)`` the distance from ``x`` to its
    k-th nearest neighbour within its own set (:func:`knn_radii`), and ``syn_j`` the synthetic samples (the
    papers' "fake" ones):

    * precision = share of synthetic samples inside ``U_i B(real_i, NND_k(real_i))`` (Kynkäänniemi et al. 2019);
    * recall = share of real samples inside ``U_j B(syn_j, NND_k(syn_j))`` (Kynkäänniemi et al. 2019);
    * density = ``1/(k M) sum_j sum_i 1[syn_j in B(real_i, NND_k(real_i))]`` (Naeem et al. 2020);
    * coverage = share of real samples whose ball contains at least one synthetic sample (Naeem et al. 2020).

    Values equal ``prdc.compute_prdc(real, synthetic, k)`` (same open balls, strict ``<``) computed exactly in
    float64; on exact ties (duplicated or quantised features) ``prdc``'s own rounding may flip a comparison.
    For identical distributions density is about 1 and coverage about ``1 - 2**-k`` at any dimension, while
    precision and recall fall as the dimension grows (about 0.72 at 64-D, k=5): judge them against
    :func:`~collapse_guard.metrics.functional.real_baseline`.

    Args:
        real: held-out real features, shape ``(N, D)``, ``N > k``.
        synthetic: synthetic features (the paper's "fake"; a synthetic source's or a generative model's
            samples), shape ``(M, D)``, ``M > k``. Passed as ``fake=`` it still works, with a
            ``DeprecationWarning``.
        k: neighbour rank defining the balls (the paper default is 3 for P/R and 5 for D/C; MAD used 5).
        chunk_size: rows per distance block (``None``: as many as fit 2**23 float32 entries). Peak extra
            memory is about ``2 * chunk_size * max(N, M)`` float32 entries; results do not depend on it.

    Returns:
        dict with keys ``"precision"``, ``"recall"``, ``"density"``, ``"coverage"``, each a 0-dim float64
        tensor; precision, recall and coverage lie in ``[0, 1]``, density in ``[0, N / k]``.

    Raises:
        ValueError: if an input is not a finite non-empty 2-D tensor, the feature dimensions differ, or
            ``k`` is not in ``[1, min(N, M))``.

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> real, synthetic = torch.randn(2000, 16, generator=g), 0.5 * torch.randn(2000, 16, generator=g)
        >>> out = prdc(real, synthetic, k=5)
        >>> out["recall"] < 0.2 < out["precision"]
        tensor(True)
    """
    return _prdc_core(real, synthetic, k, chunk_size, want_pdc=True, want_recall=True)


@renamed_kwargs(fake="synthetic")
def knn_precision(real: Tensor, synthetic: Tensor, k: int = 5, chunk_size: Optional[int] = None) -> Tensor:
    """k-NN precision (Kynkäänniemi et al. 2019): share of synthetic samples inside the real k-NN manifold.

    Args and Raises as :func:`prdc` (only ``N > k`` is required). Returns a 0-dim float64 tensor in ``[0, 1]``.

    Example::

        >>> knn_precision(torch.randn(500, 8), torch.randn(500, 8), k=5).item() > 0.5
        True
    """
    return _prdc_core(real, synthetic, k, chunk_size, want_pdc=True, want_recall=False)["precision"]


@renamed_kwargs(fake="synthetic")
def knn_recall(real: Tensor, synthetic: Tensor, k: int = 5, chunk_size: Optional[int] = None) -> Tensor:
    """k-NN recall (Kynkäänniemi et al. 2019): share of real samples inside the synthetic k-NN manifold.

    Args and Raises as :func:`prdc` (only ``M > k`` is required). Returns a 0-dim float64 tensor in ``[0, 1]``;
    the indicator that falls first under mode collapse.

    Example::

        >>> knn_recall(torch.randn(500, 8), 0.1 * torch.randn(500, 8), k=5).item() < 0.1
        True
    """
    return _prdc_core(real, synthetic, k, chunk_size, want_pdc=False, want_recall=True)["recall"]


@renamed_kwargs(fake="synthetic")
def density(real: Tensor, synthetic: Tensor, k: int = 5, chunk_size: Optional[int] = None) -> Tensor:
    """Density (Naeem et al. 2020): mean number of real k-NN balls holding a synthetic sample, over ``k``.

    About 1 for identical distributions; above 1 when synthetic samples crowd into dense real regions (collapse).
    Args and Raises as :func:`prdc`. Returns a 0-dim float64 tensor in ``[0, N / k]``.

    Example::

        >>> x = torch.randn(1000, 4)
        >>> float(density(x[:500], x[500:], k=5)) > 0.5
        True
    """
    return _prdc_core(real, synthetic, k, chunk_size, want_pdc=True, want_recall=False)["density"]


@renamed_kwargs(fake="synthetic")
def coverage(real: Tensor, synthetic: Tensor, k: int = 5, chunk_size: Optional[int] = None) -> Tensor:
    """Coverage (Naeem et al. 2020): share of real k-NN balls that contain at least one synthetic sample.

    About ``1 - 2**-k`` for identical distributions at any dimension; falls when whole regions are lost.
    Args and Raises as :func:`prdc`. Returns a 0-dim float64 tensor in ``[0, 1]``.

    Example::

        >>> x = torch.randn(2000, 4)
        >>> abs(float(coverage(x[:1000], x[1000:], k=5)) - (1 - 2**-5)) < 0.05
        True
    """
    return _prdc_core(real, synthetic, k, chunk_size, want_pdc=True, want_recall=False)["coverage"]
