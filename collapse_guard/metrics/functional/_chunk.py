"""Helpers shared by the sample-based indicators: input checks, block sizes and exact distances.

Nearest-neighbour work runs on row blocks so that memory stays bounded: a block of ``b`` rows against ``N``
columns never holds more than :data:`DEFAULT_BLOCK_ELEMENTS` entries unless ``chunk_size`` says otherwise.

Distances are screened in float32 with one matrix product per block (the squared norms are folded into the
product as two extra columns) and every comparison whose float32 value lies within a rigorous rounding-error
bound of its threshold is recomputed exactly in float64 from coordinate differences. The results are therefore
those of an exact float64 computation, at float32 speed.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Callable, Iterator, Optional, TypeVar

import torch
from torch import Tensor

#: default number of float32 entries in one block of a pairwise-distance matrix (32 MiB)
DEFAULT_BLOCK_ELEMENTS = 2**23

_U32 = 2.0**-24  # unit roundoff of float32

_F = TypeVar("_F", bound=Callable)


def _matmul_precision_knobs() -> list:
    """The per-backend ``fp32_precision`` switches of this torch build (torch >= 2.9), if any."""
    knobs = []
    for name in ("mkldnn", "cuda"):
        matmul = getattr(getattr(torch.backends, name, None), "matmul", None)
        if matmul is not None and hasattr(matmul, "fp32_precision"):
            knobs.append(matmul)
    return knobs


@contextlib.contextmanager
def ieee_fp32_matmul() -> Iterator[None]:
    """Run float32 matrix products in full IEEE float32, whatever the user's matmul precision setting.

    ``torch.set_float32_matmul_precision("high"/"medium")`` (which Lightning recommends on GPUs) lets float32
    products use TF32 or bfloat16 internally; the float32 screen's error bound assumes IEEE float32, so it is
    restored to that for the duration and the previous setting is put back afterwards.
    """
    knobs = _matmul_precision_knobs()
    if knobs:
        saved = [k.fp32_precision for k in knobs]
        try:
            for k in knobs:
                k.fp32_precision = "ieee"
            yield
        finally:
            for k, value in zip(knobs, saved):
                k.fp32_precision = value
    else:  # pragma: no cover - older torch
        previous = torch.get_float32_matmul_precision()
        try:
            torch.set_float32_matmul_precision("highest")
            yield
        finally:
            torch.set_float32_matmul_precision(previous)


def with_ieee_fp32_matmul(fn: _F) -> _F:
    """Decorator form of :func:`ieee_fp32_matmul`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with ieee_fp32_matmul():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def check_features(x: Tensor, name: str) -> Tensor:
    """Validate a ``(N, D)`` feature matrix and return it (a 1-D ``(N,)`` tensor is not accepted here)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != 2:
        raise ValueError(f"`{name}` must have shape (N, D), got {tuple(x.shape)}.")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"`{name}` must be non-empty, got shape {tuple(x.shape)}.")
    if x.is_complex():
        raise ValueError(f"`{name}` must be real-valued, got dtype {x.dtype}.")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return x


def check_pair(real: Tensor, synthetic: Tensor) -> None:
    """Validate two feature matrices with the same feature dimension."""
    check_features(real, "real")
    check_features(synthetic, "synthetic")
    if real.shape[1] != synthetic.shape[1]:
        raise ValueError(
            f"`real` and `synthetic` must have the same feature dimension, got {real.shape[1]} and "
            f"{synthetic.shape[1]}."
        )


def check_k(k: int, n: int, name: str) -> None:
    """``k`` must be a positive integer smaller than the number of samples ``n`` of ``name``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be a positive integer, got {k!r}.")
    if k >= n:
        raise ValueError(f"`k` must be smaller than the number of samples in `{name}` ({n}), got k={k}.")


def block_rows(n_cols: int, chunk_size: Optional[int], budget: int = DEFAULT_BLOCK_ELEMENTS) -> int:
    """Rows per block: ``chunk_size`` if given, else as many as fit ``budget`` entries (at least 1)."""
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"`chunk_size` must be a positive integer or None, got {chunk_size!r}.")
        return chunk_size
    return max(1, budget // max(1, n_cols))


def gamma(n: int, u: float = _U32) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)``: bound on the relative error of an ``n``-term dot product."""
    nu = n * u
    if nu >= 0.5:  # pragma: no cover - only for absurd dimensions; fall back to a huge bound
        return math.inf
    return nu / (1.0 - nu)


def error_constant(dim: int) -> float:
    """Safety-padded float32 error constant ``C`` of a folded squared-distance product of dimension ``dim``.

    For ``e = [a, |a|^2, 1] . [-2b, 1, |b|^2 - t]`` evaluated in float32 from float64 data, the absolute error
    is below ``C * (2|a|^2 + 2|b|^2 + t)`` (dot-product bound ``gamma_{dim+2}`` plus the rounding of the
    inputs to float32), doubled for safety.
    """
    return 2.0 * (gamma(dim + 2) + 8.0 * _U32)


class Frame:
    """A common translation and power-of-two scaling of feature sets, for the float32 screen.

    Distance comparisons are invariant to a common translation and scaling. Centring on the real mean makes
    the screen's error bound (proportional to squared norms) tighter; the power-of-two scale keeps squared norms
    far from float32 overflow and underflow. Framed values are produced chunk by chunk in float64, so no full
    float64 copy of a feature set is ever held; exact distances always use the original values.

    Attributes:
        mu: the centre, shape ``(1, D)``, float64.
        scale: the power-of-two factor; framed distances are ``scale`` times the original ones.
    """

    def __init__(self, center_on: Tensor, *others: Tensor, budget: int = DEFAULT_BLOCK_ELEMENTS) -> None:
        self.budget = budget
        self.step = max(1, budget // max(1, center_on.shape[1]))
        total = torch.zeros(1, center_on.shape[1], dtype=torch.float64, device=center_on.device)
        for s in range(0, center_on.shape[0], self.step):
            total += center_on[s : s + self.step].double().sum(dim=0, keepdim=True)
        self.mu = total / center_on.shape[0]
        self.scale = 1.0
        amax = 0.0
        for x in (center_on, *others):
            for s in range(0, x.shape[0], self.step):
                amax = max(amax, float((x[s : s + self.step].double() - self.mu).abs().max()))
        if amax > 0 and (amax > 2.0**20 or amax < 2.0**-20):
            self.scale = 2.0 ** (-round(math.log2(amax)))

    def chunks(self, x: Tensor) -> Iterator[tuple[int, int, Tensor]]:
        """``(start, end, framed rows)`` over ``x`` in float64 chunks of bounded size."""
        for s in range(0, x.shape[0], self.step):
            e = min(s + self.step, x.shape[0])
            yield s, e, (x[s:e].double() - self.mu) * self.scale

    def sqnorms(self, x: Tensor) -> Tensor:
        """Squared norms of the framed rows of ``x``, shape ``(N,)``, float64."""
        out = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
        for s, e, xs in self.chunks(x):
            out[s:e] = (xs * xs).sum(dim=1)
        return out

    def left(self, x: Tensor, sq: Tensor) -> Tensor:
        """``[x, |x|^2, 1]`` of the framed rows in float32, shape ``(N, D + 2)``: left factor of the product."""
        n, d = x.shape
        out = torch.empty(n, d + 2, dtype=torch.float32, device=x.device)
        for s, e, xs in self.chunks(x):
            out[s:e, :d] = xs
        out[:, d] = sq
        out[:, d + 1] = 1.0
        return out

    def right_t(self, x: Tensor, sq_minus_t: Tensor, pad_to: Optional[int] = None, pad_value: float = 0.0) -> Tensor:
        """``[-2x, 1, |x|^2 - t]^T`` of the framed rows in float32, contiguous ``(D + 2, N)``: right factor.

        With ``pad_to > N``, columns ``N .. pad_to - 1`` are zero but for ``pad_value`` in the last row, so
        that their product with any left row is ``pad_value``.
        """
        n, d = x.shape
        width = n if pad_to is None else max(n, pad_to)
        out = torch.zeros(d + 2, width, dtype=torch.float32, device=x.device)
        for s, e, xs in self.chunks(x):
            out[:d, s:e] = (-2.0 * xs).t()
        out[d, :n] = 1.0
        out[d + 1, :n] = sq_minus_t
        out[d + 1, n:] = pad_value
        return out


def exact_sqdist(a: Tensor, b: Tensor, budget: int = DEFAULT_BLOCK_ELEMENTS) -> Tensor:
    """Exact squared Euclidean distances ``(A, B)`` from coordinate differences, in float64, bounded memory.

    Used for the few comparisons the float32 screen cannot decide, so it favours exactness over speed: it never
    uses the ``|a|^2 - 2ab + |b|^2`` expansion, whose cancellation would blur exact ties.
    """
    out = torch.empty(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    d = max(1, a.shape[1])
    rows = max(1, budget // max(1, b.shape[0] * d))
    if b.shape[0] * d <= budget:
        b64 = b.double()
        for s in range(0, a.shape[0], rows):
            e = min(s + rows, a.shape[0])
            out[s:e] = (a[s:e, None, :].double() - b64[None, :, :]).pow_(2).sum(-1)
    else:
        cols = max(1, budget // d)
        for s in range(a.shape[0]):
            row = a[s, None, :].double()
            for c in range(0, b.shape[0], cols):
                ce = min(c + cols, b.shape[0])
                out[s, c:ce] = (row - b[c:ce].double()).pow_(2).sum(-1)
    return out


def exact_pair_sqdist(a: Tensor, b: Tensor, ia: Tensor, ib: Tensor, budget: int = DEFAULT_BLOCK_ELEMENTS) -> Tensor:
    """Exact squared distances ``|a[ia[p]] - b[ib[p]]|^2`` for index pairs ``p`` (float64, bounded memory)."""
    out = torch.empty(ia.shape[0], dtype=torch.float64, device=a.device)
    step = max(1, budget // max(1, a.shape[1]))
    for s in range(0, ia.shape[0], step):
        e = min(s + step, ia.shape[0])
        out[s:e] = (a[ia[s:e]].double() - b[ib[s:e]].double()).pow_(2).sum(dim=1)
    return out


def exact_row_reduce(
    a: Tensor, b: Tensor, reduce: Callable[[Tensor, int, int], Tensor], budget: int = DEFAULT_BLOCK_ELEMENTS
) -> Tensor:
    """Apply ``reduce(sqdist_block, start, end)`` to exact squared distances of row groups of ``a`` against ``b``.

    ``sqdist_block`` is the ``(end - start, len(b))`` float64 block for rows ``start:end`` of ``a``; the results
    (one tensor per group, first dimension ``end - start``) are concatenated. Memory stays within ``budget``
    float64 entries per group (at least one row).
    """
    rows = max(1, budget // max(1, b.shape[0]))
    parts = []
    for s in range(0, a.shape[0], rows):
        e = min(s + rows, a.shape[0])
        parts.append(reduce(exact_sqdist(a[s:e], b, budget), s, e))
    return torch.cat(parts) if parts else torch.empty(0, device=a.device)
