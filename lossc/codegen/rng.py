"""NumPy's `Generator.permutation(n)` for a PCG64 generator, as native code.

    i32 lossc_permutation_pcg64(i64* frame)

Training draws one permutation of the samples per epoch, `rng.permutation(n)`, and
NumPy's, drawn value by value with a mispredicted branch at each rejection, is a large
share of a short training run. This function draws exactly the same permutation and
leaves the generator in exactly the same state, so that NumPy's draws and these mix
freely (lossc/optim/shuffle.py calls it, and checks it against NumPy before trusting
it).

NumPy's algorithm (numpy/random/_generator.pyx `permutation` -> `shuffle` ->
`_shuffle_raw`, distributions.c `random_interval`, pcg64.h), checked against NumPy
itself in tests/test_shuffle.py:

    out = arange(n)
    for i = n-1 down to 1:
        j = random_interval(i); swap out[i], out[j]

    random_interval(max):    mask = the smallest all-ones mask >= max; then draw
        next_uint32() & mask until <= max   (max <= 0xffffffff)
        next_uint64() & mask until <= max   (otherwise)

    next_uint64: state = state * MULT + inc (128 bits); return rotr64(hi ^ lo, hi >> 58)
                 of the new state (PCG XSL-RR 128/64)
    next_uint32: buffered: if has_uint32, clear it and return uinteger (which keeps its
                 value: NumPy's state reports the stale one); otherwise draw 64 bits,
                 keep the high half in uinteger, set has_uint32, return the low half

n <= 1 draws nothing. A half left buffered by an earlier draw (has_uint32 set on entry)
is the first value used, and an odd number of 32-bit draws leaves one buffered.

The frame is codegen/abi.py's PERMUTATION: the generator's state and its buffered
half (PCG64_STATE and PCG64_BUFFER records, read and written back), n, and the output
array of n int64. Return: OK.

Speed. Drawn value by value, as NumPy does, each draw waits for the previous 128-bit
multiply and each rejection (1 value in 4 on average) is a mispredicted branch. Four
things take both off the critical path (what each gained, as measured when it was
written, is in docs/training.md; time each call from a new state: drawing the same
permutation over and over lets the branch predictor learn part of it and flatters
every variant):

- The values next_uint32 returns are a fixed stream (the buffered half, then the low
  and high halves of successive 64-bit outputs) whatever the rejections: only which
  value goes to which i depends on them. So the stream is generated CHUNK values at a
  time into a buffer on the stack, by a loop of nothing but multiplies and stores, and
  the shuffle consumes it from there. At the end the generator's state is rebuilt from
  the number of values consumed: the LCG state after the last 64-bit output used (each
  output's state is kept with the chunk), has_uint32 if only its low half was used,
  uinteger the high half of the last output drawn.
- Deciding which element takes which value is then a loop over values, not over
  elements: value v (masked) is accepted by the current element e if v <= e, which
  then moves on to e - 1. The loop stores v at e's place in a list of picks either
  way (a rejected value is overwritten by the next) and subtracts the acceptance (0
  or 1) from e: no branch depends on a value, and the chain from one value to the
  next is a compare and a subtract. The swaps follow, element by element from the
  list, their loads independent of one another. It needs the mask to stay put, so it
  runs BLOCK values at a time wherever e - BLOCK still has e's mask: all but about
  BLOCK elements below each power of two and the last few dozen. (Swapping inside
  the value loop instead, a rejected value swapping e with itself, measured slower.)
- The chunk is filled by two LCG chains, the even outputs and the odd, each jumping
  two steps (multiplier M^2, increment inc (M + 1)): each output's 128-bit multiply
  no longer waits for the one before. (It gains most once the blocks have removed
  the rejections' mispredictions, which dominated before.)
- Elsewhere, value by value: the next two values of the stream are kept in
  registers, and whether i takes the first or (the first rejected) the second is a
  select, not a branch. Only when both are rejected (1 in 12 on average) does a loop
  draw on; the loads for the next element's pair depend only on the position before,
  so they are not on the critical path.

For n in the millions the random accesses to `out` take most of the time, for NumPy
as well.

The 64-bit draws (i > 0xffffffff, so n above 2^32 + 1) come first, when i is largest,
and step the state directly; they never touch the buffered half. (Untested: the test
would need a 32 GB array. lossc/optim/shuffle.py leaves such n to NumPy.)
"""
from __future__ import annotations

from llvmlite import ir

from lossc.codegen import abi, unit_names
from lossc.codegen.abi import PCG64_BUFFER, PCG64_STATE, PERMUTATION
from lossc.codegen.values import I1, I32, I64, counted_loop, declared

FUNCTION = unit_names.EXPORTS[unit_names.PERMUTATION]
MULTIPLIER = 0x2360ED051FC65DA44385DF649FCCF645   # PCG's default 128-bit LCG multiplier
CHUNK = 512         # 32-bit values generated at a time (even: whole outputs)
BLOCK = 32          # values consumed without a branch at a time
MAX32 = 0xFFFFFFFF

I128 = ir.IntType(128)


def emit_permutation(module: ir.Module) -> None:
    """Define FUNCTION in `module`."""
    fn = ir.Function(module, ir.FunctionType(I32, [I64.as_pointer()]), name=FUNCTION)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    frame = fn.args[0]
    words, buffered, n, out = (PERMUTATION.load(b, frame, k)
                               for k in ("state", "buffered", "n", "out"))
    gen = _Pcg64(b, fn, words, buffered)

    with counted_loop(b, fn, _i64(0), n) as k:
        b.store(k, b.gep(out, [k]))
    # i > 0xffffffff: 64-bit draws
    with counted_loop(b, fn, b.sub(n, _i64(1)), _i64(MAX32), step=-1) as i:
        _swap(b, out, i, gen.interval64(i))
    # the rest: 32-bit draws from the stream, BLOCK at a time where i's mask cannot
    # change within a block, value by value elsewhere
    stream = _Stream(gen)
    last = b.sub(n, _i64(1))
    top = b.select(b.icmp_signed("<", last, _i64(MAX32)), last, _i64(MAX32))
    i_var = gen.alloca(I64, "i")
    b.store(top, i_var)
    head, body = fn.append_basic_block("shuffle"), fn.append_basic_block("shuffle_body")
    block, single = fn.append_basic_block("block"), fn.append_basic_block("single")
    done = fn.append_basic_block("shuffled")
    b.branch(head)
    b.position_at_end(head)
    i = b.load(i_var)
    b.cbranch(b.icmp_signed(">", i, _i64(0)), body, done)

    b.position_at_end(body)
    stream.refill_if_used()
    mask = _mask(b, i)
    b.cbranch(b.icmp_signed(">=", b.sub(i, _i64(BLOCK)), b.lshr(mask, _i64(1))),
              block, single)

    b.position_at_end(block)
    b.store(stream.block32(i, mask, out), i_var)
    b.branch(head)

    b.position_at_end(single)
    _swap(b, out, i, stream.interval32(i))
    b.store(b.sub(i, _i64(1)), i_var)
    b.branch(head)

    b.position_at_end(done)
    stream.finish()
    gen.save()
    b.ret(ir.Constant(I32, abi.OK))


def _swap(b: ir.IRBuilder, out, i, j) -> None:
    """Exchange out[i] and out[j]."""
    pi, pj = b.gep(out, [i]), b.gep(out, [j])
    vi, vj = b.load(pi), b.load(pj)
    b.store(vj, pi)
    b.store(vi, pj)


def _i64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def _mask(b: ir.IRBuilder, top):
    """The smallest all-ones mask >= top (top >= 1)."""
    ctlz = declared(b.module, "llvm.ctlz.i64", I64, [I64, I1])
    return b.lshr(_i64(-1), b.call(ctlz, [top, ir.Constant(I1, 0)]))


class _Pcg64:
    """NumPy's PCG64 bit generator state, in allocas (LLVM keeps them in registers),
    loaded from the caller's arrays on entry and written back by `save`."""

    def __init__(self, b: ir.IRBuilder, fn: ir.Function, words, buffered):
        self.b, self.fn = b, fn
        self.words, self.buffered = words, buffered
        word = {k: PCG64_STATE.load(b, words, k)
                for k in ("state_lo", "state_hi", "inc_lo", "inc_hi")}
        self.inc = self._join(word["inc_lo"], word["inc_hi"])
        self.state = self.alloca(I128, "state")
        self.has = self.alloca(I1, "has_uint32")
        self.uinteger = self.alloca(I32, "uinteger")
        b.store(self._join(word["state_lo"], word["state_hi"]), self.state)
        b.store(b.icmp_unsigned("!=", PCG64_BUFFER.load(b, buffered, "has_uint32"), _i64(0)),
                self.has)
        b.store(b.trunc(PCG64_BUFFER.load(b, buffered, "uinteger"), I32), self.uinteger)

    def alloca(self, ty, name: str):
        """A variable in the entry block (where LLVM promotes them to registers)."""
        with self.b.goto_block(self.fn.entry_basic_block):
            self.b.position_at_start(self.fn.entry_basic_block)
            return self.b.alloca(ty, name=name)

    def _join(self, lo, hi):
        b = self.b
        return b.or_(b.shl(b.zext(hi, I128), ir.Constant(I128, 64)), b.zext(lo, I128))

    def save(self) -> None:
        b = self.b
        s = b.load(self.state)
        PCG64_STATE.store(b, self.words, "state_lo", b.trunc(s, I64))
        PCG64_STATE.store(b, self.words, "state_hi",
                          b.trunc(b.lshr(s, ir.Constant(I128, 64)), I64))
        PCG64_BUFFER.store(b, self.buffered, "has_uint32", b.zext(b.load(self.has), I64))
        PCG64_BUFFER.store(b, self.buffered, "uinteger", b.zext(b.load(self.uinteger), I64))

    def step(self, s):
        """The LCG's next state (modulo 2^128)."""
        b = self.b
        return b.add(b.mul(s, ir.Constant(I128, MULTIPLIER)), self.inc)

    def output(self, s):
        """XSL-RR: (hi ^ lo) rotated right by the state's top 6 bits."""
        b = self.b
        hi = b.trunc(b.lshr(s, ir.Constant(I128, 64)), I64)
        x = b.xor(hi, b.trunc(s, I64))
        fshr = declared(self.fn.module, "llvm.fshr.i64", I64, [I64, I64, I64])
        return b.call(fshr, [x, x, b.lshr(hi, _i64(58))])

    def next_uint64(self):
        b = self.b
        s = self.step(b.load(self.state))
        b.store(s, self.state)
        return self.output(s)

    def interval64(self, top):
        """random_interval(top) for top > 0xffffffff: next_uint64() & mask until <= top."""
        b = self.b
        mask = _mask(b, top)
        draw = self.fn.append_basic_block("interval64")
        b.branch(draw)
        b.position_at_end(draw)
        j = b.and_(self.next_uint64(), mask)
        done = self.fn.append_basic_block("interval64_done")
        b.cbranch(b.icmp_unsigned(">", j, top), draw, done)
        b.position_at_end(done)
        return j


class _Stream:
    """next_uint32's values, CHUNK at a time (see the module docstring).

    values[0] holds the half buffered on entry, values[1..CHUNK] the chunk: the low and
    high halves of the chunk's 64-bit outputs in turn; states[k] is the LCG state that
    gave output k. Each fill makes AHEAD outputs more, which begin the next chunk, so
    that from any position up to CHUNK a block's values and the two after them are at
    hand (a block may take `pos` past CHUNK; the next refill moves on). `pos` is the
    next value to use, and `a` and `b` hold values[pos] and values[pos + 1]. The
    generator's `state` and `uinteger` stay as they were before the current chunk until
    `finish`."""

    AHEAD = BLOCK // 2 + 1     # values[CHUNK + BLOCK + 1] is the last one a block reads

    def __init__(self, gen: _Pcg64):
        self.gen, b = gen, gen.b
        outputs = CHUNK // 2 + self.AHEAD + 1      # (+1: the fill makes pairs)
        self.values = gen.alloca(ir.ArrayType(I32, 2 * outputs + 1), "values")
        self.states = gen.alloca(ir.ArrayType(I128, outputs), "states")
        self.pos = gen.alloca(I64, "pos")
        self.a, self.b = gen.alloca(I32, "a"), gen.alloca(I32, "b")
        b.store(b.load(gen.uinteger), self.value(_i64(0)))
        self.fill()
        b.store(b.select(b.load(gen.has), _i64(0), _i64(1)), self.pos)
        self.reload()

    def value(self, k):
        return self.gen.b.gep(self.values, [_i64(0), k])

    def state(self, k):
        return self.gen.b.gep(self.states, [_i64(0), k])

    def reload(self) -> None:
        b = self.gen.b
        pos = b.load(self.pos)
        b.store(b.load(self.value(pos)), self.a)
        b.store(b.load(self.value(b.add(pos, _i64(1)))), self.b)

    def fill(self) -> None:
        """The chunk after the generator's state, and AHEAD outputs more."""
        gen, b = self.gen, self.gen.b
        # two chains, even and odd outputs, each two LCG steps at a time: the
        # multiplies of one overlap the other's
        even, odd = gen.alloca(I128, "even"), gen.alloca(I128, "odd")
        first = gen.step(b.load(gen.state))
        b.store(first, even)
        b.store(gen.step(first), odd)
        mult2 = ir.Constant(I128, MULTIPLIER * MULTIPLIER % (1 << 128))
        inc2 = b.add(b.mul(gen.inc, ir.Constant(I128, MULTIPLIER)), gen.inc)
        steps = _i64((CHUNK // 2 + self.AHEAD + 1) // 2)
        with counted_loop(b, gen.fn, _i64(0), steps) as k:
            for chain, which in ((even, 0), (odd, 1)):
                s = b.load(chain)
                b.store(b.add(b.mul(s, mult2), inc2), chain)
                out = b.add(b.mul(k, _i64(2)), _i64(which))
                b.store(s, self.state(out))
                x = gen.output(s)
                lo = b.add(b.mul(out, _i64(2)), _i64(1))
                b.store(b.trunc(x, I32), self.value(lo))
                b.store(b.trunc(b.lshr(x, _i64(32)), I32), self.value(b.add(lo, _i64(1))))

    def refill_if_used(self) -> None:
        """Past the chunk: the generator moves past it and the next one is made (its
        first values are those made ahead, so `a` and `b` stay right)."""
        gen, b = self.gen, self.gen.b
        pos = b.load(self.pos)
        with b.if_then(b.icmp_signed(">", pos, _i64(CHUNK)), likely=False):
            b.store(b.load(self.state(_i64(CHUNK // 2 - 1))), gen.state)
            b.store(b.load(self.value(_i64(CHUNK))), gen.uinteger)
            self.fill()
            b.store(b.sub(pos, _i64(CHUNK)), self.pos)

    def next(self):
        """next_uint32()."""
        b = self.gen.b
        self.refill_if_used()
        pos = b.load(self.pos)
        b.store(b.add(pos, _i64(1)), self.pos)
        return b.load(self.value(pos))

    def block32(self, top, mask, out):
        """BLOCK values of the stream, from `pos`, given to the elements top, top - 1, ..
        down to as many as accept one, each swapped with the one it picks; returns the
        next element to draw for (top less the values accepted). All those elements
        share `mask` (the caller checks that top - BLOCK does). No branch depends on a
        value: each value is stored as the pick of the current element, which moves on
        only if it accepts (see the module docstring); the swaps follow."""
        b, fn = self.gen.b, self.gen.fn
        pos = b.load(self.pos)
        mask32 = b.trunc(mask, I32)
        top32 = b.trunc(top, I32)
        element = self.gen.alloca(I32, "element")
        picks = self.gen.alloca(ir.ArrayType(I32, BLOCK), "picks")
        b.store(top32, element)
        with counted_loop(b, fn, _i64(0), _i64(BLOCK)) as k:
            v = b.and_(b.load(self.value(b.add(pos, k))), mask32)
            e = b.load(element)
            b.store(v, b.gep(picks, [_i64(0), b.zext(b.sub(top32, e), I64)]))
            b.store(b.sub(e, b.zext(b.icmp_unsigned("<=", v, e), I32)), element)
        b.store(b.add(pos, _i64(BLOCK)), self.pos)
        self.reload()
        end = b.zext(b.load(element), I64)
        with counted_loop(b, fn, _i64(0), b.sub(top, end)) as t:
            _swap(b, out, b.sub(top, t), b.zext(b.load(b.gep(picks, [_i64(0), t])), I64))
        return end

    def interval32(self, top):
        """random_interval(top) for 1 <= top <= 0xffffffff: next_uint32() & mask until
        <= top. Whether the first value or the second is taken is decided without a
        branch (a rejection is a coin toss no predictor can learn); only when both are
        rejected (1 in 12 on average) does a loop draw on."""
        b, fn = self.gen.b, self.gen.fn
        mask, top32 = b.trunc(_mask(b, top), I32), b.trunc(top, I32)
        self.refill_if_used()
        pos = b.load(self.pos)
        am, bm = b.and_(b.load(self.a), mask), b.and_(b.load(self.b), mask)
        reject_a = b.icmp_unsigned(">", am, top32)
        # both rejected, as one comparison: from `reject_a & reject_b` LLVM makes two
        # branches, the first of them on reject_a alone
        umin = declared(b.module, "llvm.umin.i32", I32, [I32, I32])
        both = b.icmp_unsigned(">", b.call(umin, [am, bm]), top32)
        fast, slow = fn.append_basic_block("interval32"), fn.append_basic_block("reject2")
        draw, done = fn.append_basic_block("draw32"), fn.append_basic_block("interval32_done")
        b.cbranch(both, slow, fast)

        b.position_at_end(fast)
        after2, after3 = (b.load(self.value(b.add(pos, _i64(k)))) for k in (2, 3))
        b.store(b.select(reject_a, after2, b.load(self.b)), self.a)
        b.store(b.select(reject_a, after3, after2), self.b)
        b.store(b.add(pos, b.select(reject_a, _i64(2), _i64(1))), self.pos)
        j_fast = b.select(reject_a, bm, am)
        b.branch(done)

        b.position_at_end(slow)
        b.store(b.add(pos, _i64(2)), self.pos)
        b.branch(draw)
        b.position_at_end(draw)
        v = b.and_(self.next(), mask)
        retry = b.icmp_unsigned(">", v, top32)
        with b.if_then(b.not_(retry)):
            self.reload()
        b.cbranch(retry, draw, done)
        end_slow = b.block

        b.position_at_end(done)
        j = b.phi(I32, name="j")
        j.add_incoming(j_fast, fast)
        j.add_incoming(v, end_slow)
        return b.zext(j, I64)

    def finish(self) -> None:
        """The generator's state after the values used: with c = pos - 1 values of the
        chunk used (-1: not even the buffered half), d = ceil(c / 2) of its outputs."""
        gen, b = self.gen, self.gen.b
        c = b.sub(b.load(self.pos), _i64(1))
        with b.if_then(b.icmp_signed(">=", c, _i64(0))):
            b.store(b.trunc(c, I1), gen.has)
            d = b.lshr(b.add(c, _i64(1)), _i64(1))
            with b.if_then(b.icmp_signed(">", d, _i64(0))):
                b.store(b.load(self.state(b.sub(d, _i64(1)))), gen.state)
                b.store(b.load(self.value(b.mul(d, _i64(2)))), gen.uinteger)
