"""The size sweep (tests/sweep.py): each model family at each size, every call path of
the compiled code against the reference interpreter, and the reference's gradient
against central differences. `pytest --sweep full` (make verify) runs the full sweep."""
import numpy as np
import pytest

import sweep


def pytest_generate_tests(metafunc):
    if "seed" in metafunc.fixturenames:
        level = metafunc.config.getoption("sweep")
        metafunc.parametrize("seed", range(12 if level == "fast" else 300))
    for name, configs in (("lowered_config", sweep.lowered_configs),
                          ("block_config", sweep.block_configs),
                          ("row_block_config", lambda level: sweep.row_block_configs())):
        if name not in metafunc.fixturenames:
            continue
        cases = configs(metafunc.config.getoption("sweep"))
        metafunc.parametrize(name, cases, ids=[
            f"{fam.name}-" + "-".join(f"{k}{v}" for k, v in sizes.items()) + f"-{d[5:]}.{b}"
            for fam, sizes, d, b in cases])
    if "family_sizes_dtype" in metafunc.fixturenames:
        level = metafunc.config.getoption("sweep")
        if level == "fast":
            metafunc.parametrize("family_sizes_dtype", [pytest.param(None, marks=pytest.mark.skip(
                reason="the fast level checks jvp and hvp in the call-path tests of "
                       "sweep.second_order_configs"))], ids=["fast"])
            return
        cases = sweep.second_order_configs(level)
        metafunc.parametrize("family_sizes_dtype", cases, ids=[
            f"{fam.name}-" + "-".join(f"{k}{v}" for k, v in sizes.items()) + f"-{d[5:]}"
            for fam, sizes, d in cases])
    if "config" in metafunc.fixturenames:
        level = metafunc.config.getoption("sweep")
        configs = list(sweep.fast_configs() if level == "fast" else sweep.full_configs())
        metafunc.parametrize("config", configs, ids=[
            f"{fam.name}-" + "-".join(f"{k}{v}" for k, v in sizes.items()) + "-" +
            "+".join(f"{d[5:]}.{b}" for d, b in variants)
            for fam, sizes, variants in configs])


@pytest.fixture
def level(request):
    return request.config.getoption("sweep")


def test_every_call_path_matches_the_reference(config, level):
    fam, sizes, variants = config
    ref = sweep.reference(fam, sizes, sweep.samples_for(variants, level))
    sweep.check_derivatives(ref)
    for dtype, bits in variants:
        with sweep.instruction_selection(bits, level):
            m = sweep.compiled(ref, dtype, bits)
            sweep.check_calls(ref, m, dtype, bits, level, loss_unit=sweep.checks_loss_unit(
                fam, sizes, dtype, bits, level))
            lanes = sweep.lanes_of(dtype, bits)
            for bs in ((2 * lanes + 1,) if level == "fast" else
                       (1, lanes + 1, 4 * lanes - 1)):
                sweep.check_fused_steps(ref, m, dtype, bs)
            if sweep.checks_second_order(fam, sizes, dtype, bits, level):
                sweep.check_jvp_and_hvp(ref, m, dtype, level)


def test_jvp_and_hvp_match_the_reference(family_sizes_dtype, level):
    """The full level's sweep.second_order_configs, each compiled at the CPU's own
    width (the fast level checks its own in the call-path tests)."""
    fam, sizes, dtype = family_sizes_dtype
    ref = sweep.reference(fam, sizes, sweep.samples_for([(dtype, sweep.NATIVE_BITS)], level))
    m = sweep.compiled(ref, dtype, sweep.NATIVE_BITS)
    sweep.check_jvp_and_hvp(ref, m, dtype, level)


def test_the_lowered_code_matches_the_plain_code(lowered_config, level):
    """Each fusion of the lower pass against the plain code (no fused kernel), at the
    sizes the sweep takes (sweep.lowered_configs), every batch size."""
    fam, sizes, dtype, bits = lowered_config
    ref = sweep.reference(fam, sizes, sweep.samples_for([(dtype, bits)], level))
    with sweep.instruction_selection(bits, level):
        sweep.check_lowered_against_plain(ref, dtype, bits, level)


def test_the_block_product_matches_the_plain_code_and_the_reference(block_config, level):
    """W @ x and x @ A as block products (codegen/gemm.py) against the plain code and
    the reference interpreter, and every call path (one and two threads) against the
    reference, at batch sizes around the blocks, micro-tiles and their remainders
    (sweep.block_configs, sweep.block_batch_sizes)."""
    fam, sizes, dtype, bits = block_config
    batches = sweep.block_batch_sizes(dtype, bits, level)
    ref = sweep.reference(fam, sizes, sweep.samples_for((), level, batches))
    with sweep.instruction_selection(bits, level):
        assert "block_matmul" in sweep.check_lowered_against_plain(ref, dtype, bits, level,
                                                                   batches)
        m = sweep.compiled(ref, dtype, bits)
        sweep.check_calls(ref, m, dtype, bits, level, threads=(1, 2), batches=batches)


def test_the_row_kernel_in_short_blocks_matches_the_plain_code_and_the_reference(
        row_block_config, level):
    """Outer-product gradients of wide input rows, whose blocks hold fewer lane groups
    than OUTER_BLOCK (codegen/outer.py row_block; the model function adds a block at
    that count, one more where an iteration of two groups passes an odd one), against
    the plain code and the reference, and every call path (one and two threads)
    against the reference, at batch sizes around one block and past two."""
    fam, sizes, dtype, bits = row_block_config
    block = sweep.row_block_of(fam, sizes, dtype, bits)
    assert sweep.flush_counts(fam.text(sizes), dtype, bits) == {block}
    batches = sweep.row_block_batch_sizes(block, sweep.lanes_of(dtype, bits))
    ref = sweep.reference(fam, sizes, sweep.samples_for((), level, batches))
    with sweep.instruction_selection(bits, level):
        assert "outer_grad.rows" in sweep.check_lowered_against_plain(ref, dtype, bits,
                                                                      level, batches)
        m = sweep.compiled(ref, dtype, bits)
        sweep.check_calls(ref, m, dtype, bits, level, threads=(1, 2), batches=batches)


def test_the_fast_sweep_compares_every_fusion_with_the_plain_code():
    """The differential test above reaches every fusion at the fast level."""
    compared = set()
    for fam, sizes, dtype, bits in sweep.lowered_configs("fast"):
        compared |= sweep.fusions(sweep.lowered_graph(fam.text(sizes), dtype, bits)[1])
    assert compared == set(sweep.FUSIONS)


def test_the_fast_sweep_reaches_every_residue_of_every_lane_count():
    """Each lane count's cover shows every feature that any size up to 70 shows, and
    the row kernel's tile sizes reach every tile height's remainders."""
    for lanes in sweep.lane_counts():
        cover = sweep.residue_cover(lanes)
        seen = set().union(*(sweep.lane_features(n, lanes) for n in cover))
        every = set().union(*(sweep.lane_features(n, lanes) for n in range(1, 71)))
        assert seen == every
        assert any(n % lanes == lanes - 1 for n in cover) or lanes == 1
    # the fast sweep's families between them take each variant's whole cover, and
    # jvp and hvp each dtype's at the CPU's width
    for dtype, bits in sweep.FAST_VARIANTS:
        taken = {sizes[fam.dims[-1]] for fam, sizes, variants in sweep.fast_configs()
                 if variants == [(dtype, bits)] and fam.name != sweep.ROW_TILE_FAMILY}
        assert set(sweep.residue_cover(sweep.lanes_of(dtype, bits))) <= taken
    for dtype in sweep.DTYPES:
        taken = {sizes[fam.dims[-1]]
                 for fam, sizes, d in sweep.second_order_configs("fast") if d == dtype}
        families = {fam.name for fam, _, d in sweep.second_order_configs("fast")
                    if d == dtype}
        assert set(sweep.residue_cover(sweep.lanes_of(dtype, sweep.NATIVE_BITS))) <= taken
        assert families == set(sweep.FAMILIES)


def test_the_row_tile_sizes_take_the_row_kernel_at_every_decision():
    """The layer family at each row tile size of the fast sweep takes the row kernel
    (an outer_grad of kind rows, of its shape, after the lower pass), and between them
    the sizes show every decision of the kernel (sweep.row_tile_features) that any row
    count up to five full tile rows shows, at every dtype and width."""
    from lossc.codegen.row_outer import row_tile
    from lossc.passes.lower import OUTER_MIN_SIZE
    fam = sweep.FAMILIES[sweep.ROW_TILE_FAMILY]
    for dtype, bits in sweep.ROW_TILE_VARIANTS:
        for rows, cols in sweep.row_tile_sizes(dtype, bits):
            lowered = sweep.lowered_graph(fam.text({"H": rows, "D": cols}), dtype, bits)[1]
            assert [n.shape for n in lowered.nodes if n.op == "outer_grad"
                    and n.attr("kind") == "rows"] == [(rows, cols)], (dtype, bits, rows)
    for dtype, bits in [(d, b) for d in sweep.DTYPES for b in sweep.WIDTHS]:
        sizes = sweep.row_tile_sizes(dtype, bits)
        for cols in {c for _, c in sizes}:
            lanes = sweep.lanes_of(dtype, bits)
            kt = row_tile(1 << 20, cols // lanes, lanes, 8 if dtype == "float64" else 4)[0]
            every = set().union(*(sweep.row_tile_features(k, cols, dtype, bits)
                                  for k in range(-(-OUTER_MIN_SIZE // cols), 5 * kt + 1)))
            seen = set().union(*(sweep.row_tile_features(k, c, dtype, bits)
                                 for k, c in sizes if c == cols))
            assert seen == every, (dtype, bits, cols, every - seen)


def test_a_gradient_element_is_judged_on_the_size_of_its_terms():
    """b's gradient c y - c y sech^2(c b y) cancels its terms of size c |y| far below
    them: its float32 rounding error is of their size, and it is judged on that; w's
    gradient, which cancels nothing, is judged on its own size. (Judged on |gradient|
    alone, float32 failed the random program of seed 129, 5e-4 of 4.6e-5.)"""
    fam = sweep.Family("cancel", ("D",), """
input x[D]
input y
param w[D]
param b
loss = tanh(-0.01 * b * y) + 0.01 * b * y + 1e-3 * dot(w, x)
""")
    ref = sweep.reference(fam, {"D": 3}, 5)
    (grad_b, size_b), (grad_w, size_w) = (ref.expected(f"grad.{p}", 5) for p in "bw")
    y = ref.data["y"].astype(np.float64)
    # (the loss is a mean over the samples)
    terms = 0.01 * np.abs(y) * (1 + 1 / np.cosh(0.01 * ref.theta["b"] * y) ** 2)
    assert size_b == pytest.approx(np.mean(terms))
    assert abs(grad_b) < 1e-3 * size_b
    np.testing.assert_allclose(size_w, np.mean(np.abs(1e-3 * ref.data["x"]), axis=0),
                               rtol=1e-12)
    # an error of the rounding of |y| passes b; the same error on w's element fails
    sweep.compare("grad.b", grad_b + 1e-5 * size_b, grad_b, size_b, "float32", "b")
    with pytest.raises(sweep.Mismatch):
        sweep.compare("grad.w", grad_w + 1e-3 * size_w, grad_w, size_w, "float32", "w")


def test_random_programs_match_the_reference(seed, level):
    """Random programs (sweep.random_program) of random dims, smooth ones against
    central differences too and in float32, each at one vector width in turn."""
    smooth = seed % 3 != 2
    fam, sizes = sweep.random_family(seed, smooth, level)
    bits = sweep.WIDTHS[seed % len(sweep.WIDTHS)]
    variants = [("float64", bits)] + ([("float32", sweep.WIDTHS[(seed + 1) % 4])]
                                      if smooth else [])
    ref = sweep.reference(fam, sizes, sweep.samples_for(variants, level))
    if smooth:
        sweep.check_derivatives(ref)
    for dtype, bits in variants:
        with sweep.instruction_selection(bits, level):
            m = sweep.compiled(ref, dtype, bits)
            sweep.check_calls(ref, m, dtype, bits, level)
            sweep.check_fused_steps(ref, m, dtype, 2 * sweep.lanes_of(dtype, bits) + 1)
