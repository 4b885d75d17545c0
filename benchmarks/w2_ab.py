"""W2's call at B=256 in two checkouts, timed in turns: for changes to the Python of the
call paths (runtime/callpaths.py, calls.py, model.py), whose effect is a few tenths of a
microsecond on a 3 us call.

    python -m benchmarks.w2_ab OLD_CHECKOUT NEW_CHECKOUT [--rounds 8] [--what call]

Each round runs one fresh process per checkout, one after the other; each process times
the call, best of 300 samples of 1,000 calls, and the figure of a checkout is the median
over the rounds. Two things move a process's figure by 0.1-0.2 us whatever the code,
so they are fixed or varied on purpose here:
  * where X's data starts in a cache line: the native code reads rows straddling lines
    more slowly. X is copied to start ALIGN bytes into a line (--align, default 0);
  * where the process's objects lie in memory (the checkout's path alone shifts it):
    each process first allocates a random number of blocks of random sizes, and the
    median over the rounds averages that out.
--what: `call` (m.value_and_grad(theta, x=X, y=y), the same arrays each time: the
repeated call), `python` (the same with the native function replaced by one that
returns at once: the Python and the ctypes call alone), `checked` (the checked call, as
on a first call with new arrays).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

CHILD = r"""
import os, random, sys, timeit
pads = [bytes(random.randrange(1, 4096)) for _ in range(random.randrange(1, 200))]
checkout, what, align = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, checkout)
import numpy as np
import lossc
assert lossc.__file__.startswith(checkout), lossc.__file__
from benchmarks.common import compile_model
from benchmarks.w2_logistic import D, SRC, make_data, make_theta
m = compile_model(SRC, dims={"D": D})
theta, (X0, y) = make_theta(), make_data(256)
raw = np.empty(X0.nbytes + 128, np.uint8)
start = (-raw.__array_interface__["data"][0]) % 64 + align
X = raw[start:start + X0.nbytes].view(np.float64).reshape(X0.shape)
X[...] = X0
m.value_and_grad(theta, x=X, y=y)
if what == "python":
    import llvmlite.binding as llvm
    from lossc.codegen.abi import NATIVE_SIGNATURE
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    engine = llvm.create_mcjit_compiler(
        llvm.parse_assembly("define i32 @f(i8* %p) { ret i32 0 }"),
        llvm.Target.from_default_triple().create_target_machine())
    engine.finalize_object()
    m._vg = NATIVE_SIGNATURE(engine.get_function_address("f"))
if what == "checked":
    calls, kwargs = m._paths.take(), {"x": X, "y": y}
    call = lambda: calls.checked.value_and_grad(theta, kwargs)
else:
    call = lambda: m.value_and_grad(theta, x=X, y=y)
call()
print(min(timeit.repeat(call, number=1000, repeat=300)) / 1000 * 1e6)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--what", choices=("call", "python", "checked"), default="call")
    ap.add_argument("--align", type=int, choices=(0, 16, 32, 48), default=0)
    args = ap.parse_args()
    trees = {"old": os.path.abspath(args.old), "new": os.path.abspath(args.new)}
    times = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            out = subprocess.run([sys.executable, "-c", CHILD, tree, args.what, str(args.align)],
                                 capture_output=True, text=True, cwd="/", check=True)
            times[name].append(float(out.stdout))
    for name, ts in times.items():
        print(f"{name}: median {statistics.median(ts):.2f} us, best {min(ts):.2f} "
              f"({' '.join(f'{t:.2f}' for t in ts)})  {trees[name]}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
