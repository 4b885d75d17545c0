"""Model.value_and_grad's repeated call in one native step: checks of the NumPy arrays
it is given, the copies in and out, and the gradient, from the Python objects.

    i32 lossc_call_objects(i64* desc, i8* args)

`args` is a tuple (PyTupleObject) of NumPy arrays: the parameters in declaration
order, the inputs in declaration order, then one freshly made array per parameter for
its gradient. `desc` describes what they must be (runtime/fastcall.py fills it from a
call that went through every Python check, and the arrays that call used):

    0 offset of ob_type in an object      1 address of the ndarray type
    2 offset of a tuple's first item      3..8 offsets in an ndarray of: data, nd (i32),
                                               dimensions, strides, descr, flags (i32)
    9 lossc_value_and_grad's address     10 its frame (the batch bound once)
    11 the frame's flat parameters        12 its flat gradient
    13 number of parameters              14 number of inputs
    15 the parameters' dtype (descr address)
    16 PyEval_SaveThread's address       17 PyEval_RestoreThread's address
    then per parameter (PARAM_SLOTS): byte offset in the flat vector, bytes, ndim,
        dims[MAX_NDIM]
    then per input (INPUT_SLOTS): data address, ndim, descr, dims[MAX_NDIM],
        strides[MAX_NDIM]

Each object must be exactly an ndarray (not a subclass); a parameter must have the
parameter's shape, the model's dtype and be C-contiguous and aligned; an input must
be laid out as the bound one was (same data address, shape, strides, dtype), so the
bound pointers read it where it is; a gradient array must have the parameter's
shape and dtype and be C-contiguous, aligned and writeable. If all hold, the
parameters are copied into the frame's flat vector, the gradient function runs, and
its result is copied into the gradient arrays. Return: 0 done; 1 the gradient's
index error (its err as usual); 3 something differs, nothing was run (the caller
takes the checked way, which explains what is wrong or binds the new arrays).

It checks the objects and copies the parameters while the caller holds the GIL (the
function is called through ctypes.PYFUNCTYPE), so no other thread can change them
meanwhile; then it releases the GIL (PyEval_SaveThread, through its address in desc)
for the gradient and the copies into the gradient arrays (new, nobody else's yet), and
takes it back before it returns.
"""
from __future__ import annotations

from llvmlite import ir

from lossc.codegen.values import I32, I64, counted_loop, declared

FUNCTION = "lossc_call_objects"
MAX_NDIM = 6
HEADER = 18
PARAM_SLOTS = 3 + MAX_NDIM
INPUT_SLOTS = 3 + 2 * MAX_NDIM
C_CONTIGUOUS, ALIGNED, WRITEABLE = 0x1, 0x100, 0x400    # NumPy's array flags
MISMATCH = 3

I8 = ir.IntType(8)
I8P = I8.as_pointer()


def emit_call_objects(module: ir.Module) -> None:
    fn = ir.Function(module, ir.FunctionType(I32, [I64.as_pointer(), I8P]), name=FUNCTION)
    desc, args = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    mismatch = fn.append_basic_block("mismatch")

    def c(v):
        return ir.Constant(I64, v)

    def slot(k):
        return b.load(b.gep(desc, [k if isinstance(k, ir.Value) else c(k)]))

    def field(obj, offset_slot, ty=I64):
        at = b.gep(obj, [slot(offset_slot)])
        return b.load(b.bitcast(at, ty.as_pointer()))

    def ptr_at(address):
        return b.inttoptr(address, I8P)

    def require(cond):
        ok = fn.append_basic_block("ok")
        b.cbranch(cond, ok, mismatch)
        b.position_at_end(ok)

    def loop(n, body):
        with counted_loop(b, fn, c(0), n) as i:
            body(i)

    n_params, n_inputs = slot(13), slot(14)
    items = b.bitcast(b.gep(args, [slot(2)]), I8P.as_pointer())
    array_type = slot(1)
    param_descr = slot(15)

    def item(k):
        return b.load(b.gep(items, [k]))

    def array(obj):
        """Exactly an ndarray: its type pointer."""
        require(b.icmp_unsigned("==", b.ptrtoint(field(obj, 0, I8P), I64), array_type))

    def shape_is(obj, ndim, dims_at):
        """ndim and dimensions equal to desc[dims_at .. dims_at + ndim)."""
        require(b.icmp_signed("==", b.sext(field(obj, 4, I32), I64), ndim))
        dims = b.bitcast(field(obj, 5, I8P), I64.as_pointer())
        loop(ndim, lambda d: require(b.icmp_signed(
            "==", b.load(b.gep(dims, [d])), slot(b.add(dims_at, d)))))

    def flags_have(obj, bits):
        have = b.and_(b.sext(field(obj, 8, I32), I64), c(bits))
        require(b.icmp_signed("==", have, c(bits)))

    def param_base(p):
        return b.add(c(HEADER), b.mul(p, c(PARAM_SLOTS)))

    def input_base(i):
        return b.add(b.add(c(HEADER), b.mul(n_params, c(PARAM_SLOTS))),
                     b.mul(i, c(INPUT_SLOTS)))

    # every check first: nothing is written unless all of them pass
    def parameter_shaped(obj, p, flags: int):
        """obj: exactly an ndarray of parameter p's shape, the model's dtype, flags."""
        array(obj)
        base = param_base(p)
        shape_is(obj, slot(b.add(base, c(2))), b.add(base, c(3)))
        require(b.icmp_unsigned("==", b.ptrtoint(field(obj, 7, I8P), I64), param_descr))
        flags_have(obj, flags)

    def check_param(p):
        parameter_shaped(item(p), p, C_CONTIGUOUS | ALIGNED)

    def check_input(i):
        obj = item(b.add(i, n_params))
        array(obj)
        base = input_base(i)
        ndim = slot(b.add(base, c(1)))
        require(b.icmp_unsigned("==", b.ptrtoint(field(obj, 3, I8P), I64), slot(base)))
        require(b.icmp_unsigned("==", b.ptrtoint(field(obj, 7, I8P), I64),
                                slot(b.add(base, c(2)))))
        shape_is(obj, ndim, b.add(base, c(3)))
        strides = b.bitcast(field(obj, 6, I8P), I64.as_pointer())
        at = b.add(base, c(3 + MAX_NDIM))
        loop(ndim, lambda d: require(b.icmp_signed(
            "==", b.load(b.gep(strides, [d])), slot(b.add(at, d)))))

    def grad_item(p):
        return item(b.add(b.add(p, n_params), n_inputs))

    def check_grad(p):
        parameter_shaped(grad_item(p), p, C_CONTIGUOUS | ALIGNED | WRITEABLE)

    loop(n_params, check_param)
    loop(n_inputs, check_input)
    loop(n_params, check_grad)

    memcpy = declared(module, "llvm.memcpy.p0.p0.i64", ir.VoidType(),
                      [I8P, I8P, I64, ir.IntType(1)])
    theta, grad = ptr_at(slot(11)), ptr_at(slot(12))

    def copy_in(p):
        base = param_base(p)
        src = field(item(p), 3, I8P)
        b.call(memcpy, [b.gep(theta, [slot(base)]), src, slot(b.add(base, c(1))),
                        ir.Constant(ir.IntType(1), 0)])

    loop(n_params, copy_in)
    save = b.inttoptr(slot(16), ir.FunctionType(I8P, []).as_pointer())
    restore = b.inttoptr(slot(17), ir.FunctionType(ir.VoidType(), [I8P]).as_pointer())
    thread_state = b.call(save, [])                 # the GIL released
    vg_type = ir.FunctionType(I32, [I64.as_pointer()])
    vg = b.inttoptr(slot(9), vg_type.as_pointer())
    rc = b.call(vg, [b.inttoptr(slot(10), I64.as_pointer())])
    failed, ran = fn.append_basic_block("failed"), fn.append_basic_block("ran")
    b.cbranch(b.icmp_signed("!=", rc, ir.Constant(I32, 0)), failed, ran)
    b.position_at_end(failed)
    b.call(restore, [thread_state])
    b.ret(rc)
    b.position_at_end(ran)

    def copy_out(p):
        base = param_base(p)
        dst = field(grad_item(p), 3, I8P)
        b.call(memcpy, [dst, b.gep(grad, [slot(base)]), slot(b.add(base, c(1))),
                        ir.Constant(ir.IntType(1), 0)])

    loop(n_params, copy_out)
    b.call(restore, [thread_state])                 # and taken back
    b.ret(ir.Constant(I32, 0))
    b.position_at_end(mismatch)
    b.ret(ir.Constant(I32, MISMATCH))
