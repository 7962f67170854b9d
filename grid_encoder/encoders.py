"""Feature-grid encoders: several planes or volumes read at the same points in one call, point-major features out.

    feats = sample_planes(planes, points, axes=((0, 1), (0, 2), (1, 2)), reduce="concat")   # tri-planes, K-Planes
    feats = sample_volumes(volumes, points, reduce="concat")                                 # dense multi-grids

Every value and derivative equals the same computation written with one ``grid_sample`` call per grid followed by
the reduction, because it is that: grids of one size go through one call with the grids as its batch, grids of
different sizes one call each, so every order, torch.func and forward-mode AD work as for ``grid_sample``. The
glue around the calls is chosen to stay cheap at every order: the planes' coordinates are picked by one operator
(plane_coords, with C++ autograd: its gradient sums each column's picks in one kernel, where indexing's would be a
sorted scatter and a Python composite a dozen small operators a step), the calls write point-major outputs (each
grid's features are then a view, and so is the concatenation of grids of one size: no copy, summed or multiplied
without one), and K-Planes' product over grids of one size is one operator as well (plane_product, a kernel for each
of its first three orders; torch.prod's gradient divides, and checks for zeros on the host), over others a chain of
multiplications. Where nothing records (inference, no_grad), sums and products over grids of one size skip the
features: the operator grid_sample_reduced samples and reduces them in one pass on CUDA, with the same bits.
"""
import torch

from .grid_sample import (_REDUCED, _forward_ad, _functorch_transforms_active, _grid_sample, _is_compiling, _library,
                          _ops, _recorded, _refuse_dual_tensors)

_plane_coords_op = _ops.plane_coords.default
_plane_product_op = _ops.plane_product.default
_REDUCTIONS = ("concat", "sum", "mean", "product")
_MAX_OPERATOR_PLANES = 128  # the operator plane_coords' limit (kMaxCoordPlanes in csrc/encoders.h)
_MAX_PRODUCT_PLANES = 8  # the operator plane_product's limit (kMaxProductPlanes in csrc/encoders.h)


def sample_planes(planes, points, axes=((0, 1), (0, 2), (1, 2)), reduce="concat", mode="bilinear",
                  padding_mode="zeros", align_corners=True):
    """Samples K planes at the same points and combines their features.

    Args:
        planes: a tensor ``(K, C, H, W)``, or ``(N, K, C, H, W)`` with points ``(N, P, D)``; or a list of K tensors
            ``(C, H_k, W_k)`` (``(N, C, H_k, W_k)`` with batched points), whose sizes may differ.
        points: ``(P, D)`` or ``(N, P, D)`` coordinates in [-1, 1]; D may exceed 3 (K-Planes' space-time planes).
        axes: K pairs ``(a, b)``: plane k is read at x = ``points[..., a]`` (along W) and y = ``points[..., b]``
            (along H), the convention of grid_sample.
        reduce: ``"concat"`` gives ``(P, K * C)`` (plane k's channels at ``[k * C, (k + 1) * C)``; with a list of
            planes, their channel counts may differ); ``"sum"``, ``"mean"`` and ``"product"`` (K-Planes' Hadamard
            product) give ``(P, C)`` and need equal C.
        mode, padding_mode, align_corners: as in ``grid_sample`` (align_corners True by default).

    Returns:
        ``(P, F)`` or ``(N, P, F)`` features, contiguous.
    """
    axes = _check_axes(axes, points)
    grids, batched, _ = _grids(planes, "planes", 2, len(axes), points)
    # (.., K, P, 2), contiguous: the kernels read it without a copy. The operator plane_coords, whose autograd is
    # C++ (its gradient sums the picks of each column; the two operators are each other's derivative); under
    # torch.func (and past the operator's 128 planes) a Python Function with the same gradient; plain views under
    # torch.compile (the compiler fuses them) and forward-mode AD (which the operators leave to them).
    traced_or_dual = _traced_or_dual()
    plain = not (traced_or_dual or _functorch_transforms_active())
    if plain and len(axes) <= _MAX_OPERATOR_PLANES:
        coords = _plane_coords_op(points, [c for pair in axes for c in pair])
    elif not traced_or_dual and _recorded(points):
        coords = _PlaneCoords.apply(points, axes)
    else:
        coords = _plane_coords(points, axes)
    return _sample("sample_planes", grids, coords, batched, reduce, mode, padding_mode, align_corners, plain)


def sample_volumes(volumes, points, reduce="concat", mode="bilinear", padding_mode="zeros", align_corners=True):
    """Samples K volumes at the same points and combines their features.

    Args:
        volumes: a tensor ``(K, C, D, H, W)``, or ``(N, K, C, D, H, W)`` with points ``(N, P, 3)``; or a list of K
            tensors ``(C, D_k, H_k, W_k)`` (``(N, C, D_k, H_k, W_k)`` with batched points), whose sizes may differ
            (multi-resolution dense grids).
        points: ``(P, 3)`` or ``(N, P, 3)`` coordinates in [-1, 1]: x along W, y along H, z along D.
        reduce, mode, padding_mode, align_corners: as in ``sample_planes``.

    Returns:
        ``(P, F)`` or ``(N, P, F)`` features, contiguous.
    """
    if not isinstance(points, torch.Tensor) or points.dim() not in (2, 3) or points.shape[-1] != 3:
        raise ValueError(f"sample_volumes(): expected points of shape (P, 3) or (N, P, 3), got "
                         f"{_describe(points)}")
    grids, batched, count = _grids(volumes, "volumes", 3, None, points)
    coords = points.unsqueeze(-3).expand(*points.shape[:-2], count, *points.shape[-2:])  # (.., K, P, 3), a view
    plain = not (_traced_or_dual() or _functorch_transforms_active())
    return _sample("sample_volumes", grids, coords, batched, reduce, mode, padding_mode, align_corners, plain)


def _traced_or_dual():
    """Whether torch.compile is tracing or a forward-mode dual level is open: the glue then takes plain views."""
    return _is_compiling() or _forward_ad._current_level >= 0


def _describe(t):
    return f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__


def _check_axes(axes, points):
    if not isinstance(points, torch.Tensor) or points.dim() not in (2, 3):
        raise ValueError(f"sample_planes(): expected points of shape (P, D) or (N, P, D), got {_describe(points)}")
    if not points.dtype.is_floating_point:
        raise TypeError(f"sample_planes(): expected floating-point points, got {points.dtype}")
    columns = points.shape[-1]
    try:
        axes = [tuple(int(i) for i in pair) for pair in axes]
    except (TypeError, ValueError):
        raise TypeError(f"sample_planes(): axes must be pairs of column indices, got {axes!r}") from None
    if not axes or any(len(pair) != 2 or not all(0 <= i < columns for i in pair) for pair in axes):
        raise ValueError(f"sample_planes(): axes must be pairs of column indices in [0, {columns}) for points of "
                         f"shape {tuple(points.shape)}, got {axes!r}")
    return axes


def _grids(grids, name, dims, count, points):
    """The grids as a list of (1 or N, C, *spatial) tensors, or the one (K, ...) or (N, K, ...) tensor they came in;
    whether the problem is batched; and K."""
    function = "sample_planes" if dims == 2 else "sample_volumes"
    batched = points.dim() == 3
    spatial = "H, W" if dims == 2 else "D, H, W"
    stacked = isinstance(grids, torch.Tensor)  # one tensor with the grids along a dimension K, or a list
    if stacked:
        labelled = [(name, grids)]
    elif isinstance(grids, (list, tuple)) and grids:
        labelled = [(f"{name}[{i}]", grid) for i, grid in enumerate(grids)]
    else:
        raise TypeError(f"{function}(): expected {name} to be a tensor or a non-empty list of tensors, got "
                        f"{_describe(grids)}")
    expected = f"({'N, ' if batched else ''}{'K, ' if stacked else ''}C, {spatial})"
    rank = batched + stacked + 1 + dims
    for label, grid in labelled:
        if not isinstance(grid, torch.Tensor) or grid.dim() != rank:
            raise ValueError(f"{function}(): expected {label} of shape {expected} for points of shape "
                             f"{tuple(points.shape)}, got {_describe(grid)}")
        if batched and grid.shape[0] != points.shape[0]:
            raise ValueError(f"{function}(): expected {label} and points with the same batch size N, got {label} "
                             f"of shape {tuple(grid.shape)} and points of shape {tuple(points.shape)}")
        if grid.dtype != points.dtype or grid.device != points.device:
            raise TypeError(f"{function}(): expected {label} with the dtype and device of points ({points.dtype} "
                            f"on {points.device}), got {grid.dtype} on {grid.device}")
    k = grids.shape[1 if batched else 0] if stacked else len(grids)
    if count is not None and k != count:
        raise ValueError(f"{function}(): got {k} {name} and {count} axes pairs; expected one pair per plane")
    return (grids if stacked else [grid if batched else grid.unsqueeze(0) for grid in grids]), batched, k


def _plane_coords(points, axes):
    """The planes' coordinates, (.., K, P, 2) contiguous: plane k's (x, y) = points[..., a_k], points[..., b_k] for
    axes ((a_0, b_0), ...), columns repeated as the axes repeat them. The operator plane_coords in plain operators."""
    columns = points.unbind(-1)  # one operator, where a select per pick is 2K
    picked = torch.stack([columns[c] for pair in axes for c in pair], -1)  # (.., P, 2K)
    return picked.unflatten(-1, (len(axes), 2)).movedim(-2, -3).contiguous()


def _column_sums(grad, axes, width):
    """_plane_coords' gradient: for each of the `width` columns of points, the sum of the gradients of its picks, in
    order (plane by plane, x before y), as the operator plane_coords_backward adds them. Linear, so its own derivatives
    follow from the same operations."""
    sums = [None] * width
    picks = [side.unbind(-2) for side in grad.unbind(-1)]  # picks[j][k]: plane k's coordinate j
    for k, pair in enumerate(axes):
        for j, column in enumerate(pair):
            pick = picks[j][k]
            sums[column] = pick if sums[column] is None else sums[column] + pick
    if any(s is None for s in sums):  # columns no plane reads
        zero = torch.zeros_like(grad.select(-3, 0).select(-1, 0))
        sums = [zero if s is None else s for s in sums]
    return torch.stack(sums, -1)


class _PlaneCoords(torch.autograd.Function):
    """_plane_coords with _column_sums as its gradient, for torch.func (vmap rule generated): the operator
    plane_coords and its gradient in Python."""

    generate_vmap_rule = True

    @staticmethod
    def forward(points, axes):
        return _plane_coords(points, axes)

    @staticmethod
    def setup_context(ctx, inputs, output):
        points, ctx.axes = inputs
        ctx.width = points.shape[-1]

    @staticmethod
    def backward(ctx, grad):
        return _column_sums(grad, ctx.axes, ctx.width), None

    @staticmethod
    def jvp(ctx, tangent, _):
        return _plane_coords(tangent, ctx.axes)


def _sample(function, grids, coords, batched, reduce, mode, padding_mode, align_corners, plain):
    """The grids read at coords ((N, K, P, d), or (K, P, d) unbatched; grid k at coords[..., k, :, :]) and
    reduced: (N, P, F), or (P, F) unbatched. plain: outside torch.func, forward-mode AD and torch.compile, where the
    product of grids of one size is the operator plane_product (C++ autograd, a kernel per order, where a chain of
    multiplications is two per plane and order, on strided features), else that chain."""
    if reduce not in _REDUCTIONS:
        raise ValueError(f"{function}(): reduce must be 'concat', 'sum', 'mean' or 'product', got {reduce!r}")
    lead, (k, points, dims) = coords.shape[:-3], coords.shape[-3:]  # lead: (N,), or () unbatched
    n, ones = (lead[0] if batched else 1), [1] * (dims - 1)

    def items_first(t):  # (P, N, F) -> (N, P, F), a view; unbatched (P, F) as it is
        return t.transpose(0, 1) if batched else t

    # The calls' outputs (N * K, C, 1.., P) or (N, C, 1.., P) are laid out point-major, (P, N * K, C) or (P, N, C)
    # (except under torch.func and forward-mode AD, which return them contiguous): each grid's features and the
    # concatenation of grids of one size are views, contiguous where N is 1, and the reductions' results are
    # point-major without a copy. Few view operators, as each is an autograd node at every order.
    if isinstance(grids, torch.Tensor):  # one call, the grids as its batch
        inputs, grid = (grids.flatten(0, 1) if batched else grids), coords.reshape(n * k, *ones, points, dims)
        if reduce != "concat" and plain and not _recorded(grids, coords) and not (grids.is_cpu and
                                                                             grids.dtype in _REDUCED):
            # Nothing to differentiate: the sum or product of the grids' values without their features (on CUDA in
            # one pass), each rounded to the dtype as the chain below rounds it.
            out = _grid_sample(inputs, grid, mode, padding_mode, align_corners, True,
                               (k, reduce == "product"))  # (N, C, 1.., P)
            result = out.movedim(1, -1).reshape(n, points, out.shape[1])
            result = (result / k if reduce == "mean" else result).contiguous()
            return result if batched else result.squeeze(0)
        out = _grid_sample(inputs, grid, mode, padding_mode, align_corners, True)
        by_point = out.movedim(-1, 0).reshape(points, *lead, k, out.shape[1])  # (P, (N,) K, C)
        if reduce == "concat":
            return items_first(by_point.flatten(-2)).contiguous()
        if reduce == "product" and plain and 1 < k <= _MAX_PRODUCT_PLANES:
            result = _plane_product_op(by_point.reshape(points, n, k, -1).permute(1, 2, 0, 3))  # (N, P, C), contiguous
            return result if batched else result.squeeze(0)
        features = [items_first(f) for f in by_point.unbind(-2)]
    else:
        features = []
        for index, grid in enumerate(grids):
            out = _grid_sample(grid, coords.select(-3, index).reshape(n, *ones, points, dims), mode, padding_mode,
                               align_corners, True)  # (N, C, 1.., P)
            features.append(items_first(out.movedim(-1, 0).reshape(points, *lead, out.shape[1])))
        if reduce == "concat":
            return torch.cat(features, -1)  # one copy
    channels = [f.shape[-1] for f in features]
    if len(set(channels)) != 1:
        raise ValueError(f"{function}(): reduce={reduce!r} needs grids with equal channel counts, got {channels}")
    result = features[0]
    for f in features[1:]:
        result = result * f if reduce == "product" else result + f
    if reduce == "mean":
        result = result / len(features)
    return result.contiguous()


# Shapes for torch.compile, FakeTensorMode and meta tensors.

@torch.library.register_fake("grid_encoder::plane_coords")
def _plane_coords_fake(points, columns):
    return points.new_empty((*points.shape[:-2], len(columns) // 2, points.shape[-2], 2))


@torch.library.register_fake("grid_encoder::plane_coords_backward")
def _plane_coords_backward_fake(grad, columns, width):
    return grad.new_empty((*grad.shape[:-3], grad.shape[-2], width))


@torch.library.register_fake("grid_encoder::plane_product")
def _plane_product_fake(features):
    n, _, points, channels = features.shape
    return features.new_empty((n, points, channels))


@torch.library.register_fake("grid_encoder::plane_product_backward")
def _plane_product_backward_fake(grad, features):
    return features.new_empty(features.shape)


@torch.library.register_fake("grid_encoder::plane_product_double_backward")
def _plane_product_double_backward_fake(grad_grad, grad, features, output_mask):
    return (grad.new_empty(grad.shape) if output_mask[0] else grad.new_empty((0,)),
            features.new_empty(features.shape) if output_mask[1] else grad.new_empty((0,)))


# Autograd of plane_product and its backward is in C++ (csrc/autograd.cpp); the double backward's is here: where its
# results are to be differentiated (third order and up), they come from the same formulas in plain operators.

def _product(factors, like):
    result = torch.ones_like(like) if not factors else factors[0]
    for f in factors[1:]:
        result = result * f
    return result


def _plane_product_double_backward_reference(grad_grad, grad, features):
    """(d_grad, d_features): d_grad = sum_k gg_k prod_{j != k} f_j, d_features_j = grad sum_{k != j} gg_k
    prod_{i != j, k} f_i; differentiable to any order."""
    f, gg = features.unbind(1), grad_grad.unbind(1)
    planes = range(len(f))
    d_grad = sum(gg[k] * _product([f[j] for j in planes if j != k], grad) for k in planes)
    d_features = [grad * sum((gg[k] * _product([f[i] for i in planes if i not in (j, k)], grad)
                              for k in planes if k != j), torch.zeros_like(grad)) for j in planes]
    return d_grad, torch.stack(d_features, 1)


def _plane_product_double_backward_autograd(keyset, grad_grad, grad, features, output_mask):
    tensors = (grad_grad, grad, features)
    _refuse_dual_tensors("grid_encoder.plane_product_double_backward", tensors, "grid_encoder.sample_planes()")
    if _recorded(*tensors):
        d_grad, d_features = _plane_product_double_backward_reference(*tensors)
        return (d_grad if output_mask[0] else grad.new_empty((0,)),
                d_features if output_mask[1] else grad.new_empty((0,)))
    return _ops.plane_product_double_backward.default.redispatch(keyset & torch._C._after_autograd_keyset, *tensors,
                                                                 output_mask)


_library.impl("plane_product_double_backward", _plane_product_double_backward_autograd, "Autograd",
              with_keyset=True)
