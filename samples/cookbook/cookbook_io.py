"""Write a cookbook generator's data set to a file lossc reads:

    python samples/cookbook/svm.py svm.npz [--n 2000] [--seed 0]

writes the arrays of `generate(n, seed)` (one per input of the model) to a .npz."""
import argparse

import numpy as np


def main(generate) -> None:
    parser = argparse.ArgumentParser(description=generate.__doc__)
    parser.add_argument("out", help="the .npz file to write")
    parser.add_argument("--n", type=int, default=None, help="samples (default: the "
                                                             "generator's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    kwargs = {"seed": args.seed} if args.n is None else {"n": args.n, "seed": args.seed}
    data, _ = generate(**kwargs)
    np.savez(args.out, **data)
    print(f"wrote {args.out}: " + ", ".join(f"{k}{list(v.shape)}" for k, v in data.items()))
