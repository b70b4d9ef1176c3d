"""Oracle O3 : published vs ours (see run_oracles.py)."""
import sys

from run_oracles import main

if __name__ == "__main__":
    sys.exit(main(["o3"]))
