"""sample_planes and sample_volumes: values and derivatives of every order equal the same computation written with
one grid_sample call per grid (torch's for the first order, the reference's beyond) and the reduction."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.func as func
import torch.nn.functional as F
from torch.testing import assert_close

from helpers import REORDERED_SUMS, TRANSFORMED
from grid_encoder import sample_planes, sample_volumes
from grid_encoder.encoders import _column_sums, _plane_coords, _plane_product_double_backward_reference
from grid_encoder.reference import grid_sample_reference

TRIPLANE = ((0, 1), (0, 2), (1, 2))
REDUCTIONS = ["concat", "sum", "mean", "product"]
SETTINGS = ("bilinear", "border", False)


def reduce_features(features, reduce):
    if reduce == "concat":
        return torch.cat(features, -1)
    stacked = torch.stack(features)
    return {"sum": stacked.sum(0), "mean": stacked.mean(0), "product": stacked.prod(0)}[reduce]


def planes_by_calls(sample, planes, points, axes, reduce, settings=SETTINGS):
    """The field written with one grid_sample call per plane: planes a list of (C, H, W), points (P, D)."""
    features = [sample(plane[None], points[None, None, :, [a, b]], *settings)[0, :, 0].T
                for plane, (a, b) in zip(planes, axes)]
    return reduce_features(features, reduce)


def volumes_by_calls(sample, volumes, points, reduce, settings=SETTINGS):
    features = [sample(volume[None], points[None, None, None], *settings)[0, :, 0, 0].T for volume in volumes]
    return reduce_features(features, reduce)


def assert_all_close(ours, theirs):
    """Equal up to summation order, relative to each result's magnitude (third orders reach the thousands)."""
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        scale = max(1.0, b.abs().max().item())
        assert_close(a, b, rtol=REORDERED_SUMS["rtol"], atol=REORDERED_SUMS["atol"] * scale,
                     msg=lambda m: f"result {i}: {m}")


def same_bits(a, b):
    """Equal shapes, dtypes and values, 16-bit values compared as their bits."""
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.view(torch.int16) if a.element_size() == 2 else a,
                                                                      b.view(torch.int16) if b.element_size() == 2 else b)


def random_planes(device, sizes, channels):
    return [torch.randn(channels, *size, dtype=torch.float64, device=device) for size in sizes]


def random_points(device, count, columns=3):
    return torch.rand(count, columns, dtype=torch.float64, device=device) * 2.2 - 1.1  # inside and outside


def derivatives(field, grids, points):
    """Output, first order (grids, points), the eikonal pattern's second order and a third order."""
    grids = [g.detach().requires_grad_() for g in grids]
    points = points.detach().requires_grad_()
    out = field(grids, points)
    cotangent = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=out.dtype).to(out.device)
    first = torch.autograd.grad((out * cotangent).sum(), [*grids, points], create_graph=True)
    # a smoothed norm: the norm's own third derivative is NaN where a gradient vanishes (a point clamped by border
    # padding on every axis), which would hide ours
    eikonal = (((first[-1].square().sum(-1) + 0.01).sqrt() - 1) ** 2).sum()
    second = torch.autograd.grad(eikonal, [*grids, points], create_graph=True)
    third = torch.autograd.grad(sum((g * g.detach().cos()).sum() for g in second), [*grids, points],
                                allow_unused=True)
    return [out, *first, *second, *[torch.zeros_like(x) if t is None else t for t, x in zip(third, [*grids, points])]]


@pytest.mark.parametrize("reduce", REDUCTIONS)
@pytest.mark.parametrize("form", ["tensor", "list"])
def test_planes_match_grid_sample_calls(device, reduce, form):
    sizes = [(6, 7)] * 3 if form == "tensor" else [(6, 7), (9, 5), (4, 4)]
    planes = random_planes(device, sizes, 4)
    points = random_points(device, 10)
    field = lambda p, x: sample_planes(torch.stack(p) if form == "tensor" else p, x, TRIPLANE, reduce, *SETTINGS)
    ours = field(planes, points)
    assert ours.shape == ((10, 12) if reduce == "concat" else (10, 4)) and ours.is_contiguous()
    x = points.clone().requires_grad_()
    ps = [p.clone().requires_grad_() for p in planes]
    expected = planes_by_calls(F.grid_sample, ps, x, TRIPLANE, reduce)
    expected_grads = torch.autograd.grad(expected.sin().sum(), [*ps, x])
    x2 = points.clone().requires_grad_()
    ps2 = [p.clone().requires_grad_() for p in planes]
    got = field(ps2, x2)
    got_grads = torch.autograd.grad(got.sin().sum(), [*ps2, x2])
    assert_close(got, expected, **REORDERED_SUMS)
    for a, b in zip(got_grads, expected_grads):
        assert_close(a, b, **REORDERED_SUMS)
    reference = derivatives(lambda p, x: planes_by_calls(grid_sample_reference, p, x, TRIPLANE, reduce), planes,
                            points)
    assert_all_close(derivatives(field, planes, points), reference)


def test_a_column_no_plane_reads_gets_a_zero_gradient(device):
    """Points whose middle column no plane reads (planes on (x, z) and (z, x)): every order matches the calls, and
    that column's gradient is zero at every order."""
    planes = random_planes(device, [(6, 7)] * 2, 3)
    points = random_points(device, 10)
    axes = ((0, 2), (2, 0))
    ours = derivatives(lambda p, x: sample_planes(torch.stack(p), x, axes, "concat", *SETTINGS), planes, points)
    reference = derivatives(lambda p, x: planes_by_calls(grid_sample_reference, p, x, axes, "concat"), planes,
                            points)
    assert_all_close(ours, reference)
    for order, points_gradient in enumerate((ours[3], ours[6], ours[9]), 1):
        assert points_gradient[:, 2].abs().max() > 0, order
        assert torch.equal(points_gradient[:, 1], torch.zeros_like(points_gradient[:, 1])), order


@pytest.mark.parametrize("reduce", ["concat", "product"])
def test_k_planes_space_time_and_resolutions(device, reduce):
    """K-Planes: 6 planes over (x, y, z, t) pairs at two resolutions, product within a resolution, concat across."""
    axes = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
    points = random_points(device, 8, columns=4)
    levels = [random_planes(device, [(5, 6)] * 6, 3), random_planes(device, [(9, 11)] * 6, 3)]

    def field(planes, x):
        per_level = [sample_planes(torch.stack(planes[6 * i:6 * i + 6]), x, axes, reduce, *SETTINGS) for i in (0, 1)]
        return torch.cat(per_level, -1)

    def by_calls(planes, x):
        return torch.cat([planes_by_calls(grid_sample_reference, planes[6 * i:6 * i + 6], x, axes, reduce)
                          for i in (0, 1)], -1)

    assert_all_close(derivatives(field, levels[0] + levels[1], points),
                     derivatives(by_calls, levels[0] + levels[1], points))


def test_batched_planes(device):
    planes = torch.randn(2, 3, 4, 6, 7, dtype=torch.float64, device=device)
    points = torch.rand(2, 10, 3, dtype=torch.float64, device=device) * 2 - 1
    ours = sample_planes(planes, points, TRIPLANE, "concat", *SETTINGS)
    assert ours.shape == (2, 10, 12)
    for n in range(2):
        assert_close(ours[n], planes_by_calls(F.grid_sample, planes[n], points[n], TRIPLANE, "concat"),
                     **REORDERED_SUMS)
    listed = sample_planes(list(planes.unbind(1)), points, TRIPLANE, "sum", *SETTINGS)
    assert_close(listed, torch.stack([planes_by_calls(F.grid_sample, planes[n], points[n], TRIPLANE, "sum")
                                      for n in range(2)]), **REORDERED_SUMS)


def test_batched_product_at_every_order(device):
    """Batched planes (N, K, C, H, W): K-Planes' product over each item's planes (the product operator, on features
    whose items interleave point by point) at every order, as per-item calls."""
    planes = torch.randn(2, 3, 4, 6, 7, dtype=torch.float64, device=device)
    points = torch.rand(2, 10, 3, dtype=torch.float64, device=device) * 2.2 - 1.1
    ours = derivatives(lambda g, x: sample_planes(g[0], x, TRIPLANE, "product", *SETTINGS), [planes], points)
    theirs = derivatives(lambda g, x: torch.stack([planes_by_calls(grid_sample_reference, g[0][n], x[n], TRIPLANE,
                                                                   "product") for n in range(2)]), [planes], points)
    assert_all_close(ours, theirs)


def test_batched_volumes(device):
    """N = 3 batch items of K = 2 volumes each (N and K differ, so neither can stand for the other)."""
    volumes = torch.randn(3, 2, 4, 5, 6, 7, dtype=torch.float64, device=device)
    points = torch.rand(3, 9, 3, dtype=torch.float64, device=device) * 2 - 1
    expected = torch.stack([volumes_by_calls(F.grid_sample, volumes[n], points[n], "concat") for n in range(3)])
    for form in (volumes, list(volumes.unbind(1))):
        assert_close(sample_volumes(form, points, "concat", *SETTINGS), expected, **REORDERED_SUMS)


@pytest.mark.parametrize("reduce", REDUCTIONS)
@pytest.mark.parametrize("form", ["tensor", "list"])
def test_volumes_match_grid_sample_calls(device, reduce, form):
    sizes = [(4, 5, 6)] * 2 if form == "tensor" else [(4, 5, 6), (7, 3, 5)]
    volumes = [torch.randn(3, *size, dtype=torch.float64, device=device) for size in sizes]
    points = random_points(device, 9)
    field = lambda v, x: sample_volumes(torch.stack(v) if form == "tensor" else v, x, reduce, *SETTINGS)
    assert_close(field(volumes, points), volumes_by_calls(F.grid_sample, volumes, points, reduce), **REORDERED_SUMS)
    assert_all_close(derivatives(field, volumes, points),
                     derivatives(lambda v, x: volumes_by_calls(grid_sample_reference, v, x, reduce), volumes, points))


def test_transforms_of_an_encoder(device):
    """Per-point normals by vmap(grad) and a forward-mode tangent, as for grid_sample."""
    planes = torch.randn(3, 4, 6, 7, dtype=torch.float64, device=device)
    points = random_points(device, 5)
    ours = lambda x: sample_planes(planes, x[None], TRIPLANE, "product", *SETTINGS).sum()
    theirs = lambda x: planes_by_calls(grid_sample_reference, planes, x[None], TRIPLANE, "product").sum()
    assert_close(func.vmap(func.grad(ours))(points), func.vmap(func.grad(theirs))(points), **TRANSFORMED)
    tangent = torch.randn_like(points)
    assert_close(func.jvp(lambda x: sample_planes(planes, x, TRIPLANE, "sum", *SETTINGS), (points,), (tangent,)),
                 func.jvp(lambda x: planes_by_calls(grid_sample_reference, planes, x, TRIPLANE, "sum"), (points,),
                          (tangent,)), **TRANSFORMED)


def test_forward_mode_tangent_of_an_encoder(device):
    """Dual points (torch.autograd.forward_ad, outside torch.func) give the features' tangent, whether the points
    also require grad or not, and a gradient through the tangent as well."""
    planes = torch.randn(3, 4, 6, 7, dtype=torch.float64, device=device)
    points, tangent = random_points(device, 5), random_points(device, 5)
    _, expected = func.jvp(lambda x: planes_by_calls(grid_sample_reference, planes, x, TRIPLANE, "concat"),
                           (points,), (tangent,))
    weights = torch.randn(expected.shape, dtype=torch.float64, device=device)
    for requires_grad in (False, True):
        x = points.clone().requires_grad_(requires_grad)
        with fwAD.dual_level():
            features = sample_planes(planes, fwAD.make_dual(x, tangent), TRIPLANE, "concat", *SETTINGS)
            ours = fwAD.unpack_dual(features).tangent
        assert_close(ours, expected, **TRANSFORMED)
        if requires_grad:  # d (weights . tangent) / d points, against the reference's
            (got,) = torch.autograd.grad((ours * weights).sum(), x)
            reference = lambda y: (func.jvp(lambda z: planes_by_calls(grid_sample_reference, planes, z, TRIPLANE,
                                                                      "concat"), (y,), (tangent,))[1] * weights).sum()
            assert_close(got, func.grad(reference)(points), **TRANSFORMED)


def test_encoders_compile_in_one_graph():
    """torch.compile(fullgraph=True) traces both encoders: values and first-order gradients as in eager mode."""
    planes = torch.randn(3, 4, 6, 7, dtype=torch.float64, requires_grad=True)
    volumes = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    points = random_points("cpu", 9).requires_grad_()
    fields = [(lambda p, x: sample_planes(p, x, TRIPLANE, "product", *SETTINGS).square().sum(), planes),
              (lambda v, x: sample_volumes(v, x, "concat", *SETTINGS).square().sum(), volumes)]
    for field, grids in fields:
        compiled = torch.compile(field, fullgraph=True)
        ours, eager = compiled(grids, points), field(grids, points)
        assert_close(ours, eager, **REORDERED_SUMS)
        for a, b in zip(torch.autograd.grad(ours, (grids, points)), torch.autograd.grad(eager, (grids, points))):
            assert_close(a, b, **REORDERED_SUMS)


# Planes picking columns several times, one pair twice the same column, and column 4 of five unread.
REPEATED_AXES = ((0, 1), (0, 2), (1, 2), (3, 3), (2, 0))
COLUMNS = [c for pair in REPEATED_AXES for c in pair]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("batched", [False, True], ids=["unbatched", "batched"])
def test_plane_coords_operators_give_the_bits_of_their_python_twin(device, dtype, batched):
    """The operator plane_coords and its gradient pick and add as _plane_coords and _column_sums do (the additions in
    the same order, each rounded to the dtype), from points and gradients of any strides."""
    lead = (2,) if batched else ()
    points = torch.randn(*lead, 37, 7, device=device).to(dtype)[..., 1:6]  # five columns, not contiguous
    coords = torch.ops.grid_encoder.plane_coords(points, COLUMNS)
    assert coords.is_contiguous() and torch.equal(coords, _plane_coords(points, REPEATED_AXES))
    grad = torch.randn(*lead, 5, 2, 37, device=device).to(dtype).transpose(-1, -2)  # (.., K, P, 2), not contiguous
    sums = torch.ops.grid_encoder.plane_coords_backward(grad, COLUMNS, 5)
    expected = _column_sums(grad, REPEATED_AXES, 5)
    assert sums.shape == (*lead, 37, 5) and sums.is_contiguous()
    assert same_bits(sums, expected)
    assert torch.equal(sums[..., 4], torch.zeros_like(sums[..., 4]))


def test_plane_coords_operators_are_each_others_derivative(device):
    ops = torch.ops.grid_encoder
    points = torch.randn(2, 6, 5, dtype=torch.float64, device=device, requires_grad=True)
    grad = torch.randn(2, 5, 6, 2, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: ops.plane_coords(x, COLUMNS), points)
    assert torch.autograd.gradgradcheck(lambda x: ops.plane_coords(x, COLUMNS), points)
    assert torch.autograd.gradcheck(lambda g: ops.plane_coords_backward(g, COLUMNS, 5), grad)
    assert torch.autograd.gradgradcheck(lambda g: ops.plane_coords_backward(g, COLUMNS, 5), grad)


PLANE_COORDS_BAD_CASES = {  # name: (call on points (10, 3) and grad (3, 10, 2), message)
    "odd-columns": (lambda ops, x, g: ops.plane_coords(x, [0, 1, 2]),
                    r"plane_coords: expected a pair of column indices per plane, for 1 to 128 planes, got 3 indices"),
    "too-many-planes": (lambda ops, x, g: ops.plane_coords(x, [0, 1] * 129), r"for 1 to 128 planes, got 258 indices"),
    "column-range": (lambda ops, x, g: ops.plane_coords(x, [0, 3]),
                     r"expected column indices in \[0, 3\) for points of 3 columns, got \[0, 3\]"),
    "points-rank": (lambda ops, x, g: ops.plane_coords(x[0], [0, 1]),
                    r"expected points of shape \(P, D\) or \(N, P, D\), got \[3\]"),
    "points-dtype": (lambda ops, x, g: ops.plane_coords(x.long(), [0, 1]),
                     r"expected points of dtype float32, float64, float16 or bfloat16, got Long"),
    "grad-planes": (lambda ops, x, g: ops.plane_coords_backward(g, [0, 1, 0, 2], 3),
                    r"plane_coords_backward: expected grad for 2 planes, got shape \[3, 10, 2\]"),
    "grad-width": (lambda ops, x, g: ops.plane_coords_backward(g, [0, 1, 0, 2, 1, 2], 2),
                   r"expected column indices in \[0, 2\) for points of 2 columns"),
}


@pytest.mark.parametrize("case", list(PLANE_COORDS_BAD_CASES))
def test_plane_coords_operators_refuse_bad_arguments(device, case):
    ops = torch.ops.grid_encoder
    points = torch.randn(10, 3, dtype=torch.float64, device=device)
    grad = torch.randn(3, 10, 2, dtype=torch.float64, device=device)
    call, message = PLANE_COORDS_BAD_CASES[case]
    with pytest.raises(RuntimeError, match=message):
        call(ops, points, grad)
    assert torch.equal(ops.plane_coords(points, [0, 1, 0, 2, 1, 2]), _plane_coords(points, TRIPLANE))


def test_more_planes_than_the_operator_takes(device):
    """130 planes: past plane_coords' 128, the coordinates come from the Python Function; the same results."""
    axes = [(i % 3, (i + 1) % 3) for i in range(130)]
    planes = torch.randn(130, 2, 3, 4, dtype=torch.float64, device=device)
    points = random_points(device, 6).requires_grad_()
    ours = sample_planes(planes, points, axes, "sum", *SETTINGS)
    expected = planes_by_calls(F.grid_sample, planes, points, axes, "sum")
    assert_close(ours, expected, **REORDERED_SUMS)
    weights = torch.randn_like(ours)
    assert_close(torch.autograd.grad((ours * weights).sum(), points)[0],
                 torch.autograd.grad((expected * weights).sum(), points)[0], **REORDERED_SUMS)


def chain_product(features):
    """The product over planes (dimension 1) as the Python chain of multiplications."""
    result = features[:, 0]
    for k in range(1, features.shape[1]):
        result = result * features[:, k]
    return result


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("planes", [2, 3, 8])
@pytest.mark.parametrize("layout", ["strided", "point-major"])
def test_plane_product_operators_give_the_bits_of_the_chain(device, dtype, planes, layout):
    """plane_product and its backward multiply as the chain f_0 * f_1 * ... and its autograd do (same order, each
    product rounded to the dtype), from strided features (33 channels: a last block of one), or point-major ones as
    the samplers write them (channels contiguous and aligned: loaded as words on the GPU); the double backward
    matches its plain-operator twin."""
    ops = torch.ops.grid_encoder
    if layout == "strided":
        features = torch.randn(2, planes, 5, 33, device=device).to(dtype).transpose(2, 3)  # (N, K, P, C)
        grad = torch.randn(2, 33, 5, device=device).to(dtype)
    else:
        features = torch.randn(5, 2, planes, 40, device=device).to(dtype).permute(1, 2, 0, 3)  # (P, N, K, C) as such
        grad = torch.randn(2, 5, 40, device=device).to(dtype)
    assert torch.equal(ops.plane_product(features), chain_product(features))
    leaf = features.detach().requires_grad_()
    (expected,) = torch.autograd.grad(chain_product(leaf), leaf, grad)
    d_features = ops.plane_product_backward(grad, features)
    assert d_features.is_contiguous() and torch.equal(d_features, expected)
    if dtype == torch.float64:
        grad_grad = torch.randn_like(features)  # features' layout
        ours = ops.plane_product_double_backward(grad_grad, grad, features, [True, True])
        for a, b in zip(ours, _plane_product_double_backward_reference(grad_grad, grad, features)):
            assert_close(a, b, **REORDERED_SUMS)
        d_grad, d_features = ops.plane_product_double_backward(grad_grad, grad, features, [False, True])
        assert d_grad.numel() == 0 and torch.equal(d_features, ours[1])


def test_plane_product_operators_are_each_others_derivative(device):
    """gradgradcheck of the backward runs the double backward, and differentiates it through its twin."""
    ops = torch.ops.grid_encoder
    features = torch.randn(2, 3, 4, 5, dtype=torch.float64, device=device, requires_grad=True)
    grad = torch.randn(2, 4, 5, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(ops.plane_product, features)
    assert torch.autograd.gradgradcheck(ops.plane_product, features)
    assert torch.autograd.gradgradcheck(ops.plane_product_backward, (grad, features))


PLANE_PRODUCT_BAD_CASES = {  # name: (call on features (2, 3, 4, 5) and grad (2, 4, 5), message)
    "features-rank": (lambda ops, f, g: ops.plane_product(f[0]), r"plane_product: expected features of shape "
                      r"\(N, K, P, C\) with 1 to 8 planes K, got \[3, 4, 5\]"),
    "too-many-planes": (lambda ops, f, g: ops.plane_product(f.repeat(1, 3, 1, 1)),
                        r"with 1 to 8 planes K, got \[2, 9"),
    "grad-shape": (lambda ops, f, g: ops.plane_product_backward(g[:, :3], f),
                   r"plane_product_backward: expected grad of shape \[2, 4, 5\], got \[2, 3, 5\]"),
    "grad-grad-shape": (lambda ops, f, g: ops.plane_product_double_backward(f[:, :2], g, f, [True, True]),
                        r"expected grad_grad of shape \[2, 3, 4, 5\], got \[2, 2, 4, 5\]"),
    "features-dtype": (lambda ops, f, g: ops.plane_product(f.long()),
                       r"expected features of dtype float32, float64, float16 or bfloat16, got Long"),
}


@pytest.mark.parametrize("case", list(PLANE_PRODUCT_BAD_CASES))
def test_plane_product_operators_refuse_bad_arguments(device, case):
    ops = torch.ops.grid_encoder
    features = torch.randn(2, 3, 4, 5, dtype=torch.float64, device=device)
    grad = torch.randn(2, 4, 5, dtype=torch.float64, device=device)
    call, message = PLANE_PRODUCT_BAD_CASES[case]
    with pytest.raises(RuntimeError, match=message):
        call(ops, features, grad)
    assert torch.equal(ops.plane_product(features), chain_product(features))


def test_encoder_operators_refuse_dual_tensors():
    """Forward-mode AD goes through sample_planes(), which hands it plain views and the chain of multiplications; the
    five glue operators and the reduced sampler called directly on dual tensors say so (none drops the tangent)."""
    ops = torch.ops.grid_encoder
    points, coords_grad = torch.randn(10, 3, dtype=torch.float64), torch.randn(3, 10, 2, dtype=torch.float64)
    features, grad = torch.randn(2, 3, 4, 5, dtype=torch.float64), torch.randn(2, 4, 5, dtype=torch.float64)
    with fwAD.dual_level():
        dual = fwAD.make_dual(features, torch.ones_like(features))
        for call in (lambda: ops.plane_coords(fwAD.make_dual(points, torch.ones_like(points)), [0, 1]),
                     lambda: ops.plane_coords_backward(fwAD.make_dual(coords_grad, torch.ones_like(coords_grad)),
                                                       [0, 1] * 3, 3),
                     lambda: ops.plane_product(dual),
                     lambda: ops.plane_product_backward(grad, dual),
                     lambda: ops.plane_product_double_backward(torch.randn_like(features), grad, dual, [True, True]),
                     lambda: ops.grid_sample_reduced(dual.flatten(0, 1)[:, :, :2, None], torch.zeros(6, 1, 2, 2).double(),
                                                     0, 0, True, 3, True)):
            with pytest.raises(RuntimeError, match=r"forward-mode AD of this operator is served by "
                                                   r"grid_encoder.sample_planes\(\)"):
                call()


def test_a_product_of_more_planes_than_the_operator_takes(device):
    """9 planes: past plane_product's 8, the product is the chain of multiplications; every order as the calls."""
    axes = [(i % 3, (i + 1) % 3) for i in range(9)]
    planes = [1 + 0.2 * p for p in random_planes(device, [(3, 4)] * 9, 2)]  # products of 9 factors of order 1
    points = random_points(device, 5)
    assert_all_close(derivatives(lambda p, x: sample_planes(torch.stack(p), x, axes, "product", *SETTINGS), planes,
                                 points),
                     derivatives(lambda p, x: planes_by_calls(grid_sample_reference, p, x, axes, "product"), planes,
                                 points))


def test_encoders_under_no_grad_and_inference_mode(device):
    """Without recording (the operators' autograd kernels go straight to the kernels), the same features."""
    planes = torch.randn(3, 4, 6, 7, dtype=torch.float64, device=device, requires_grad=True)
    points = random_points(device, 10).requires_grad_()
    for reduce in REDUCTIONS:
        expected = sample_planes(planes, points, TRIPLANE, reduce, *SETTINGS)
        with torch.no_grad():
            assert torch.equal(sample_planes(planes, points, TRIPLANE, reduce, *SETTINGS), expected)
        with torch.inference_mode():
            assert torch.equal(sample_planes(planes, points, TRIPLANE, reduce, *SETTINGS), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reduce", ["sum", "mean", "product"])
def test_reductions_without_autograd_give_the_bits_of_the_recorded_ones(device, dtype, reduce):
    """Where nothing records, sums and products over grids of one size take the operator grid_sample_reduced (on CUDA
    one pass, without the grids' features): the same bits as the features reduced one operation at a time, for 3 and
    9 planes (past the product operator's 8), batched planes, volumes and every padding."""
    cases = [(lambda g, x: sample_planes(g, x, TRIPLANE, reduce, *SETTINGS), (3, 8, 6, 7), (50, 3)),
             (lambda g, x: sample_planes(g, x, [(i % 3, (i + 1) % 3) for i in range(9)], reduce, "bilinear",
                                         "reflection", True), (9, 5, 4, 3), (20, 3)),
             (lambda g, x: sample_planes(g, x, TRIPLANE, reduce, "bicubic", "zeros", False), (2, 3, 16, 6, 7),
              (2, 30, 3)),
             (lambda g, x: sample_volumes(g, x, reduce, "nearest", "border", True), (2, 8, 4, 5, 6), (25, 3))]
    for field, grid_shape, point_shape in cases:
        grids = (1 + 0.3 * torch.randn(grid_shape, device=device)).to(dtype)  # products of 9 factors of order 1
        points = (torch.rand(point_shape, device=device) * 2.2 - 1.1).to(dtype)
        with torch.no_grad():
            ours = field(grids, points)
        expected = field(grids.requires_grad_(), points).detach()  # recorded: the features, then the reduction
        assert ours.is_contiguous() and same_bits(ours, expected)


def test_the_reduced_sampler_refuses_to_be_recorded_and_bad_groups(device):
    ops = torch.ops.grid_encoder
    planes = torch.randn(6, 4, 5, 6, dtype=torch.float64, device=device)
    grid = torch.rand(6, 1, 7, 2, dtype=torch.float64, device=device) * 2 - 1
    with pytest.raises(RuntimeError, match=r"grid_sample_reduced: expected a group size that divides the batch size "
                                           r"6, got 4"):
        ops.grid_sample_reduced(planes, grid, 0, 0, True, 4, True)
    with pytest.raises(RuntimeError, match=r"grid_sample_reduced: this operator is not differentiable"):
        ops.grid_sample_reduced(planes.requires_grad_(), grid, 0, 0, True, 3, True)
    with torch.no_grad():  # the next good call works
        reduced = ops.grid_sample_reduced(planes, grid, 0, 0, True, 3, False)
    items = ops.grid_sample_forward(planes.detach(), grid, 0, 0, True, True).unflatten(0, (2, 3))
    assert same_bits(reduced, items[:, 0] + items[:, 1] + items[:, 2])
    assert reduced.permute(2, 3, 0, 1).is_contiguous()  # point-major


def test_encoders_on_meta_tensors_give_shapes_at_every_order():
    planes = torch.empty(3, 4, 6, 7, dtype=torch.float64, device="meta", requires_grad=True)
    points = torch.empty(2, 10, 3, dtype=torch.float64, device="meta", requires_grad=True)
    for reduce, width in (("concat", 12), ("product", 4)):
        features = sample_planes(planes[None].expand(2, 3, 4, 6, 7), points, TRIPLANE, reduce)
        assert features.shape == (2, 10, width) and features.device.type == "meta"
        (normals,) = torch.autograd.grad(features.sum(), points, create_graph=True)
        assert normals.shape == points.shape
        grad_planes, grad_points = torch.autograd.grad(normals.square().sum(), (planes, points))
        assert grad_planes.shape == planes.shape and grad_points.shape == points.shape
        with torch.no_grad():  # the reduced sampler's shapes
            features = sample_planes(planes[None].expand(2, 3, 4, 6, 7), points, TRIPLANE, reduce)
        assert features.shape == (2, 10, width) and features.device.type == "meta" and features.is_contiguous()


BAD_CASES = {  # name: (call, error, message)
    "channels-differ": (lambda p, x: sample_planes([p[0], p[1][:2], p[2]], x, reduce="sum"), ValueError,
                        r"reduce='sum' needs grids with equal channel counts, got \[4, 2, 4\]"),
    "axis-out-of-range": (lambda p, x: sample_planes(p, x, axes=((0, 1), (0, 3), (1, 2))), ValueError,
                          r"axes must be pairs of column indices in \[0, 3\) for points of shape \(10, 3\)"),
    "axes-count": (lambda p, x: sample_planes(p, x, axes=((0, 1), (0, 2))), ValueError,
                   r"got 3 planes and 2 axes pairs"),
    "points-width": (lambda p, x: sample_volumes(p[:, :, None].expand(3, 4, 2, 6, 7), x[:, :2]), ValueError,
                     r"sample_volumes\(\): expected points of shape \(P, 3\) or \(N, P, 3\), got shape \(10, 2\)"),
    "planes-rank": (lambda p, x: sample_planes(p[0], x), ValueError,
                    r"expected planes of shape \(K, C, H, W\) for points of shape \(10, 3\), got shape \(4, 6, 7\)"),
    "reduce": (lambda p, x: sample_planes(p, x, reduce="max"), ValueError,
               r"reduce must be 'concat', 'sum', 'mean' or 'product', got 'max'"),
    "dtype": (lambda p, x: sample_planes(p.float(), x), TypeError,
              r"expected planes with the dtype and device of points \(torch.float64 on .*\), got torch.float32"),
    "integer-points": (lambda p, x: sample_planes(p.long(), x.long()), TypeError,
                       r"sample_planes\(\): expected floating-point points, got torch.int64"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_arguments_raise_clear_errors(device, case):
    call, error, message = BAD_CASES[case]
    planes = torch.randn(3, 4, 6, 7, dtype=torch.float64, device=device)
    points = random_points(device, 10)
    with pytest.raises(error, match=message):
        call(planes, points)
    assert sample_planes(planes, points).shape == (10, 12)  # the next good call works
