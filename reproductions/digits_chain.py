"""Measurements of a chain of generations against real data (digits)."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from collapse_guard._digits import split_digits_parts


def load_digits_split(n_train: int = 1000, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load sklearn's 8x8 digits and split them into a real training set and held-out real test set.

    Args:
        n_train: number of real training digits (generation 0); the other ``1797 - n_train`` are held out.
        seed: seed of the permutation.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: float32 ``(n, 64)`` pixels in ``0..16`` and int64 labels.

    Raises:
        ValueError: if ``n_train`` is not in ``[1, 1796]``.

    Example::

        >>> x_tr, y_tr, x_te, y_te = load_digits_split(1000)
        >>> x_tr.shape, x_te.shape
        ((1000, 64), (797, 64))
    """
    if not 1 <= n_train < 1797:
        raise ValueError(f"n_train must be in [1, 1796], got {n_train}")
    parts = split_digits_parts(seed, {"train": n_train, "test": None})
    return (*parts["train"], *parts["test"])


def mlp_real_accuracy(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    n_classes: int = 10,
    hidden: int = 128,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 32,
    scale: float = 16.0,
    seed: int = 0,
) -> float:
    """Train a small MLP (``d-hidden-n_classes``, ReLU, Adam) on ``(x_train, y_train)``; return test accuracy.

    The training is deterministic given ``seed`` and leaves torch's global random state untouched.

    Args:
        x_train: ``(n, d)`` training inputs (e.g. one generation's samples).
        y_train: ``(n,)`` training labels.
        x_test: ``(m, d)`` held-out real inputs.
        y_test: ``(m,)`` held-out real labels.
        n_classes: output classes.
        hidden: hidden width.
        epochs: passes over the training set.
        lr: Adam learning rate.
        batch_size: minibatch size.
        scale: inputs are divided by it (16 for digits).
        seed: seed of initialisation and shuffling.

    Returns:
        Accuracy on ``(x_test, y_test)`` in ``[0, 1]``.
    """
    import torch

    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP: extra threads only add contention
    try:
        return _train_and_score(x_train, y_train, x_test, y_test, n_classes, hidden, epochs, lr, batch_size, scale, seed)
    finally:
        torch.set_num_threads(n_threads)


def _train_and_score(x_train, y_train, x_test, y_test, n_classes, hidden, epochs, lr, batch_size, scale, seed) -> float:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        xt = torch.as_tensor(np.asarray(x_train), dtype=torch.float32) / scale
        yt = torch.as_tensor(np.asarray(y_train), dtype=torch.int64)
        net = torch.nn.Sequential(
            torch.nn.Linear(xt.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_classes)
        )
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            perm = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), batch_size):
                b = perm[i : i + batch_size]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(xt[b]), yt[b]).backward()
                opt.step()
        with torch.no_grad():
            pred = net(torch.as_tensor(np.asarray(x_test), dtype=torch.float32) / scale).argmax(1)
    return float((pred.numpy() == np.asarray(y_test)).mean())


def _total_variance(x: np.ndarray) -> float:
    """Sum of per-feature variances of ``x`` with ddof 0 (the package's ``total_variance(unbiased=False)``)."""
    import torch

    from collapse_guard.metrics.functional import total_variance

    return float(total_variance(torch.as_tensor(np.asarray(x, dtype=np.float64)), unbiased=False))


def within_class_variance(x: np.ndarray, y: np.ndarray) -> float:
    """Sample-weighted mean over classes of the total within-class variance of ``x``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    total = 0.0
    for c in np.unique(y):
        xc = x[y == c]
        total += xc.var(axis=0).sum() * len(xc)
    return float(total / len(x))


def chain_table(
    datasets: Sequence[Tuple[np.ndarray, np.ndarray]],
    x_real: np.ndarray,
    y_real: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    models: Optional[Sequence[Any]] = None,
    accuracy_fn: Optional[Callable[..., float]] = mlp_real_accuracy,
    include_real: bool = True,
) -> List[Dict[str, float]]:
    """Per-generation collapse figures of a chain from :func:`generation_chain`.

    Args:
        datasets: ``[(x_1, y_1), ...]`` generations 1..G.
        x_real: real training data (generation 0, the variance reference).
        y_real: its labels.
        x_test: held-out real inputs for the accuracy.
        y_test: held-out real labels.
        models: optional fitted models (``classes_alive`` / ``modes_alive`` reported when they have them).
        accuracy_fn: ``f(x_train, y_train, x_test, y_test) -> accuracy``; ``None`` skips the accuracy.
        include_real: add a row for generation 0 (the real training data).

    Returns:
        One dict per generation with keys ``generation``, ``var_ratio`` (total pixel variance / real),
        ``within_var_ratio`` (within-class variance / real), ``classes`` (classes present in the sample),
        ``min_class_share``, ``modes`` (live mixture components of the model that sampled it, or ``nan``)
        and ``real_acc`` (held-out real accuracy of a classifier trained on the generation, or ``nan``).
    """
    rv = _total_variance(x_real)
    rw = within_class_variance(x_real, y_real)
    n_classes = int(np.max(y_real)) + 1
    rows: List[Dict[str, float]] = []
    items: List[Tuple[int, np.ndarray, np.ndarray, Any]] = []
    if include_real:
        items.append((0, np.asarray(x_real), np.asarray(y_real), None))
    for g, (xg, yg) in enumerate(datasets, start=1):
        items.append((g, xg, yg, models[g - 1] if models is not None else None))
    for g, xg, yg, model in items:
        counts = np.bincount(np.asarray(yg), minlength=n_classes)
        row = {
            "generation": g,
            "var_ratio": _total_variance(xg) / rv,
            "within_var_ratio": within_class_variance(xg, yg) / rw,
            "classes": int(np.count_nonzero(counts)),
            "min_class_share": float(counts.min() / counts.sum()),
            "modes": float(model.modes_alive()) if model is not None and hasattr(model, "modes_alive") else float("nan"),
            "real_acc": float(accuracy_fn(xg, yg, x_test, y_test)) if accuracy_fn is not None else float("nan"),
        }
        rows.append(row)
    return rows


def format_table(rows: Sequence[Dict[str, float]]) -> str:
    """Render :func:`chain_table` rows as a fixed-width text table."""
    head = f"{'gen':>4} {'var/real':>9} {'within/real':>11} {'classes':>7} {'min share':>9} {'modes':>5} {'real acc':>8}"
    lines = [head]
    for r in rows:
        modes = "-" if np.isnan(r["modes"]) else f"{int(r['modes'])}"
        acc = "-" if np.isnan(r["real_acc"]) else f"{r['real_acc']:.3f}"
        lines.append(
            f"{r['generation']:>4} {r['var_ratio']:>9.3f} {r['within_var_ratio']:>11.3f} {r['classes']:>7d} "
            f"{r['min_class_share']:>9.3f} {modes:>5} {acc:>8}"
        )
    return "\n".join(lines)
