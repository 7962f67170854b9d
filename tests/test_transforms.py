"""torch.func transforms and forward-mode AD: every result equals the same transform of the reference."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.func as func
from torch.testing import assert_close

from helpers import SETTINGS, SETTING_IDS, TRANSFORMED, random_grid
from grid_encoder import grid_sample
from grid_encoder.reference import grid_sample_reference

SHAPES = {2: ((2, 3, 5, 6), (2, 3, 4)), 3: ((2, 2, 3, 4, 5), (2, 2, 2, 3))}  # input, grid without its last dim


def problem(device, dims, batch=None):
    """A random input and grid (reaching outside the input); with `batch`, a leading vmapped dimension."""
    input_shape, grid_shape = SHAPES[dims]
    lead = () if batch is None else (batch,)
    input = torch.randn(*lead, *input_shape, dtype=torch.float64, device=device)
    grid = random_grid(*lead, *grid_shape, dims=dims, device=device, reach=1.2)
    return input, grid


def assert_all_close(ours, theirs, what):
    ours, theirs = torch.utils._pytree.tree_flatten(ours)[0], torch.utils._pytree.tree_flatten(theirs)[0]
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert_close(a, b, msg=lambda m: f"{what}, result {i}: {m}", **TRANSFORMED)


def both(settings):
    """grid_sample and its reference, as functions of (input, grid)."""
    return (lambda x, g: grid_sample(x, g, *settings)), (lambda x, g: grid_sample_reference(x, g, *settings))


def scalar(fn):
    return lambda x, g: fn(x, g).sin().sum()


def eikonal(fn):
    """The SDF loss: the norm of the gradient in the points, pushed towards 1."""
    def loss(x, g):
        grad_grid = func.grad(lambda q: fn(x, q).sum(), argnums=0)(g)
        return ((grad_grid.norm(dim=-1) - 1) ** 2).sum()
    return loss


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("mode,padding,align", SETTINGS, ids=SETTING_IDS)
def test_jvp_matches_reference(device, dims, mode, padding, align):
    """Forward mode, tangents on input, on grid and on both; through torch.func.jvp and dual tensors."""
    if mode == "bicubic" and dims == 3 and (padding, align) != ("border", False):
        pytest.skip("tricubic: one setting is enough for the transform (the kernels are tested elsewhere)")
    ours, reference = both((mode, padding, align))
    input, grid = problem(device, dims)
    input_tangent, grid_tangent = torch.randn_like(input), torch.randn_like(grid)
    for tangents in [(input_tangent, torch.zeros_like(grid)), (torch.zeros_like(input), grid_tangent),
                     (input_tangent, grid_tangent)]:
        expected = func.jvp(reference, (input, grid), tangents)
        assert_all_close(func.jvp(ours, (input, grid), tangents), expected, "torch.func.jvp")
        with fwAD.dual_level():
            out = ours(fwAD.make_dual(input, tangents[0]), fwAD.make_dual(grid, tangents[1]))
            primal, tangent = fwAD.unpack_dual(out)
        assert tangent is not None, "the output of dual tensors has no tangent"
        assert_all_close((primal, tangent), expected, "make_dual")
    if mode != "nearest":  # the grid tangent's share is not zero: a dropped term shows
        grid_share = func.jvp(reference, (input, grid), (torch.zeros_like(input), grid_tangent))[1]
        assert grid_share.abs().max() > 0.1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_jvp_in_every_dtype(device, dtype):
    """The tangent kernels in float32 and the reduced types (CPU: computed in float32) against float64."""
    input, grid = problem(device, 2)
    tangents = (torch.randn_like(input), torch.randn_like(grid))
    expected = func.jvp(lambda x, g: grid_sample_reference(x, g, "bicubic", "border", False), (input, grid), tangents)
    got = func.jvp(lambda x, g: grid_sample(x, g, "bicubic", "border", False),
                   tuple(t.to(dtype) for t in (input, grid)), tuple(t.to(dtype) for t in tangents))
    tolerance = 1e-5 if dtype == torch.float32 else 5e-2
    for a, b in zip(got, expected):
        assert a.dtype == dtype
        assert_close(a.double(), b, rtol=tolerance, atol=tolerance * b.abs().max().item())


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_reverse_transforms_match_reference(device, dims, mode):
    settings = (mode, "zeros" if dims == 2 else "reflection", dims == 2)
    ours, reference = both(settings)
    input, grid = problem(device, dims)
    for name, transform in [("grad", lambda f: func.grad(scalar(f), argnums=(0, 1))),
                            ("jacrev", lambda f: func.jacrev(f, argnums=(0, 1))),
                            ("jacfwd", lambda f: func.jacfwd(f, argnums=(0, 1)))]:
        assert_all_close(transform(ours)(input, grid), transform(reference)(input, grid), name)
    cotangent = torch.randn_like(ours(input, grid))
    out, vjp = func.vjp(ours, input, grid)
    expected_out, expected_vjp = func.vjp(reference, input, grid)
    assert_all_close((out, vjp(cotangent)), (expected_out, expected_vjp(cotangent)), "vjp")


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_second_order_transforms_match_reference(device, dims, mode):
    """hessian (forward over reverse), reverse over forward, forward over forward, and the Hessian-vector
    product of plain forward-mode AD over a backward pass with create_graph."""
    settings = (mode, "border", False)
    ours, reference = both(settings)
    input, grid = problem(device, dims)
    for name, transform in [
            ("hessian", lambda f: func.hessian(scalar(f), argnums=(0, 1))),
            ("jacrev(jacfwd)", lambda f: func.jacrev(func.jacfwd(scalar(f), argnums=1), argnums=(0, 1))),
            ("jacfwd(jacfwd)", lambda f: func.jacfwd(func.jacfwd(scalar(f), argnums=1), argnums=(0, 1)))]:
        expected = transform(reference)(input, grid)
        assert_all_close(transform(ours)(input, grid), expected, name)
    assert expected[1][1].abs().max() > 0.1  # the grid-grid block: a missing term shows

    input_tangent, grid_tangent = torch.randn_like(input), torch.randn_like(grid)
    grad_grid = lambda x, g: func.grad(scalar(reference), argnums=1)(x, g)
    expected_hvp = func.jvp(grad_grid, (input, grid), (input_tangent, grid_tangent))[1]
    with fwAD.dual_level():
        x = fwAD.make_dual(input.clone().requires_grad_(), input_tangent)
        g = fwAD.make_dual(grid.clone().requires_grad_(), grid_tangent)
        (grad,) = torch.autograd.grad(scalar(ours)(x, g), g, create_graph=True)
        hvp = fwAD.unpack_dual(grad).tangent
    assert hvp is not None, "the gradient of dual tensors has no tangent"
    assert_all_close(hvp, expected_hvp, "forward over torch.autograd.grad")


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_vmap_matches_reference(device, dims, mode):
    settings = (mode, "zeros", True)
    ours, reference = both(settings)
    input, grid = problem(device, dims)
    inputs, grids = problem(device, dims, batch=3)
    cases = [("batched input and grid", (0, 0), (inputs, grids)),
             ("shared input", (None, 0), (input, grids)),
             ("shared grid", (0, None), (inputs, grid)),
             ("input batched along dim 2", (2, 0), (inputs.movedim(0, 2), grids))]
    for name, in_dims, args in cases:
        for what, transform in [("vmap", lambda f: f),
                                ("vmap(grad)", lambda f: func.grad(scalar(f), argnums=(0, 1))),
                                ("vmap(grad(eikonal))", lambda f: func.grad(eikonal(f), argnums=(0, 1))),
                                ("vmap(jvp)", lambda f: lambda x, g: func.jvp(f, (x, g), (x.cos(), g.sin())))]:
            if what == "vmap(grad(eikonal))" and mode == "nearest":
                continue  # nearest has no grid derivative to take a norm of
            expected = func.vmap(transform(reference), in_dims)(*args)
            assert_all_close(func.vmap(transform(ours), in_dims)(*args), expected, f"{what}, {name}")
    nested = lambda f: func.vmap(func.vmap(f, in_dims=(None, 0)), in_dims=(0, 1))
    batches = problem(device, dims, batch=2)[1].unsqueeze(1).expand(-1, 3, *grids.shape[1:]).contiguous()
    assert_all_close(nested(ours)(inputs, batches), nested(reference)(inputs, batches), "nested vmap")


@pytest.mark.parametrize("empty", ["batch", "channels", "points"])
def test_vmap_of_empty_tensors(device, empty):
    """Folding the vmapped dimension keeps every size, also where one of them is 0."""
    n, c, p = {"batch": (0, 2, 3), "channels": (2, 0, 3), "points": (2, 2, 0)}[empty]
    inputs = torch.randn(3, n, c, 4, 5, dtype=torch.float64, device=device)
    grids = random_grid(3, n, p, 2, device=device)
    for in_dims in [(0, 0), (None, 0)]:
        args = (inputs[0] if in_dims[0] is None else inputs, grids)
        ours = func.vmap(lambda x, g: grid_sample(x, g), in_dims)(*args)
        assert ours.shape == (3, n, c, p, 2)


def test_functional_call_with_per_sample_eikonal_gradients(device):
    """A triplane-style module under functional_call: per-sample gradients of an eikonal loss, as in
    per-example gradient code, equal the reference's."""
    class Field(torch.nn.Module):
        def __init__(self, sample):
            super().__init__()
            self.sample = sample
            self.planes = torch.nn.Parameter(torch.empty(3, 4, 8, 8, dtype=torch.float64, device=device))

        def forward(self, points):  # points (P, 3) -> (P,)
            pairs = torch.stack([points[:, [0, 1]], points[:, [0, 2]], points[:, [1, 2]]])[:, None]
            return self.sample(self.planes, pairs, "bilinear", "border", True).sum((0, 1, 2))

    points = torch.rand(5, 4, 3, dtype=torch.float64, device=device) * 1.6 - 0.8  # 5 samples of 4 points
    planes = torch.randn(3, 4, 8, 8, dtype=torch.float64, device=device)
    results = []
    for sample in (grid_sample, grid_sample_reference):
        field = Field(sample)
        params = {"planes": planes}

        def loss(params, points):
            grad_points = func.grad(lambda p: func.functional_call(field, params, (p,)).sum())(points)
            return ((grad_points.norm(dim=-1) - 1) ** 2).sum()

        results.append(func.vmap(func.grad(loss), in_dims=(None, 0))(params, points))
    assert results[1]["planes"].abs().max() > 0.1
    assert_all_close(results[0], results[1], "per-sample eikonal gradients")


def test_operators_refuse_dual_tensors_instead_of_dropping_tangents():
    """Only grid_sample() routes forward mode; an operator called directly on dual tensors says so."""
    input, grid = problem("cpu", 2)
    ops = torch.ops.grid_encoder
    grad_output = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    with fwAD.dual_level():
        dual_grid = fwAD.make_dual(grid, torch.ones_like(grid))
        calls = [lambda: ops.grid_sample_forward(input, dual_grid, 0, 0, True),
                 lambda: ops.grid_sample_backward(grad_output, input, dual_grid, 0, 0, True, [True, True]),
                 lambda: ops.grid_sample_double_backward(None, dual_grid, grad_output, input, grid, 0, 0, True,
                                                         [True, True, True]),
                 lambda: ops.grid_sample_tangent(None, grid, input, dual_grid, 0, 0, True)]
        for call in calls:
            with pytest.raises(RuntimeError, match=r"forward-mode AD of this operator is served by "
                                                   r"grid_encoder.grid_sample\(\)"):
                call()
    with pytest.raises(RuntimeError, match=r"grid_sample_tangent: this operator is not differentiable by itself"):
        ops.grid_sample_tangent(None, grid, input, grid.requires_grad_(), 0, 0, True)


def test_plain_autograd_keeps_the_cpp_path():
    """Outside transforms and dual levels, grid_sample records the C++ autograd node, not the Python one."""
    input, grid = problem("cpu", 2)
    out = grid_sample(input, grid.requires_grad_())
    assert type(out.grad_fn).__name__ == "CppFunction"
    with fwAD.dual_level():
        assert type(grid_sample(input, grid).grad_fn).__name__ == "SampleBackward"
