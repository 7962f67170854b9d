"""grid_sample with exact first- and second-order gradients, backed by the grid_encoder C++/CUDA ops.

Three operators, each the derivative of the one before:

    grid_encoder::grid_sample_forward          output = sample(input, grid)
    grid_encoder::grid_sample_backward         (grad_input, grad_grid), only those requested
    grid_encoder::grid_sample_double_backward  (d grad_output, d input, d grid), only those requested

Autograd chains them with ``torch.library.register_autograd``; ``register_fake`` gives their shapes
to ``torch.compile``.

| derivative                     | bilinear | nearest | bicubic |
|--------------------------------|----------|---------|---------|
| forward                        | yes      | yes     | yes     |
| d/d input, d/d grid            | yes      | yes (d/d grid = 0) | yes |
| every second-order term        | yes      | yes (grid terms = 0) | yes |
| third and higher order         | raises NotImplementedError              |
"""
import torch

from . import _build

_build.load()
_ops = torch.ops.grid_encoder

_INTERPOLATION = {"bilinear": 0, "nearest": 1, "bicubic": 2}
_PADDING = {"zeros": 0, "border": 1, "reflection": 2}
_NEAREST = _INTERPOLATION["nearest"]


def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=True):
    """Samples ``input`` at the locations in ``grid``, like ``torch.nn.functional.grid_sample``.

    Args:
        input: ``(N, C, H, W)`` tensor, float32 or float64 (also float16 or bfloat16 on CUDA), any strides.
        grid: ``(N, Ho, Wo, 2)`` tensor of the same dtype and device; ``grid[..., 0]`` is x (width) and
            ``grid[..., 1]`` is y (height), with -1 and 1 at the edges of the input.
        mode: ``'bilinear'``, ``'nearest'`` or ``'bicubic'``.
        padding_mode: ``'zeros'``, ``'border'`` or ``'reflection'``.
        align_corners: as in torch, but True by default: -1 and 1 are the centers of the corner pixels.

    Returns:
        ``(N, C, Ho, Wo)`` tensor, equal to torch's result. It is differentiable twice with respect to
        ``input`` and ``grid``, including every second-order term (``create_graph=True`` works).
    """
    _check_arguments(input, grid, mode, padding_mode, align_corners)
    return _ops.grid_sample_forward(input, grid, _INTERPOLATION[mode], _PADDING[padding_mode], align_corners)


def _shape(t):
    return tuple(t.shape)


def _check_arguments(input, grid, mode, padding_mode, align_corners):
    for name, t in (("input", input), ("grid", grid)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"grid_sample(): expected {name} to be a torch.Tensor, got {type(t).__name__}")
    if mode not in _INTERPOLATION:
        raise ValueError(f"grid_sample(): mode must be 'bilinear', 'nearest' or 'bicubic', got {mode!r}")
    if padding_mode not in _PADDING:
        raise ValueError(
            f"grid_sample(): padding_mode must be 'zeros', 'border' or 'reflection', got {padding_mode!r}")
    if not isinstance(align_corners, bool):
        raise TypeError(f"grid_sample(): align_corners must be a bool, got {align_corners!r}")
    if input.dim() == 5:
        raise ValueError(f"grid_sample(): 5-D (volumetric) input is not supported yet, got input of shape "
                         f"{_shape(input)}; expected (N, C, H, W)")
    if input.dim() != 4:
        raise ValueError(f"grid_sample(): expected input of shape (N, C, H, W), got shape {_shape(input)}")
    if grid.dim() != 4 or grid.shape[-1] != 2:
        raise ValueError(f"grid_sample(): expected grid of shape (N, Ho, Wo, 2), got shape {_shape(grid)}")
    if grid.shape[0] != input.shape[0]:
        raise ValueError(f"grid_sample(): expected grid and input to have the same batch size N, got grid of "
                         f"shape {_shape(grid)} and input of shape {_shape(input)}")
    if any(s == 0 for s in input.shape[2:]):
        raise ValueError(f"grid_sample(): expected input with non-empty spatial dimensions, got shape "
                         f"{_shape(input)}")
    if not input.is_floating_point() or not grid.is_floating_point():
        raise TypeError(f"grid_sample(): expected floating-point input and grid, got input of dtype "
                        f"{input.dtype} and grid of dtype {grid.dtype}")
    if input.dtype != grid.dtype:
        raise TypeError(f"grid_sample(): expected input and grid of the same dtype, got input of dtype "
                        f"{input.dtype} and grid of dtype {grid.dtype}")
    if input.device != grid.device:
        raise ValueError(f"grid_sample(): expected input and grid on the same device, got input on "
                         f"{input.device} and grid on {grid.device}")
    if input.device.type not in ("cpu", "cuda"):
        raise ValueError(f"grid_sample(): expected CPU or CUDA tensors, got tensors on {input.device}")
    if input.dtype in (torch.float16, torch.bfloat16) and input.device.type != "cuda":
        raise TypeError(f"grid_sample(): {input.dtype} is supported on CUDA only, got it on {input.device}; "
                        f"use float32 or float64 on the CPU")
    if input.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise TypeError(f"grid_sample(): expected float32, float64, float16 or bfloat16, got {input.dtype}")


# ----------------------------------------------------------------------------------------------
# Shapes for torch.compile. Outputs that were not requested are empty placeholders of shape (0,).

@torch.library.register_fake("grid_encoder::grid_sample_forward")
def _forward_fake(input, grid, interpolation, padding, align_corners):
    return input.new_empty((input.shape[0], input.shape[1], *grid.shape[1:-1]))


@torch.library.register_fake("grid_encoder::grid_sample_backward")
def _backward_fake(grad_output, input, grid, interpolation, padding, align_corners, output_mask):
    grad_input = torch.empty_like(input) if output_mask[0] else input.new_empty((0,))
    grad_grid = grid.new_empty(grid.shape) if output_mask[1] else grid.new_empty((0,))
    return grad_input, grad_grid


@torch.library.register_fake("grid_encoder::grid_sample_double_backward")
def _double_backward_fake(grad_grad_input, grad_grad_grid, grad_output, input, grid, interpolation, padding,
                          align_corners, output_mask):
    d_grad_output = grad_output.new_empty(grad_output.shape) if output_mask[0] else input.new_empty((0,))
    d_input = torch.empty_like(input) if output_mask[1] else input.new_empty((0,))
    d_grid = grid.new_empty(grid.shape) if output_mask[2] else grid.new_empty((0,))
    return d_grad_output, d_input, d_grid


# ----------------------------------------------------------------------------------------------
# Autograd: forward -> backward -> double backward. Gradients nobody asked for are neither
# requested from the kernels nor computed (set_materialize_grads(False) keeps missing ones None).

def _forward_setup(ctx, inputs, output):
    input, grid, interpolation, padding, align_corners = inputs
    ctx.save_for_backward(input, grid)
    ctx.settings = (interpolation, padding, align_corners)
    ctx.set_materialize_grads(False)


def _forward_backward(ctx, grad_output):
    input, grid = ctx.saved_tensors
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1]]
    if grad_output is None or not any(mask):
        return None, None, None, None, None
    grad_input, grad_grid = _ops.grid_sample_backward(grad_output, input, grid, *ctx.settings, mask)
    return grad_input if mask[0] else None, grad_grid if mask[1] else None, None, None, None


def _backward_setup(ctx, inputs, output):
    grad_output, input, grid, interpolation, padding, align_corners, output_mask = inputs
    ctx.save_for_backward(grad_output, input, grid)
    ctx.settings = (interpolation, padding, align_corners)
    ctx.computed = tuple(output_mask)
    ctx.set_materialize_grads(False)


def _backward_backward(ctx, grad_grad_input, grad_grad_grid):
    grad_output, input, grid = ctx.saved_tensors
    # An output that was not computed is a placeholder: any gradient flowing into it carries nothing.
    grad_grad_input = grad_grad_input if ctx.computed[0] else None
    grad_grad_grid = grad_grad_grid if ctx.computed[1] else None
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
    if (grad_grad_input is None and grad_grad_grid is None) or not any(mask):
        return None, None, None, None, None, None, None
    d_grad_output, d_input, d_grid = _ops.grid_sample_double_backward(
        grad_grad_input, grad_grad_grid, grad_output, input, grid, *ctx.settings, mask)
    return (d_grad_output if mask[0] else None, d_input if mask[1] else None, d_grid if mask[2] else None,
            None, None, None, None)


def _double_backward_setup(ctx, inputs, output):
    pass


def _double_backward_backward(ctx, *grads):
    raise NotImplementedError(
        "grid_encoder.grid_sample: derivatives up to second order are supported; a third-order derivative "
        "was requested")


torch.library.register_autograd("grid_encoder::grid_sample_forward", _forward_backward,
                                setup_context=_forward_setup)
torch.library.register_autograd("grid_encoder::grid_sample_backward", _backward_backward,
                                setup_context=_backward_setup)
torch.library.register_autograd("grid_encoder::grid_sample_double_backward", _double_backward_backward,
                                setup_context=_double_backward_setup)
