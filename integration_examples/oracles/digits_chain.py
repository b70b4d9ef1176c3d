"""Chain of generations of a class-conditional GMM on sklearn digits: collapse under replace.

Usage:
    python integration_examples/oracles/digits_chain.py [--regime replace|accumulate|fresh]
        [--generations 30] [--samples 300] [--seed 0] [--no-acc]

Prints, per generation g (0 = the 1000 real training digits): total pixel variance / real, within-class
variance / real, classes present, smallest class share, live mixture components of the model that sampled
generation g, and the accuracy on ~800 held-out REAL digits of a 64-128-10 MLP trained only on generation g.
"""
import argparse
import sys
import time
from pathlib import Path

from collapse_guard.loop import ClassConditionalGMM, generation_chain

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: the reproductions package
from reproductions.digits_chain import chain_table, format_table, load_digits_split, mlp_real_accuracy  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--regime", default="replace", choices=["replace", "accumulate", "fresh"])
    p.add_argument("--generations", type=int, default=30)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--components", type=int, default=3)
    p.add_argument("--pca", type=int, default=40)
    p.add_argument("--real-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-acc", action="store_true", help="skip the MLP accuracy column")
    a = p.parse_args()

    x_tr, y_tr, x_te, y_te = load_digits_split(1000, seed=0)
    t0 = time.perf_counter()
    gens, models = generation_chain(
        lambda: ClassConditionalGMM(n_components=a.components, n_pca=a.pca),
        x_tr, y_tr, generations=a.generations, samples_per_generation=a.samples,
        regime=a.regime, seed=a.seed, real_fraction=a.real_fraction, return_models=True,
    )
    t_chain = time.perf_counter() - t0
    rows = chain_table(gens, x_tr, y_tr, x_te, y_te, models=models,
                       accuracy_fn=None if a.no_acc else mlp_real_accuracy)
    t_all = time.perf_counter() - t0
    print(f"regime={a.regime} generations={a.generations} samples/gen={a.samples} "
          f"components/class={a.components} pca={a.pca} seed={a.seed}")
    print(format_table(rows))
    print(f"chain: {t_chain:.1f} s; chain + table: {t_all:.1f} s")


if __name__ == "__main__":
    main()
