"""``collapse-guard`` command line: ``collapse-guard demo``, ``collapse-guard report RUN_DIR``."""
from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``collapse-guard`` console script."""
    from collapse_guard import __version__

    parser = argparse.ArgumentParser(
        prog="collapse-guard",
        description="collapse_guard's command line: run the demo on real digits, or re-render a saved collapse report.",
    )
    parser.add_argument("--version", action="version", version=f"collapse-guard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="three fits on real digits: real only, mixed, mixed with the guard")
    demo.add_argument("--out", default="runs/demo", help="folder for the JSON record (default: runs/demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--epochs", type=int, default=None)
    demo.add_argument("--quick", action="store_true", help="a smaller run (about a third of the time)")
    report = sub.add_parser(
        "report",
        help="re-render the plots, HTML page and summary of a saved collapse report from its report.json",
        description="Re-render real_fraction.png, indicators.png, report.html and the terminal summary of a collapse "
        "report from its report.json alone (written by the CollapseReport callback). Exit status: 0 when every "
        "part was written, 1 when a part failed (a warning says which), 2 when there is no readable report: none "
        "found, not UTF-8 JSON, nested too deeply, or not of a report's layout (the message names the file and the "
        "first field missing or of the wrong type; with --reference, of the reference too).",
    )
    report.add_argument(
        "run_dir",
        help="the report folder (holding report.json), the run's log or root folder (holding collapse_report/), "
        "or the report.json file itself",
    )
    report.add_argument("--out", default=None, help="write the plots and the page here (default: next to report.json)")
    report.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    report.add_argument("--no-html", action="store_true", help="do not write report.html")
    report.add_argument("--no-summary", action="store_true", help="do not print the summary tables")
    report.add_argument(
        "--reference", default=None, metavar="REF",
        help="another run's report to compare with (e.g. a fit on real data only): its report folder, run folder "
        "or report.json; its indicators are overlaid on the plots and compared at the end (it replaces a reference "
        "the record holds; report.json itself is not changed)",
    )
    args = parser.parse_args(argv)

    if args.command == "report":
        return run_report(args)

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


def run_report(args: argparse.Namespace) -> int:
    """``collapse-guard report``: re-render a saved report; 0 ok, 1 a part failed, 2 no readable report."""
    import sys

    from collapse_guard.report import PROVENANCE_JSON, find_report, load_record, load_reference, render
    from collapse_guard.report.files import write_json
    from collapse_guard.report.record import jsonable

    try:
        path = find_report(args.run_dir)
        record = load_record(path)
        if args.reference is not None:  # the same checks as any record; the message names the reference
            record["reference"] = load_reference(args.reference)
    except (OSError, ValueError) as err:  # missing, unreadable, not a report, too deep, or a field wrongly typed
        print(f"collapse-guard report: {err}", file=sys.stderr)
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # every failed part is shown, once
        out = Path(args.out) if args.out else path.parent
        failed = False
        if record.get("provenance") is not None and not (out / PROVENANCE_JSON).exists():
            try:  # the manifest alone, when it is missing
                write_json(out / PROVENANCE_JSON, jsonable(record["provenance"]))  # a NaN read back: "nan"
            except (OSError, ValueError) as err:
                print(f"collapse-guard report: could not write {out / PROVENANCE_JSON}: {err}", file=sys.stderr)
                failed = True
        result = render(
            record,
            out,
            plots=not args.no_plots,
            html=not args.no_html,
            summary=not args.no_summary,
        )
    return 0 if result.ok and not failed else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
