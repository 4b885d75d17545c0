"""The native calling convention: every frame lossc's exported functions read, declared
once, for the code that emits them and the Python that calls them.

Every function lossc exports has the C signature `int32_t f(int64_t *frame)`
(NATIVE_SIGNATURE): `frame` points at 8-byte slots holding the function's arguments
(addresses, counts, numbers), so that a caller keeps one frame and changes only the
slots that change between calls, and a call from Python passes one integer. Some
slots point at records of their own (the error slots, the optimizer's configuration,
the generator's state), declared the same way.

Each `Layout` below names its slots in order, each with the type of what it holds and
what it means. The emitters load a slot by name (`Layout.load`, `Layout.store`); a
Python caller fills a frame by name through a ctypes Structure generated from the
declaration (`Layout.new()`: `frame.params = address`). VERSION, recorded in every
artifact and cache entry, is a hash of these declarations and of the constants both
sides give a meaning to (return codes, optimizer kinds), so that machine code made for
another layout is recompiled, never called with a frame it does not expect.

Slot types: `i64` an integer, `f64` a double (the configuration record), `u64` an
unsigned word; `X*` the address of X elements, where X is `T` (the model's dtype),
`i64`, `u64`, `f64` or `i8*` (an array of addresses); `i8*` an address of bytes;
`code` the address of a function with this same signature.

Standard library only at import (runtime/elf.py, which must import cheaply, takes
NATIVE_SIGNATURE from here); the emitters' helpers import llvmlite when they run.
"""
from __future__ import annotations

import ctypes
import hashlib
from dataclasses import dataclass
from typing import Optional

NATIVE_SIGNATURE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)

# what the exported functions return
OK = 0
INDEX_ERROR = 1         # an index was out of range: the error record says where
DIVERGED = 2            # the training steps: a batch's objective or gradient not finite
RETURN_CODES = {"ok": OK, "index_error": INDEX_ERROR, "diverged": DIVERGED}

# the optimizers of the training steps (the configuration record's `kind`)
OPTIMIZER_KINDS = {"sgd": 0, "rmsprop": 1, "adam": 2}

_CTYPES = {"i64": ctypes.c_int64, "u64": ctypes.c_uint64, "f64": ctypes.c_double}
_SCALAR_BITS = {"i64": 64, "u64": 64, "i8": 8}      # (f64: a double)


def _scalar(name: str):
    from llvmlite import ir
    return ir.DoubleType() if name == "f64" else ir.IntType(_SCALAR_BITS[name])


@dataclass(frozen=True)
class Slot:
    """One 8-byte slot of a frame or record."""

    name: str
    type: str
    meaning: str


class Layout:
    """A frame (or a record a frame points at): its slots in order. `word` is how every
    slot is stored: i64 (integers and addresses), u64 or f64."""

    def __init__(self, name: str, slots: tuple, word: str = "i64"):
        self.name, self.slots, self.word = name, tuple(slots), word
        self.index = {s.name: k for k, s in enumerate(self.slots)}
        if len(self.index) != len(self.slots):
            raise ValueError(f"layout {name}: two slots of one name")
        ctype = _CTYPES[word]
        self.struct = type(name, (ctypes.Structure,),
                           {"_fields_": [(s.name, ctype) for s in self.slots],
                            "__doc__": f"The {name} layout (lossc/codegen/abi.py)."})

    def __len__(self) -> int:
        return len(self.slots)

    def new(self):
        """A zeroed frame of this layout, as a ctypes Structure with a field per slot
        (ctypes.addressof gives the address the native function takes)."""
        return self.struct()

    def describe(self) -> str:
        """The declaration as text: what VERSION hashes, and what the docs show."""
        return "\n".join([f"{self.name} ({self.word} slots)"] + [
            f"  {k:2d} {s.name}: {s.type}  {s.meaning}" for k, s in enumerate(self.slots)])

    # ------------------------------------------------------------ for the emitters

    def slot(self, b, base, name: str, at=None):
        """A pointer to slot `name` of the record at `base` (a pointer to the words),
        `at` words further on if given (a record inside a larger array); b is an
        llvmlite IRBuilder."""
        from llvmlite import ir
        k = ir.Constant(ir.IntType(64), self.index[name])
        return b.gep(base, [k if at is None else b.add(at, k)])

    def load(self, b, base, name: str, T=None, ty=None, at=None):
        """Slot `name` as the type it is declared with (`T` the model's element type,
        for `T*` slots), or as `ty` (a `code` slot: the function's pointer type)."""
        from llvmlite import ir
        value = b.load(self.slot(b, base, name, at))
        want = ty or ir_type(self.slots[self.index[name]].type, T)
        return b.inttoptr(value, want) if isinstance(want, ir.PointerType) else value

    def store(self, b, base, name: str, value, at=None) -> None:
        """Store `value` in slot `name` (an address as its integer)."""
        from llvmlite import ir
        if isinstance(value.type, ir.PointerType):
            value = b.ptrtoint(value, _scalar(self.word))
        b.store(value, self.slot(b, base, name, at))


def ir_type(spelling: str, T=None):
    """The LLVM type of a slot declared as `spelling` (`T` the model's element type)."""
    base = spelling.rstrip("*")
    depth = len(spelling) - len(base)
    if base == "code":
        raise ValueError("a code slot is loaded with the function's type (ty=)")
    ty = T if base == "T" else _scalar(base)
    if ty is None:
        raise ValueError(f"a {spelling} slot needs the model's element type (T=)")
    for _ in range(depth):
        ty = ty.as_pointer()
    return ty


# ------------------------------------------------------------ the layouts

S = Slot

ERROR = Layout("Error", (
    S("check", "i64", "the index check that failed (an index into the artifact's "
                      "index_checks), or -1 - that index where the arithmetic computing "
                      "the index overflowed 64 bits"),
    S("sample", "i64", "the sample it failed at (the training steps: counted in the "
                       "data set), -1 outside the loop over samples"),
    S("value", "i64", "the index's value"),
    S("batch", "i64", "the training steps' DIVERGED: the batch whose objective or "
                      "gradient is not finite"),
))

# rows past the batch each per-sample output array of lossc_predict needs: its last
# iteration stores whole groups of lanes (at most two groups of 16: float32, AVX-512)
PREDICT_PADDING = 32

# lossc_value_and_grad, lossc_loss (codegen/llvm.py) and lossc_predict (codegen/predict.py)
VALUE_AND_GRAD = Layout("ValueAndGradFrame", (
    S("params", "T*", "the flat parameter vector (declaration order, C order in each)"),
    S("hypers", "T*", "the hyperparameters in declaration order"),
    S("inputs", "i8**", "the k-th input's (B, *shape) array, C order (int inputs as i64)"),
    S("B", "i64", "the samples in the batch"),
    S("value", "T*", "out: the objective"),
    S("work", "T*", "scratch space of the model's work size"),
    S("err", "i64*", "out, when INDEX_ERROR is returned: an Error record"),
    S("grad", "T*", "out: the flat gradient (lossc_loss leaves it alone); for "
                    "lossc_predict, a table of one T* per output, each "
                    "(B + PREDICT_PADDING, *shape) (codegen/predict.py)"),
    S("ahead", "i64*", "the row addresses of a batch the caller gathers later, "
                       "ahead_rows per input, input by input, for the loop over samples "
                       "to prefetch into L2 as it goes (read only if ahead_rows > 0)"),
    S("ahead_rows", "i64", "the rows per input in `ahead`; 0: none (every caller but "
                           "the training steps)"),
    S("sparse", "i64*", "lossc_value_and_grad of a model with row-sparse parameters: a "
                        "RowGrads record per such parameter, in declaration order (the "
                        "artifact's sparse_rows); 0 for any other function"),
))

# the touched rows of a row-sparse parameter's gradient (codegen/sparse.py)
ROW_GRADS = Layout("RowGrads", (
    S("rows", "i64*", "out: the rows the batch touched, each once, in the order first "
                      "touched"),
    S("grads", "T*", "out: their gradients, row after row (capacity + 1 rows: the last "
                     "takes what the padding lanes add)"),
    S("count", "i64", "out: the rows touched"),
    S("capacity", "i64", "the rows `rows` and `grads` hold: at least the smaller of "
                         "B x the rows a sample touches and the parameter's rows"),
    S("table", "i64*", "the record's own between calls: a hash table of the rows "
                       "touched in this call, mask + 1 words (at least 2 x capacity), "
                       "each generation << 32 | slot, or free (another generation's)"),
    S("mask", "i64", "the table's words - 1 (a power of two - 1)"),
    S("generation", "i64", "in/out: the call's number, below 2^31, incremented by each "
                           "call (at 2^31 the table is cleared and it starts at 1 again)"),
    S("dense", "i64", "nonzero: also write the parameter's dense gradient into `grad` "
                      "(zeros but the touched rows)"),
))

# lossc_train_steps_sgd, _rmsprop and _adam (codegen/fused.py)
TRAIN_STEPS = Layout("TrainStepsFrame", (
    S("params", "T*", "in/out: the flat parameter vector, updated in place"),
    S("hypers", "T*", "the hyperparameters"),
    S("data", "i8**", "the inputs, N rows each"),
    S("N", "i64", "the rows of the data set"),
    S("order", "i64*", "the epoch's order of the rows"),
    S("batch_size", "i64", "rows per batch (the last batch holds the remainder)"),
    S("first", "i64", "the first batch to take, counted in the epoch"),
    S("count", "i64", "the batches to take"),
    S("config", "f64*", "a TrainConfig record"),
    S("flags", "i64*", "a TrainFlags record"),
    S("state", "T*", "in/out: the optimizer's state, 3 x n_params (momentum or first "
                     "moment; second moment; max or average)"),
    S("t", "i64*", "in/out: the optimizer steps taken"),
    S("batches", "i8**", "a buffer per input for a batch's rows"),
    S("losses", "T*", "out: each batch's objective, by its number in the epoch"),
    S("work", "T*", "scratch space of the model's work size"),
    S("err", "i64*", "out: an Error record (the sample counted in the data set)"),
    S("grad", "T*", "the gradient of a batch (n_params)"),
    S("value", "T*", "the objective of a batch"),
    S("gradient", "code", "lossc_value_and_grad's address"),
    S("n_params", "i64", "the length of the parameter vector"),
    S("n_inputs", "i64", "the number of inputs"),
    S("row_bytes", "i64*", "the bytes of a row of each input, a multiple of 4"),
    S("ahead", "i64*", "room for the row addresses of one batch (batch_size x "
                       "n_inputs), or 0: before each batch the steps list there the rows "
                       "of the batch AHEAD_BATCHES on, for the gradient to prefetch"),
    S("frozen", "i8*", "a byte per parameter, nonzero for one the steps leave as it is "
                       "(its gradient taken as 0), or 0: none frozen"),
    S("sparse", "i64*", "the gradient's RowGrads table (VALUE_AND_GRAD's `sparse`), or 0"),
    S("segments", "i64*", "SGD and Adam: the parameters as n_segments x (offset, size, "
                          "record, row width): a record >= 0 names the RowGrads record "
                          "whose touched rows are the only ones updated (SGD's rule; "
                          "Adam's lazy one, torch.optim.SparseAdam's), the others "
                          "updated whole; or 0: every parameter updated from the dense "
                          "gradient"),
    S("n_segments", "i64", "the segments in `segments`"),
))

TRAIN_CONFIG = Layout("TrainConfig", (
    S("lr", "f64", "the learning rate"),
    S("a", "f64", "SGD: momentum; RMSprop: alpha; Adam: beta1"),
    S("b", "f64", "RMSprop: momentum; Adam: beta2"),
    S("eps", "f64", "RMSprop and Adam: the denominator's epsilon"),
    S("weight_decay", "f64", "the weight decay (AdamW's decoupled)"),
    S("dampening", "f64", "SGD: the momentum's dampening"),
    S("clip_norm", "f64", "the global gradient norm to clip to (if `clip`)"),
    S("half", "f64", "0.5, the exponent of Adam's (1 - beta2^t) ** 0.5, read from here "
                     "because LLVM turns pow(x, 0.5) with a constant 0.5 into sqrt(x), "
                     "which rounds differently"),
), word="f64")

TRAIN_FLAGS = Layout("TrainFlags", (
    S("kind", "i64", "OPTIMIZER_KINDS (not read: each optimizer has its own function)"),
    S("nesterov", "i64", "SGD: Nesterov momentum"),
    S("centered", "i64", "RMSprop: centered"),
    S("amsgrad", "i64", "Adam: AMSGrad"),
    S("decoupled", "i64", "Adam: decoupled weight decay (AdamW)"),
    S("clip", "i64", "clip the gradient to clip_norm"),
))

# lossc_permutation_pcg64 (codegen/rng.py)
PERMUTATION = Layout("PermutationFrame", (
    S("state", "u64*", "in/out: a Pcg64State record"),
    S("buffered", "u64*", "in/out: a Pcg64Buffer record"),
    S("n", "i64", "the length of the permutation"),
    S("out", "i64*", "out: the permutation"),
))

# lossc_lbfgs_two_loop (codegen/two_loop.py): the L-BFGS direction, in doubles
LBFGS_TWO_LOOP = Layout("TwoLoopFrame", (
    S("n", "i64", "the length of the vectors"),
    S("pairs", "i64", "the curvature pairs in use (at least 1)"),
    S("order", "i64*", "their rows in s and y, oldest first"),
    S("s", "f64*", "the rows of s, n doubles each"),
    S("y", "f64*", "the rows of y, n doubles each"),
    S("rho", "f64*", "1 / s'y of each row"),
    S("alpha", "f64*", "work: a double for each row"),
    S("q", "f64*", "in: the gradient g; out: the direction -H g"),
))

PCG64_STATE = Layout("Pcg64State", (
    S("state_lo", "u64", "the LCG state's low 64 bits"),
    S("state_hi", "u64", "its high 64 bits"),
    S("inc_lo", "u64", "the increment's low 64 bits"),
    S("inc_hi", "u64", "its high 64 bits"),
), word="u64")

PCG64_BUFFER = Layout("Pcg64Buffer", (
    S("has_uint32", "u64", "1 if a 32-bit half of the last draw is kept for the next"),
    S("uinteger", "u64", "that half (NumPy reports a stale one when has_uint32 is 0)"),
), word="u64")

LAYOUTS = (VALUE_AND_GRAD, ROW_GRADS, ERROR, TRAIN_STEPS, TRAIN_CONFIG, TRAIN_FLAGS, PERMUTATION,
           PCG64_STATE, PCG64_BUFFER, LBFGS_TWO_LOOP)


def version(layouts=LAYOUTS, constants: Optional[dict] = None) -> str:
    """A hash of the layouts' declarations and the shared constants."""
    if constants is None:
        constants = {"return": RETURN_CODES, "optimizer": OPTIMIZER_KINDS}
    text = "\n".join(layout.describe() for layout in layouts)
    text += "\n" + repr(sorted((k, sorted(v.items())) for k, v in constants.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


VERSION = version()
