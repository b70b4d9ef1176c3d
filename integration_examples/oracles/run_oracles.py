"""Published model-collapse figures (O1-O6: Dohmatob et al. 2024; Gerstgrasser et al. 2024; Shumailov et al.
2024; Bertrand et al. 2024; Alemohammad et al. 2024) next to collapse_guard.loop's.

Usage:
    python integration_examples/oracles/run_oracles.py [o1 o2 ... | all]

Each line: ok/FAIL, oracle, figure, published value, ours, tolerance. Runs the published scale (O6: 16 seeds,
M = 1000, 2000 generations: 1-2 minutes on 2 cores); tests/reproductions checks the same figures, O6 at a smaller
scale. Exit status 1 if any figure is out of tolerance.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: the reproductions package
from reproductions.oracles import ORACLES  # noqa: E402


def main(argv=None) -> int:
    names = [a.lower() for a in (argv if argv is not None else sys.argv[1:])] or ["all"]
    if names == ["all"]:
        names = list(ORACLES)
    unknown = [n for n in names if n not in ORACLES]
    if unknown:
        print(f"unknown oracle(s): {', '.join(unknown)}; choose from {', '.join(ORACLES)} or all")
        return 2
    failed = 0
    for name in names:
        t0 = time.perf_counter()
        rows = ORACLES[name]()
        for row in rows:
            print(row)
            failed += not row.ok
        print(f"   {name}: {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
