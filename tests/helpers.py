"""Input makers, derivative helpers and tolerances shared by the tests."""
import contextlib
import itertools

import torch

MODES = ["bilinear", "nearest", "bicubic"]
PADDINGS = ["zeros", "border", "reflection"]
SETTINGS = list(itertools.product(MODES, PADDINGS, [True, False]))
SETTING_IDS = [f"{m}-{p}-{'align' if a else 'noalign'}" for m, p, a in SETTINGS]

# The results of first_and_second_order, in its order.
RESULT_NAMES = ("output", "grad_input", "grad_grid", "d_grad_output", "d_input", "d_grid")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Tolerances (float64) for results that should equal another computation's. Each is far below a missing term.
# The same formulas summed in the same order (torch's grid_sample; our kernels on other strides): a few ulps.
SAME_ARITHMETIC = dict(rtol=1e-12, atol=1e-12)
# The same terms summed in another order (the pure-PyTorch reference; our kernels on another device).
REORDERED_SUMS = dict(rtol=1e-10, atol=1e-10)
# A torch.func transform of the reference: Jacobians and Hessians sum many more such terms.
TRANSFORMED = dict(rtol=1e-9, atol=1e-9)

# gradcheck's check that a backward pass repeats exactly: on CUDA the input gradient sums its terms in the
# order threads file them, so float64 sums may differ in their last bits between runs (outside
# torch.use_deterministic_algorithms). Far below any missing or wrong term.
GRADCHECK_NONDET_TOL = 1e-12


def random_grid(n, *out_spatial, dims=2, dtype=torch.float64, device="cpu", reach=1.6):
    """Grid of shape (n, *out_spatial, dims), values uniform in [-reach, reach]: inside and well outside."""
    return (torch.rand(n, *out_spatial, dims, dtype=dtype, device=device) * 2 - 1) * reach


def off_edge_grid(out_shape, input_spatial, align_corners, dtype=torch.float64, device="cpu"):
    """Grid of shape (*out_shape, dims) whose pixel coordinates keep at least 0.15 px from every integer
    and half-integer, where the op has kinks (cell edges, clip limits, reflection folds, nearest's
    rounding), and reach up to 2 px outside the input. input_spatial: (H, W) or (D, H, W)."""
    coords = []
    for size in reversed(input_spatial):  # grid axis 0 follows the last input dimension
        whole = torch.randint(-2, size + 2, out_shape, device=device).to(dtype)
        frac = torch.rand(out_shape, dtype=dtype, device=device) * 0.2 + 0.15
        frac = torch.where(torch.rand(out_shape, device=device) < 0.5, frac, 1 - frac)
        pixel = whole + frac
        coords.append(2 * pixel / (size - 1) - 1 if align_corners else (2 * pixel + 1) / size - 1)
    return torch.stack(coords, -1)


@contextlib.contextmanager
def deterministic_algorithms():
    """torch.use_deterministic_algorithms(True) inside the block; the previous setting afterwards."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def grads_or_zeros(outputs, inputs, grad_outputs, **kwargs):
    """torch.autograd.grad that returns zeros for inputs the outputs do not depend on."""
    grads = torch.autograd.grad(outputs, inputs, grad_outputs, allow_unused=True, **kwargs)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]


def first_order(fn, input, grid, grad_output, *settings):
    """(output, grad_input, grad_grid) of fn(input, grid, *settings) under the cotangent grad_output."""
    input = input.detach().requires_grad_()
    grid = grid.detach().requires_grad_()
    out = fn(input, grid, *settings)
    return (out,) + torch.autograd.grad(out, (input, grid), grad_output)


def first_and_second_order(fn, input, grid, mode, padding, align, ggi=True, ggg=True, seed=0):
    """Output, first-order gradients and second-order gradients of fn under random cotangents.

    Returns (output, grad_input, grad_grid, d_grad_output, d_input, d_grid); the random cotangents
    come from `seed`, so two functions called with the same seed see the same ones.
    """
    input = input.detach().requires_grad_()
    grid = grid.detach().requires_grad_()
    out = fn(input, grid, mode, padding, align)
    gen = torch.Generator().manual_seed(seed)

    def cotangent(like):  # drawn on the CPU in float64, so every device and dtype sees the same numbers
        return torch.randn(like.shape, generator=gen, dtype=torch.float64).to(like.device, like.dtype)

    grad_out = cotangent(out).requires_grad_()
    grad_input, grad_grid = grads_or_zeros(out, (input, grid), grad_out, create_graph=True)
    loss = 0
    if ggi:
        loss = loss + (grad_input * cotangent(grad_input)).sum()
    if ggg:
        loss = loss + (grad_grid * cotangent(grad_grid)).sum()
    if not torch.is_tensor(loss) or not loss.requires_grad:  # no second-order dependence at all
        second = [torch.zeros_like(grad_out), torch.zeros_like(input), torch.zeros_like(grid)]
    else:
        second = grads_or_zeros(loss, (grad_out, input, grid), None)
    return [out, grad_input, grad_grid] + second
