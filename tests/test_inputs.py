"""Bad arguments, empty tensors and non-finite grid values."""
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from helpers import (MODES, PADDINGS, RESULT_NAMES, SAME_ARITHMETIC, deterministic_algorithms, first_and_second_order,
                     random_grid)
from grid_encoder import grid_sample

f64 = torch.float64


BAD_CASES = {  # name: (make arguments from (x, g, other_device), error, message)
    "input-not-tensor": (lambda x, g, o: ((x.tolist(), g), {}), TypeError,
                         r"expected input to be a torch.Tensor, got list"),
    "grid-not-tensor": (lambda x, g, o: ((x, None), {}), TypeError,
                        r"expected grid to be a torch.Tensor, got NoneType"),
    "mode": (lambda x, g, o: ((x, g), dict(mode="linear")), ValueError,
             r"mode must be 'bilinear', 'nearest' or 'bicubic', got 'linear'"),
    "padding": (lambda x, g, o: ((x, g), dict(padding_mode="mirror")), ValueError,
                r"padding_mode must be .*got 'mirror'"),
    "align-corners": (lambda x, g, o: ((x, g), dict(align_corners="yes")), TypeError,
                      r"align_corners must be a bool or None, got 'yes'"),
    "input-3d": (lambda x, g, o: ((x[0], g), {}), ValueError,
                 r"expected input of shape \(N, C, H, W\) or \(N, C, D, H, W\), got shape \(3, 5, 6\)"),
    "grid-of-2d-for-volume": (lambda x, g, o: ((x[None], g), {}), ValueError,
                              r"expected grid of shape \(N, Do, Ho, Wo, 3\) for input of shape "
                              r"\(1, 2, 3, 5, 6\), got shape \(2, 4, 4, 2\)"),
    "grid-last-dim": (lambda x, g, o: ((x, g[..., :1]), {}), ValueError,
                      r"expected grid of shape \(N, Ho, Wo, 2\) for input of shape \(2, 3, 5, 6\), got shape "
                      r"\(2, 4, 4, 1\)"),
    "grid-3d": (lambda x, g, o: ((x, g[0]), {}), ValueError,
                r"expected grid of shape \(N, Ho, Wo, 2\) .*got shape \(4, 4, 2\)"),
    "batch": (lambda x, g, o: ((x, g[:1]), {}), ValueError,
              r"same batch size N, got grid of shape \(1, 4, 4, 2\) and input of shape \(2, 3, 5, 6\)"),
    "empty-spatial": (lambda x, g, o: ((x[:, :, :0], g), {}), ValueError,
                      r"non-empty spatial dimensions, got shape \(2, 3, 0, 6\)"),
    "integer": (lambda x, g, o: ((x.long(), g.long()), {}), TypeError,
                r"expected floating-point input and grid, got input of dtype torch.int64 and grid of dtype "
                r"torch.int64"),
    "dtypes": (lambda x, g, o: ((x, g.float()), {}), TypeError,
               r"same dtype, got input of dtype torch.float64 and grid of dtype torch.float32"),
    "devices": (lambda x, g, o: ((x, g.to(o)), {}), ValueError, r"same device, got input on .* and grid on "),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_arguments_raise_clear_errors_and_leave_nothing_broken(device, case):
    make, error, message = BAD_CASES[case]
    x = torch.randn(2, 3, 5, 6, dtype=f64, device=device)
    args, kwargs = make(x, random_grid(2, 4, 4, device=device), "cpu" if device != "cpu" else "meta")
    with pytest.raises(error, match=message):
        grid_sample(*args, **kwargs)
    x = torch.randn(1, 2, 4, 4, dtype=f64, device=device)
    g = random_grid(1, 3, 3, device=device)
    assert_close(grid_sample(x, g), F.grid_sample(x, g, align_corners=True), **SAME_ARITHMETIC)


@pytest.mark.parametrize("case", ["input-3d", "grid-last-dim", "batch", "dtypes"])
def test_bad_meta_tensors_raise_the_same_errors(case):
    """Meta (and fake) tensors skip the operator's C++ checks: its Python fake kernel checks them instead."""
    make, error, message = BAD_CASES[case]
    x = torch.empty(2, 3, 5, 6, dtype=f64, device="meta")
    args, kwargs = make(x, torch.empty(2, 4, 4, 2, dtype=f64, device="meta"), "meta")
    with pytest.raises(error, match=message):
        grid_sample(*args, **kwargs)


def test_errors_the_checks_do_not_explain_pass_through(monkeypatch):
    """grid_sample checks its arguments only when the operator raises; where they find nothing wrong, the
    operator's own error reaches the caller unchanged."""
    import grid_encoder.grid_sample  # noqa: F401  (the module, which the package's function shadows)
    module = sys.modules["grid_encoder.grid_sample"]

    def refuse(*args):
        raise RuntimeError("out of memory, say")
    monkeypatch.setattr(module, "_forward", refuse)
    x = torch.randn(1, 2, 4, 4, dtype=f64)
    with pytest.raises(RuntimeError, match="out of memory, say"):
        grid_sample(x, random_grid(1, 3, 3))
    with pytest.raises(ValueError, match="mode must be"):  # a bad setting is still reported as such
        grid_sample(x, random_grid(1, 3, 3), mode="linear")


def test_align_corners_none_warns_and_means_false(device):
    """As torch: None is accepted, with a warning, and behaves as False."""
    x = torch.randn(1, 2, 4, 5, dtype=f64, device=device)
    g = random_grid(1, 3, 3, device=device)
    with pytest.warns(UserWarning, match=r"align_corners=None means False"):
        ours = grid_sample(x, g, align_corners=None)
    assert_close(ours, grid_sample(x, g, align_corners=False), rtol=0, atol=0)
    assert not torch.equal(ours, grid_sample(x, g, align_corners=True))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_reduced_precision_on_the_cpu_is_computed_in_float32(dtype):
    """float16 and bfloat16 CPU tensors: computed in float32, returned in their dtype, to every order."""
    input = torch.randn(2, 3, 5, 6).to(dtype)
    grid = random_grid(2, 4, 4, dtype=torch.float32, reach=1.1).to(dtype)
    ours = first_and_second_order(grid_sample, input, grid, "bicubic", "border", False)
    wide = first_and_second_order(grid_sample, input.double(), grid.double(), "bicubic", "border", False)
    for name, a, b in zip(RESULT_NAMES, ours, wide):
        assert a.dtype == dtype, name
        assert_close(a.double(), b, rtol=2e-2, atol=2e-2 * b.abs().max().item(), msg=lambda m: f"{name}: {m}")
    expected_output = F.grid_sample(input.float(), grid.float(), "bicubic", "border", False).to(dtype)
    assert torch.equal(ours[0], expected_output)  # float32 arithmetic, one rounding at the end


@pytest.mark.parametrize("dims", [2, 3])
def test_meta_tensors_give_torchs_shapes_dtypes_and_strides(dims):
    shape, grid_shape = ((2, 3, 5, 6), (2, 4, 7, 2)) if dims == 2 else ((2, 3, 4, 5, 6), (2, 4, 7, 1, 3))
    input = torch.empty(shape, device="meta", requires_grad=True)
    grid = torch.empty(grid_shape, device="meta", requires_grad=True)
    ours = grid_sample(input, grid, "bilinear", "border", False)
    theirs = F.grid_sample(input, grid, "bilinear", "border", align_corners=False)
    assert (ours.shape, ours.stride(), ours.dtype, ours.device) == (
        theirs.shape, theirs.stride(), theirs.dtype, theirs.device)
    ours_grads = torch.autograd.grad(ours.sum(), (input, grid), create_graph=True)
    theirs_grads = torch.autograd.grad(theirs.sum(), (input, grid))
    for a, b in zip(ours_grads, theirs_grads):
        assert (a.shape, a.stride(), a.dtype, a.device) == (b.shape, b.stride(), b.dtype, b.device)
    second = torch.autograd.grad(ours_grads[1].square().sum(), (input, grid))
    for a, like in zip(second, (input, grid)):
        assert (a.shape, a.stride(), a.device) == (like.shape, like.stride(), like.device)


def test_fake_tensor_mode_runs_every_order():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        input = torch.empty(2, 3, 5, 6, requires_grad=True)
        grid = torch.empty(2, 4, 7, 2, requires_grad=True)
        out = grid_sample(input, grid, "bicubic")
        grad_input, grad_grid = torch.autograd.grad(out.sum(), (input, grid), create_graph=True)
        d_input, d_grid = torch.autograd.grad(grad_grid.square().sum(), (input, grid))
    assert tuple(out.shape) == (2, 3, 4, 7)
    for a, like in [(grad_input, input), (grad_grid, grid), (d_input, input), (d_grid, grid)]:
        assert (a.shape, a.stride(), a.dtype) == (like.shape, like.stride(), like.dtype)


def test_operators_check_their_arguments():
    """The C++ entry points validate too (they can be called directly, and asserts vanish under -O)."""
    x = torch.randn(2, 3, 5, 6, dtype=f64)
    g = random_grid(2, 4, 4)
    ops = torch.ops.grid_encoder
    with pytest.raises(RuntimeError, match=r"expected grid of shape \(N, Ho, Wo, 2\) for input of shape"):
        ops.grid_sample_forward(x, g[..., :1], 0, 0, True)
    with pytest.raises(RuntimeError, match=r"mode must be 0 \(bilinear\), 1 \(nearest\) or 2 "
                                           r"\(bicubic\), got 7"):
        ops.grid_sample_forward(x, g, 7, 0, True)
    with pytest.raises(RuntimeError, match=r"padding must be .*got -1"):
        ops.grid_sample_forward(x, g, 0, -1, True)
    with pytest.raises(RuntimeError, match=r"expected grad_output of shape \[2, 3, 4, 4\], got \[2, 3, 4\]"):
        ops.grid_sample_backward(torch.zeros(2, 3, 4, dtype=f64), x, g, 0, 0, True, [True, True])
    with pytest.raises(RuntimeError, match=r"expected grad_grad_grid of dtype Double"):
        ops.grid_sample_double_backward(None, g.float(), torch.zeros(2, 3, 4, 4, dtype=f64), x, g, 0, 0, True,
                                        [True, True, True])


EMPTY_SHAPES = [((0, 3, 5, 6), (0, 4, 4)), ((2, 0, 5, 6), (2, 4, 4)), ((2, 3, 5, 6), (2, 0, 4)),
                ((2, 3, 5, 6), (2, 4, 0)), ((0, 3, 4, 5, 6), (0, 2, 3, 4)), ((2, 3, 4, 5, 6), (2, 2, 0, 4))]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("input_shape,grid_shape", EMPTY_SHAPES, ids=[f"input{i}-grid{g}" for i, g in EMPTY_SHAPES])
def test_empty_tensors(device, mode, input_shape, grid_shape):
    dims = len(input_shape) - 2
    input = torch.randn(*input_shape, dtype=f64, device=device)
    grid = random_grid(*grid_shape, dims=dims, device=device)
    result = first_and_second_order(grid_sample, input, grid, mode, "zeros", True)
    expected_shapes = [(*input_shape[:2], *grid_shape[1:]), input_shape, (*grid_shape, dims),
                       (*input_shape[:2], *grid_shape[1:]), input_shape, (*grid_shape, dims)]
    for tensor, shape in zip(result, expected_shapes):
        assert tuple(tensor.shape) == shape
        assert torch.all(tensor == 0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding", PADDINGS)
def test_non_finite_grid_values_stay_local(device, mode, padding):
    """NaN, +-inf and huge values read nothing out of bounds and leave every other sample as it was."""
    input = torch.randn(2, 3, 5, 6, dtype=f64, device=device)
    clean = random_grid(2, 4, 6, device=device)
    bad = clean.clone()
    bad_values = [math.nan, math.inf, -math.inf, 1e30, -1e30, 3e9]
    bad_mask = torch.zeros(2, 4, 6, dtype=torch.bool, device=device)
    for i, value in enumerate(bad_values):
        bad[i % 2, i % 4, i, i % 2] = value
        bad_mask[i % 2, i % 4, i] = True
    keep = (~bad_mask).unsqueeze(1).to(f64)
    # The same cotangent on both, zero at the bad points, so only good points reach the gradients.
    results = []
    for grid in (clean, bad):
        gen = torch.Generator().manual_seed(0)
        x = input.clone().requires_grad_()
        g = grid.clone().requires_grad_()
        out = grid_sample(x, g, mode, padding, True)
        grad_out = torch.randn(out.shape, generator=gen, dtype=f64).to(device) * keep
        grad_input, grad_grid = torch.autograd.grad(out, (x, g), grad_out, create_graph=True)
        ggg = torch.randn(grid.shape, generator=gen, dtype=f64).to(device) * (~bad_mask).unsqueeze(-1)
        loss = (grad_grid * ggg).sum() + grad_input.square().sum()
        d_input = torch.autograd.grad(loss, x, allow_unused=True)[0] if loss.requires_grad else None
        results.append((out * keep, grad_input, grad_grid * (~bad_mask).unsqueeze(-1), d_input))
    for a, b in zip(*results):
        if a is not None:
            assert_close(a, b, **SAME_ARITHMETIC)
    out_bad, grad_input_bad = results[1][:2]
    assert torch.isfinite(out_bad).all() and torch.isfinite(grad_input_bad).all()
    nan_point = grid_sample(input, bad, mode, padding, True)[0, :, 0, 0]
    assert torch.all(nan_point == 0), f"a NaN sample reads nothing, got {nan_point}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_autocast_runs_in_float32_like_torch(device, dtype):
    """Under autocast, torch's grid_sample runs in float32; so does ours, with the same result."""
    if device == "cpu" and dtype == torch.float16 and not torch.amp.is_autocast_available("cpu"):
        pytest.skip("no CPU autocast")
    input = torch.randn(2, 3, 6, 7, device=device, requires_grad=True)
    grid = random_grid(2, 4, 5, dtype=torch.float32, device=device).requires_grad_()
    with torch.autocast(device, dtype=dtype):
        half_input = input.to(dtype)  # autocast regions typically hand over reduced-precision activations
        ours = grid_sample(half_input, grid, "bilinear", "zeros", False)
        theirs = F.grid_sample(half_input, grid, "bilinear", "zeros", align_corners=False)
    assert ours.dtype == theirs.dtype == torch.float32
    assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    ours_grads = torch.autograd.grad(ours.square().sum(), (input, grid), retain_graph=True)
    theirs_grads = torch.autograd.grad(theirs.square().sum(), (input, grid))
    for a, b in zip(ours_grads, theirs_grads):
        assert a.dtype == b.dtype
        assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_cpu_results_are_bitwise_reproducible(dims):
    """The CPU kernels accumulate without atomics (each thread owns its channels): every derivative is
    bitwise identical from run to run, with or without torch.use_deterministic_algorithms."""
    spatial, out_spatial = ((16, 16), (32, 32)) if dims == 2 else ((8, 8, 8), (8, 8, 16))
    input = torch.randn(2, 6, *spatial)
    grid = random_grid(2, *out_spatial, dims=dims, dtype=torch.float32)
    runs = [first_and_second_order(grid_sample, input, grid, "bicubic", "zeros", False) for _ in range(2)]
    with deterministic_algorithms():
        runs.append(first_and_second_order(grid_sample, input, grid, "bicubic", "zeros", False))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)
