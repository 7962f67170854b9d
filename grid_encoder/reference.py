"""Pure-PyTorch grid_sample: gathers and arithmetic only, so autograd differentiates it to any order.

It is the oracle of the tests (run it in float64), and its double backward serves the third and higher
orders of grid_encoder.grid_sample. It follows the same semantics as the kernels (see
csrc/taps.h and point_work.h): 2-D and 3-D grids, modes 'bilinear', 'nearest' and 'bicubic', paddings 'zeros',
'border' and 'reflection', both align_corners. It materializes every tap of every point, so it is slow
and memory-hungry.
"""
import torch
import torch.func

_CUBIC_A = -0.75
_INT32_MIN, _INT32_MAX = -2.0 ** 31, 2.0 ** 31 - 1


def grid_sample_reference(input, grid, mode="bilinear", padding_mode="zeros", align_corners=True):
    """Same arguments and result as ``grid_encoder.grid_sample``; differentiable to any order."""
    dims = grid.shape[-1]
    n, c = input.shape[:2]
    spatial = input.shape[2:]
    sizes = [spatial[-1 - e] for e in range(dims)]  # extent along grid axis e (x = last input dim)
    points = grid.reshape(n, -1, dims)

    # Tensor product of the per-axis taps: tap (k_0, .., k_{d-1}) lives at axis position e in dim -1-e.
    index = torch.zeros((), dtype=torch.long, device=input.device)
    inside = torch.ones((), dtype=torch.bool, device=input.device)
    weight = torch.ones((), dtype=input.dtype, device=input.device)
    plane_stride = 1
    for e in range(dims):
        axis_index, axis_weight = _axis_taps(points[..., e], sizes[e], mode, padding_mode, align_corners)
        shape = [n, points.shape[1]] + [1] * dims
        shape[-1 - e] = axis_index.shape[-1]
        index = index + axis_index.clamp(0, sizes[e] - 1).reshape(shape) * plane_stride
        inside = inside & ((axis_index >= 0) & (axis_index < sizes[e])).reshape(shape)
        weight = weight * axis_weight.reshape(shape)
        plane_stride *= sizes[e]
    taps = index.reshape(n, 1, -1).expand(n, c, -1)
    values = torch.gather(input.reshape(n, c, -1), 2, taps).reshape(n, c, points.shape[1], -1)
    inside = inside.reshape(n, 1, points.shape[1], -1)
    weight = weight.reshape(n, 1, points.shape[1], -1)
    out = torch.where(inside, values * weight, torch.zeros((), dtype=input.dtype, device=input.device)).sum(-1)
    return out.reshape(n, c, *grid.shape[1:-1])


def double_backward_reference(grad_grad_input, grad_grad_grid, grad_output, input, grid, mode, padding_mode,
                              align_corners):
    """The double backward of grid_sample as a pure-PyTorch function of all five tensors.

    With backward(grad_output, input, grid) = (grad_input, grad_grid), returns the vector-Jacobian product
    of backward with (grad_grad_input, grad_grad_grid): (d grad_output, d input, d grid). torch.func keeps
    it differentiable with respect to every argument, so its own vjp gives the third order, and so on.
    """
    def sample(x, g):
        return grid_sample_reference(x, g, mode, padding_mode, align_corners)

    def backward(go, x, g):
        return torch.func.vjp(sample, x, g)[1](go)

    return torch.func.vjp(backward, grad_output, input, grid)[1]((grad_grad_input, grad_grad_grid))


def _axis_taps(g, size, mode, padding_mode, align_corners):
    """Tap indices (long; may lie outside [0, size)) and weights along one axis, shaped (N, P, taps)."""
    if align_corners:
        x = (g + 1) / 2 * (size - 1)
    else:
        x = ((g + 1) * size - 1) / 2
    if mode == "bicubic":  # a NaN or infinite coordinate reads nothing, whatever the padding
        finite = torch.isfinite(x)
        x = torch.where(finite, x, torch.full_like(x, -100.0))
        x0 = torch.floor(x)
        t = x - x0
        weight = torch.stack([_cubic_far(t + 1), _cubic_near(t), _cubic_near(1 - t), _cubic_far(2 - t)], -1)
        taps = x0.unsqueeze(-1) + torch.arange(-1, 3, dtype=x.dtype, device=x.device)
        index = torch.where(finite.unsqueeze(-1), _sanitize(_pad(taps, size, padding_mode, align_corners)), -100.0)
        return index.long(), weight
    x = _sanitize(_pad(x, size, padding_mode, align_corners))
    if mode == "nearest":
        return torch.round(x).long().unsqueeze(-1), torch.ones_like(x).unsqueeze(-1)
    x0 = torch.floor(x)
    t = x - x0
    index = torch.stack([x0, x0 + 1], -1).long()
    return index, torch.stack([1 - t, t], -1)


def _cubic_near(s):  # |s| <= 1
    return ((_CUBIC_A + 2) * s - (_CUBIC_A + 3)) * s * s + 1


def _cubic_far(s):  # 1 < |s| < 2
    return ((_CUBIC_A * s - 5 * _CUBIC_A) * s + 8 * _CUBIC_A) * s - 4 * _CUBIC_A


def _pad(x, size, padding_mode, align_corners):
    if padding_mode == "border":
        return x.clamp(0, size - 1)
    if padding_mode == "reflection":
        low, high = (0.0, size - 1.0) if align_corners else (-0.5, size - 0.5)
        if low == high:
            return torch.zeros_like(x)
        span = high - low
        distance = (x - low).abs()
        flips = torch.floor(distance / span)
        extra = distance - flips * span
        x = torch.where(torch.remainder(flips, 2) == 0, low + extra, low + span - extra)
        return x.clamp(0, size - 1)
    return x


def _sanitize(x):
    """NaN, inf and coordinates beyond the int32 range become -100 (outside the input)."""
    ok = torch.isfinite(x) & (x >= _INT32_MIN) & (x <= _INT32_MAX - 1)
    return torch.where(ok, x, torch.full_like(x, -100.0))
