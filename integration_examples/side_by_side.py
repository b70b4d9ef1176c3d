"""The tables the language-model and regression examples print: per fit and epoch, and one line per fit.

Not part of "your" code: the examples share it so that each prints its four fits side by side the same way.
"""
from __future__ import annotations

from typing import Sequence


def trained_real_share(counts: dict) -> float:
    """The share of real samples (real and injected reserve) of all samples a fit trained on."""
    return (counts.get("real", 0) + counts.get("reserve", 0)) / max(1, sum(counts.values()))


def print_tables(fits: dict, columns: Sequence[tuple[str, str, str]], summary: Sequence[tuple[str, str, str]]) -> None:
    """Per fit and epoch: the real share, the held-out real indicators ``columns`` (``(header, logged key, format)``)
    and the guard's action (``-`` for an unguarded fit); then per fit the ``summary`` fields (``(header, field,
    format)``) and the guard's events."""
    head = "".join(f" {h:>{max(6, len(h))}}" for h, _, _ in columns)
    print(f"{'fit':<22} {'epoch':>5} {'real %':>6}{head}  guard")
    for name, f in fits.items():
        checks = {c["epoch"]: c for c in f["checks"]}
        acted: dict = {}
        for e in f["events"] or []:
            acted.setdefault(e.epoch, []).append(e.action)
        for row in f["ratio"]:
            c = checks.get(row["epoch"], {})
            state = "-" if f["events"] is None else ",".join(acted.get(row["epoch"], [])) or "ok"
            cells = "".join(f" {c.get(key, float('nan')):>{max(6, len(h))}{fmt}}" for h, key, fmt in columns)
            print(f"{name:<22} {row['epoch']:>5} {100 * row['real_fraction']:>6.1f}{cells}  {state}")
        print()
    head = "".join(f" {h:>{max(9, len(h))}}" for h, _, _ in summary)
    print(f"{'fit':<22}{head}  guard events")
    for name, f in fits.items():
        events = "not guarded" if f["events"] is None else (
            "; ".join(f"epoch {e.epoch} {e.action} ({e.rule})" for e in f["events"]) or "none")
        cells = "".join(f" {f[field]:>{max(9, len(h))}{fmt}}" for h, field, fmt in summary)
        print(f"{name:<22}{cells}  {events}")


def four_fits(fit, healthy: dict, collapsing: dict) -> dict:
    """The four fits of an example, in order: ``fit(source, guarded)`` on real data only (guarded), with the
    collapsing source unguarded and guarded, and with the healthy source guarded."""
    return {
        "real only, guarded": fit(None, True),
        "collapsing": fit(collapsing, False),
        "collapsing, guarded": fit(collapsing, True),
        "healthy, guarded": fit(healthy, True),
    }


def fit_record(fitted, check, guard, dm, **final) -> dict:
    """What the tables read of one fit: the real share per epoch (``RatioMonitor``), the checks, the guard's events
    (``None`` unguarded), the real share of all samples trained on, and the ``final`` figures."""
    ratio = next(cb for cb in fitted.callbacks if type(cb).__name__ == "RatioMonitor")
    return {"ratio": ratio.history, "checks": check.history, "events": list(guard.events) if guard else None,
            "real_share": trained_real_share(dm.samples_by_source()), **final}


def real_losses(model, real_dm, test_trainer, key: str) -> dict:
    """``{"held-out": ..., "test": ...}``: the logged ``key`` of ``test_trainer().test`` on the real DataModule's
    validation (the held-out real set) and test loaders."""
    real_dm.setup("test")
    loaders = (("held-out", real_dm.val_dataloader()), ("test", real_dm.test_dataloader()))
    return {part: test_trainer().test(model, dataloaders=loader, verbose=False)[0][key] for part, loader in loaders}
