"""``collapse-guard`` command line: ``collapse-guard demo``."""
from __future__ import annotations

import argparse
import logging
import warnings
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``collapse-guard`` console script."""
    parser = argparse.ArgumentParser(prog="collapse-guard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="three fits on real digits: real only, mixed, mixed with the guard")
    demo.add_argument("--out", default="runs/demo", help="folder for the JSON record (default: runs/demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--epochs", type=int, default=None)
    demo.add_argument("--quick", action="store_true", help="a smaller run (about a third of the time)")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from collapse_guard.demo import run_demo

        logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", module="pytorch_lightning")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        overrides = {"seed": args.seed}
        if args.epochs is not None:
            overrides["epochs"] = args.epochs
        run_demo(out=args.out, quick=args.quick, **overrides)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
