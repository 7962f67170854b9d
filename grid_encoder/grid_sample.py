"""grid_sample with exact derivatives of every order, backed by the grid_encoder C++/CUDA operators.

Five operators (csrc/operators.h), the first three each the derivative of the one before:

    grid_encoder::grid_sample_forward          output = sample(input, grid)
    grid_encoder::grid_sample_backward         (grad_input, grad_grid), only those requested
    grid_encoder::grid_sample_double_backward  (d_grad_output, d_input, d_grid), only those requested
    grid_encoder::grid_sample_tangent          the output's tangent (forward-mode AD)
    grid_encoder::grid_sample_reduced          the output's sum or product over groups of batch items (the
                                               encoders' reductions where nothing records; not differentiable)

The C++ autograd kernels of the first two chain them (csrc/autograd.cpp); the double backward's own derivative
is here, the vector-Jacobian product of its pure-PyTorch twin (``reference.double_backward_reference``), so every
order is exact. torch.func transforms and forward-mode AD go through transforms.py instead. ``register_fake``
gives every operator's shapes to ``torch.compile``, FakeTensorMode and meta tensors.

| derivative            | bilinear (trilinear) | nearest               | bicubic (tricubic) |
|-----------------------|----------------------|-----------------------|--------------------|
| forward, its tangent  | kernel               | kernel                | kernel             |
| d/d input, d/d grid   | kernel               | kernel (d/d grid = 0) | kernel             |
| second order          | kernel, every term   | kernel (grid terms 0) | kernel, every term |
| third and higher      | pure PyTorch, exact  | pure PyTorch, exact   | pure PyTorch, exact |
"""
import warnings

import torch

from . import _build

_build.load()
_ops = torch.ops.grid_encoder
_forward = _ops.grid_sample_forward.default  # the overload itself: a call skips the packet's lookup
_reduced = _ops.grid_sample_reduced.default

from . import transforms  # noqa: E402  (needs the operators loaded)

_functorch_transforms_active = torch._C._are_functorch_transforms_active
_is_compiling = torch.compiler.is_compiling
_forward_ad = torch.autograd.forward_ad
_REDUCED = (torch.float16, torch.bfloat16)
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_any_autocast_enabled = getattr(torch._C, "_is_any_autocast_enabled", lambda: True)
_ALIGN_CORNERS_WARNING = (
    "grid_sample(): align_corners=None means False, as in torch.nn.functional.grid_sample (whose default it is); "
    "pass align_corners=True or False explicitly to silence this warning")

_MODES = {name: code for code, name in enumerate(transforms.MODE_NAMES)}
_PADDING = {name: code for code, name in enumerate(transforms.PADDING_NAMES)}
_SETTINGS = {(mode, padding, align): (_MODES[mode], _PADDING[padding], align)
             for mode in _MODES for padding in _PADDING for align in (False, True)}


def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=True):
    """Samples ``input`` at the locations in ``grid``, like ``torch.nn.functional.grid_sample``.

    Args:
        input: ``(N, C, H, W)`` image or ``(N, C, D, H, W)`` volume, float32, float64, float16 or bfloat16
            (on the CPU, float16 and bfloat16 are computed in float32 and rounded once), any strides.
        grid: ``(N, Ho, Wo, 2)`` or ``(N, Do, Ho, Wo, 3)`` tensor of the same dtype and device;
            ``grid[..., 0]`` is x (width), ``grid[..., 1]`` is y (height), ``grid[..., 2]`` is z (depth),
            with -1 and 1 at the edges of the input.
        mode: ``'bilinear'`` (trilinear on volumes), ``'nearest'`` or ``'bicubic'`` (tricubic on volumes:
            torch's bicubic kernel along each axis, 64 taps; torch itself refuses it).
        padding_mode: ``'zeros'``, ``'border'`` or ``'reflection'``.
        align_corners: as in torch, but True by default: -1 and 1 are the centers of the corner pixels.
            None warns and means False, as in torch.

    Under ``torch.autocast`` it does what torch's grid_sample does there: float16 and bfloat16 arguments are
    sampled in float32, and the result is float32.

    Returns:
        ``(N, C, Ho, Wo)`` or ``(N, C, Do, Ho, Wo)`` tensor, equal to torch's result. It is differentiable to
        any order with respect to ``input`` and ``grid``: orders one and two run fused kernels, higher orders
        an exact pure-PyTorch composite.
    """
    return _grid_sample(input, grid, mode, padding_mode, align_corners, False)


def _grid_sample(input, grid, mode, padding_mode, align_corners, point_major_output, groups=None):
    """grid_sample; point_major_output: the output laid out as (spatial..., N, C), each point's channels and then its
    batch items side by side (the encoders' point-major features), except under torch.func and forward-mode AD,
    whose path returns it contiguous. groups = (group, product): the point-major output of the operator
    grid_sample_reduced instead, each group of batch items reduced (no autograd; only on the plain path)."""
    settings = _settings(mode, padding_mode, align_corners)
    if settings is None:  # None for align_corners, or an invalid setting (which _check_arguments reports)
        if align_corners is None:  # as torch: a warning, then False
            warnings.warn(_ALIGN_CORNERS_WARNING, stacklevel=3)
            align_corners = False
        _check_arguments(input, grid, mode, padding_mode, align_corners)
        settings = (_MODES[mode], _PADDING[padding_mode], align_corners)
    if _autocast_enabled(input, grid):  # as torch's grid_sample: reduced precision runs in float32
        with torch.autocast(input.device.type, enabled=False):
            return _grid_sample(_float32(input), _float32(grid), mode, padding_mode, align_corners,
                                point_major_output, groups)
    if not isinstance(input, torch.Tensor) or (input.dtype in _REDUCED and input.is_cpu):
        _check_arguments(input, grid, mode, padding_mode, align_corners)
        # computed in float32, returned in the dtype
        return _grid_sample(input.float(), grid.float(), mode, padding_mode, align_corners,
                            point_major_output, groups).to(input.dtype)
    # torch.func or dual tensors; torch.compile traces the plain path (older Dynamo cannot trace the query;
    # _forward_fake loads the kernels the traced call needs).
    if _is_compiling() or _functorch_transforms_active() or _forward_ad._current_level >= 0:
        _check_arguments(input, grid, mode, padding_mode, align_corners)
        if _is_compiling():
            return _forward(input, grid, *settings, point_major_output)
        _build.load_for(input)
        return transforms.Sample.apply(input, grid, settings)
    # The operator checks its arguments before any kernel runs (the fake one, for meta tensors, runs
    # _check_tensors); only if it refuses them do the Python checks run, to say what was wrong in grid_sample's
    # terms. This is the path of every plain call: it skips their microsecond. The operator also refuses the
    # dtypes whose kernels are built on first use (float64 on the CPU, float16 and bfloat16 on CUDA) until
    # _build.load_for has loaded them (here, or on another thread meanwhile): then the call runs again.
    try:
        if groups is None:  # _run written out: every plain call would pay for its call
            return _forward(input, grid, *settings, point_major_output)
        return _reduced(input, grid, *settings, *groups)
    except Exception as error:
        refused = error
    _check_arguments(input, grid, mode, padding_mode, align_corners)
    if _build.load_for(input):
        return _run(input, grid, settings, point_major_output, groups)
    raise refused


def _run(input, grid, settings, point_major_output, groups):
    """The forward operator, or with groups the reduced one."""
    if groups is None:
        return _forward(input, grid, *settings, point_major_output)
    return _reduced(input, grid, *settings, *groups)


def _settings(mode, padding_mode, align_corners):
    """The operators' (mode, padding, align_corners) for valid settings; None for others (and for None)."""
    try:
        settings = _SETTINGS.get((mode, padding_mode, align_corners))
    except TypeError:  # an unhashable argument
        return None
    return settings if isinstance(align_corners, bool) else None  # (1 and 1.0 match True as keys)


def _autocast_enabled(input, grid):
    return (_any_autocast_enabled() and isinstance(input, torch.Tensor) and isinstance(grid, torch.Tensor)
            and input.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(input.device.type))


def _float32(t):
    return t.float() if t.dtype in _REDUCED else t


def _check_arguments(input, grid, mode, padding_mode, align_corners):
    if not (isinstance(input, torch.Tensor) and isinstance(grid, torch.Tensor)):
        name, t = ("input", input) if not isinstance(input, torch.Tensor) else ("grid", grid)
        raise TypeError(f"grid_sample(): expected {name} to be a torch.Tensor, got {type(t).__name__}")
    if mode not in _MODES:
        raise ValueError(f"grid_sample(): mode must be 'bilinear', 'nearest' or 'bicubic', got {mode!r}")
    if padding_mode not in _PADDING:
        raise ValueError(
            f"grid_sample(): padding_mode must be 'zeros', 'border' or 'reflection', got {padding_mode!r}")
    if not isinstance(align_corners, bool):
        raise TypeError(f"grid_sample(): align_corners must be a bool or None, got {align_corners!r}")
    _check_tensors(input, grid)


def _check_tensors(input, grid):
    shape, grid_shape = input.shape, grid.shape
    rank = len(shape)
    if rank not in (4, 5):
        raise ValueError(f"grid_sample(): expected input of shape (N, C, H, W) or (N, C, D, H, W), got shape "
                         f"{tuple(shape)}")
    if len(grid_shape) != rank or grid_shape[-1] != rank - 2:
        expected = "(N, Ho, Wo, 2)" if rank == 4 else "(N, Do, Ho, Wo, 3)"
        raise ValueError(f"grid_sample(): expected grid of shape {expected} for input of shape {tuple(shape)}, "
                         f"got shape {tuple(grid_shape)}")
    if grid_shape[0] != shape[0]:
        raise ValueError(f"grid_sample(): expected grid and input to have the same batch size N, got grid of "
                         f"shape {tuple(grid_shape)} and input of shape {tuple(shape)}")
    if 0 in shape[2:]:
        raise ValueError(f"grid_sample(): expected input with non-empty spatial dimensions, got shape "
                         f"{tuple(shape)}")
    dtype, grid_dtype = input.dtype, grid.dtype
    if dtype != grid_dtype or dtype not in _DTYPES:
        if not (dtype.is_floating_point and grid_dtype.is_floating_point):
            raise TypeError(f"grid_sample(): expected floating-point input and grid, got input of dtype "
                            f"{dtype} and grid of dtype {grid_dtype}")
        if dtype != grid_dtype:
            raise TypeError(f"grid_sample(): expected input and grid of the same dtype, got input of dtype "
                            f"{dtype} and grid of dtype {grid_dtype}")
        raise TypeError(f"grid_sample(): expected float32, float64, float16 or bfloat16, got {dtype}")
    # is_cuda, is_cpu and get_device() are read faster than .device
    if input.is_cuda:
        same_device = grid.is_cuda and input.get_device() == grid.get_device()
    elif input.is_cpu:
        same_device = grid.is_cpu
    else:
        same_device = input.device == grid.device
    if not same_device:
        raise ValueError(f"grid_sample(): expected input and grid on the same device, got input on "
                         f"{input.device} and grid on {grid.device}")
    if not (input.is_cuda or input.is_cpu or input.is_meta):
        raise ValueError(f"grid_sample(): expected CPU, CUDA or meta tensors, got tensors on {input.device}")


# ----------------------------------------------------------------------------------------------
# Shapes for torch.compile. Outputs that were not requested are empty placeholders of shape (0,).

@torch.library.register_fake("grid_encoder::grid_sample_forward")
def _forward_fake(input, grid, mode, padding, align_corners, point_major_output=False):
    _check_tensors(input, grid)  # the operator's own checks are C++, which meta and fake tensors skip
    _build.load_for(input)  # the kernels that torch.compile's graph will run, where built on first use
    shape = (input.shape[0], input.shape[1], *grid.shape[1:-1])
    return _point_major_empty(input, shape) if point_major_output else input.new_empty(shape)


def _point_major_empty(like, shape):
    """An empty (N, C, spatial...) tensor laid out as (spatial..., N, C): the operators' point_major_strides."""
    layout = torch.empty((*shape[2:], *shape[:2]), dtype=like.dtype, device=like.device)
    return layout.permute(-2, -1, *range(len(shape) - 2))


@torch.library.register_fake("grid_encoder::grid_sample_reduced")
def _reduced_fake(input, grid, mode, padding, align_corners, group, product):
    _check_tensors(input, grid)
    torch._check(group >= 1 and input.shape[0] % group == 0,
                 lambda: f"grid_sample_reduced(): group {group} does not divide the batch size {input.shape[0]}")
    _build.load_for(input)
    return _point_major_empty(input, (input.shape[0] // group, input.shape[1], *grid.shape[1:-1]))


@torch.library.register_fake("grid_encoder::grid_sample_backward")
def _backward_fake(grad_output, input, grid, mode, padding, align_corners, output_mask):
    grad_input = torch.empty_like(input) if output_mask[0] else input.new_empty((0,))
    grad_grid = grid.new_empty(grid.shape) if output_mask[1] else grid.new_empty((0,))
    return grad_input, grad_grid


@torch.library.register_fake("grid_encoder::grid_sample_tangent")
def _tangent_fake(input_tangent, grid_tangent, input, grid, mode, padding, align_corners):
    return input.new_empty((input.shape[0], input.shape[1], *grid.shape[1:-1]))


@torch.library.register_fake("grid_encoder::grid_sample_double_backward")
def _double_backward_fake(grad_grad_input, grad_grad_grid, grad_output, input, grid, mode, padding,
                          align_corners, output_mask):
    d_grad_output = torch.empty_like(grad_output) if output_mask[0] else input.new_empty((0,))
    d_input = torch.empty_like(input) if output_mask[1] else input.new_empty((0,))
    d_grid = grid.new_empty(grid.shape) if output_mask[2] else grid.new_empty((0,))
    return d_grad_output, d_input, d_grid


# ----------------------------------------------------------------------------------------------
# Autograd of the forward and backward operators is in C++ (csrc/autograd.cpp). The double backward's is here:
# its derivatives (third order and up) are those of transforms.DoubleBackward, the pure-PyTorch twin's.

_library = torch.library.Library("grid_encoder", "IMPL")  # the Python autograd kernels (here and in encoders.py)


def _recorded(*tensors):
    """Whether autograd records operations on these tensors (None: an absent one)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _refuse_dual_tensors(op, tensors, served_by):
    """An operator with autograd but no forward-mode formula, called directly on dual tensors, refuses them rather
    than drop their tangents (as the C++ ones do: csrc/autograd.cpp); served_by is the function to call instead."""
    if _forward_ad._current_level >= 0 and any(  # tangents exist only inside a dual level
            t is not None and _forward_ad.unpack_dual(t).tangent is not None for t in tensors):
        raise RuntimeError(f"{op}: forward-mode AD of this operator is served by {served_by}; call that instead of "
                           "the operator on dual tensors")


def _double_backward_autograd(keyset, grad_grad_input, grad_grad_grid, grad_output, input, grid, mode,
                              padding, align_corners, output_mask):
    tensors = (grad_grad_input, grad_grad_grid, grad_output, input, grid)
    _refuse_dual_tensors("grid_encoder.grid_sample_double_backward", tensors, "grid_encoder.grid_sample()")
    settings = (mode, padding, align_corners)
    if _recorded(*tensors):
        results = transforms.DoubleBackward.apply(*tensors, settings, tuple(output_mask))
        return tuple(r if r is not None else like.new_empty((0,)) for r, like in zip(results, (input, input, grid)))
    return _ops.grid_sample_double_backward.default.redispatch(keyset & torch._C._after_autograd_keyset, *tensors,
                                                               *settings, output_mask)


_library.impl("grid_sample_double_backward", _double_backward_autograd, "Autograd", with_keyset=True)
