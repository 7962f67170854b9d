"""Forward and first-order gradients equal torch.nn.functional.grid_sample, for images and volumes (torch has no
tricubic: that equals the reference here, and torch's bicubic on a volume of depth 1)."""
import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from helpers import (PADDINGS, REORDERED_SUMS, RESULT_NAMES, SAME_ARITHMETIC, SETTING_IDS, SETTINGS,
                     deterministic_algorithms, first_and_second_order, first_order, random_grid)
from grid_encoder import grid_sample
from grid_encoder.reference import grid_sample_reference

def assert_matches_torch(input, grid, mode, padding, align, **tol):
    grad_output = torch.randn(input.shape[0], input.shape[1], *grid.shape[1:-1], dtype=input.dtype,
                              device=input.device)
    ours = first_order(grid_sample, input, grid, grad_output, mode, padding, align)
    theirs = first_order(F.grid_sample, input, grid, grad_output, mode, padding, align)
    for name, a, b in zip(("output", "grad_input", "grad_grid"), ours, theirs):
        assert_close(a, b, msg=lambda m: f"{name}: {m}", **tol)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("mode,padding,align", SETTINGS, ids=SETTING_IDS)
def test_matches_torch(device, dims, mode, padding, align):
    if dims == 2:
        input, grid = torch.randn(2, 3, 7, 9, dtype=torch.float64, device=device), random_grid(2, 5, 6, device=device)
    else:
        input = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64, device=device)
        grid = random_grid(2, 3, 4, 5, dims=3, device=device)
    if mode == "bicubic" and dims == 3:  # torch has no tricubic
        expected = first_and_second_order(grid_sample_reference, input, grid, mode, padding, align)[:3]
        got = first_and_second_order(grid_sample, input, grid, mode, padding, align)[:3]
        for name, a, b in zip(RESULT_NAMES, got, expected):
            assert_close(a, b, msg=lambda m: f"{name}: {m}", **REORDERED_SUMS)
    else:
        assert_matches_torch(input, grid, mode, padding, align, **SAME_ARITHMETIC)


@pytest.mark.parametrize("mode,padding,align", SETTINGS, ids=SETTING_IDS)
def test_matches_torch_on_lattice_points(device, mode, padding, align):
    """Points exactly on pixel centers, cell edges and the borders, where the kinks are: the one-sided
    derivatives chosen there are torch's too."""
    input = torch.randn(1, 2, 4, 5, dtype=torch.float64, device=device)
    axis = torch.linspace(-1.5, 1.5, 13, dtype=torch.float64, device=device)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).unsqueeze(0)
    grad_output = torch.randn(1, 2, 13, 13, dtype=torch.float64, device=device)
    ours = first_order(grid_sample, input, grid, grad_output, mode, padding, align)
    theirs = first_order(F.grid_sample, input, grid, grad_output, mode, padding, align)
    assert_close(ours[0], theirs[0], **SAME_ARITHMETIC)
    assert_close(ours[1], theirs[1], **SAME_ARITHMETIC)
    assert_close(ours[2], theirs[2], **SAME_ARITHMETIC)


@pytest.mark.parametrize("mode,padding,align", SETTINGS, ids=SETTING_IDS)
def test_non_finite_input_values_reach_only_the_points_that_read_them(device, mode, padding, align):
    """An infinite first pixel and a NaN inside: points whose taps leave the input, or miss those pixels, stay
    finite, exactly as torch's do (a tap outside must not multiply anything by zero)."""
    input = torch.randn(2, 3, 7, 9, dtype=torch.float64, device=device)
    input[:, :, 0, 0] = torch.inf
    input[1, 1, 3, 4] = torch.nan
    grid = random_grid(2, 8, 6, device=device)  # inside and outside the input

    def center(i, size):  # the grid value of pixel i's center
        return 2 * i / (size - 1) - 1 if align else (2 * i + 1) / size - 1

    grid[0, 0, 0] = torch.tensor([center(0, 9), center(0, 7)])  # on the infinite pixel
    grid[1, 0, 1] = torch.tensor([center(4, 9), center(3, 7)])  # on the NaN
    ours = grid_sample(input, grid, mode, padding, align)
    theirs = F.grid_sample(input, grid, mode, padding, align)
    assert ours.isfinite().any() and not ours.isfinite().all()
    assert_close(ours, theirs, equal_nan=True, **SAME_ARITHMETIC)


@pytest.mark.parametrize("layout", ["channels_last_3d", "sliced"])
def test_non_contiguous_volumes(device, layout):
    base = torch.randn(2, 4, 6, 7, 8, dtype=torch.float64, device=device)
    input = base.to(memory_format=torch.channels_last_3d) if layout == "channels_last_3d" else base[:, 1:, ::2]
    grid = random_grid(2, 6, 3, 4, dims=3, device=device)[:, ::2]
    assert not input.is_contiguous() and not grid.is_contiguous()
    assert_matches_torch(input, grid, "bilinear", "border", False, **SAME_ARITHMETIC)


@pytest.mark.parametrize("padding", PADDINGS)
def test_tricubic_on_a_volume_of_depth_one_is_torchs_bicubic(padding):
    """A volume of depth 1 sampled at z = 0 with align_corners=True is the 2-D image: the tricubic reference (and
    so grid_encoder) gives torch's bicubic there, with the same first derivatives."""
    image = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    grid_2d = random_grid(2, 4, 5)
    grid_3d = torch.cat([grid_2d, torch.zeros_like(grid_2d[..., :1])], -1)
    grad_output = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    expected = first_order(F.grid_sample, image, grid_2d, grad_output, "bicubic", padding, True)
    for fn in (grid_sample_reference, grid_sample):
        got = first_order(fn, image.unsqueeze(2), grid_3d.unsqueeze(1), grad_output.unsqueeze(2), "bicubic",
                          padding, True)
        assert_close(got[0][:, :, 0], expected[0], **SAME_ARITHMETIC)
        assert_close(got[1][:, :, 0], expected[1], **SAME_ARITHMETIC)
        assert_close(got[2][:, 0, ..., :2], expected[2], **SAME_ARITHMETIC)


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("layout", ["channels_last", "sliced", "transposed"])
def test_non_contiguous_inputs(device, mode, layout):
    base = torch.randn(2, 6, 9, 11, dtype=torch.float64, device=device)
    grid = random_grid(2, 7, 8, device=device)
    if layout == "channels_last":
        input = base.to(memory_format=torch.channels_last)
    elif layout == "sliced":
        input = base[:, ::2, 1:, ::3]
        grid = random_grid(2, 14, 8, device=device)[:, ::2]
    else:
        input = base.transpose(2, 3)
        grid = random_grid(2, 8, 7, device=device).transpose(1, 2)
    assert not input.is_contiguous()
    assert_matches_torch(input, grid, mode, "reflection", False, **SAME_ARITHMETIC)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("dims", [2, 3])
def test_point_major_output(device, dims, mode):
    """The forward operator writes a point-major output when asked (laid out (spatial..., N, C): the encoders'
    features): the same values and gradients. grid_sample's own output stays contiguous, as torch's, whatever the
    input's layout."""
    spatial, out_spatial = ((5, 6), (4, 3)) if dims == 2 else ((3, 4, 5), (2, 2, 3))
    channels_last = torch.channels_last if dims == 2 else torch.channels_last_3d
    input = torch.randn(2, 9, *spatial, dtype=torch.float64, device=device)
    grid = random_grid(2, *out_spatial, dims=dims, device=device)
    grad_output = torch.randn(2, 9, *out_spatial, dtype=torch.float64, device=device)
    op = torch.ops.grid_encoder.grid_sample_forward
    settings = (["bilinear", "nearest", "bicubic"].index(mode), 0, True)
    plain = first_order(lambda x, g: op(x, g, *settings), input, grid, grad_output)
    ours = first_order(lambda x, g: op(x, g, *settings, True), input, grid, grad_output)
    layout = ours[0].permute(*range(2, dims + 2), 0, 1)  # (spatial..., N, C)
    assert plain[0].is_contiguous() and layout.is_contiguous() and not ours[0].is_contiguous()
    for a, b in zip(plain, ours):
        assert_close(a, b, rtol=0, atol=0)
    assert grid_sample(input.contiguous(memory_format=channels_last), grid, mode).is_contiguous()


GRAD_OUTPUT_LAYOUTS = {  # (2, 3, 4, 5) gradients as they arrive from consumers of the output
    "expanded": lambda t: t[:, :1].expand(2, 3, 4, 5),  # the gradient of a sum over channels
    "point_major": lambda t: t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2),  # of a permuted output
    "transposed": lambda t: t.transpose(2, 3).contiguous().transpose(2, 3),  # points do not share one stride
}


@pytest.mark.parametrize("deterministic", [False, True], ids=["default", "deterministic"])
@pytest.mark.parametrize("layout", GRAD_OUTPUT_LAYOUTS)
def test_non_contiguous_grad_output(device, layout, deterministic):
    """Read in place where the points share one stride, copied where they do not: every order agrees with torch (first)
    and with the same gradient made contiguous (second). Under deterministic algorithms CUDA's input gradients take
    the binned scatter instead of atomics."""
    input = torch.randn(2, 3, 6, 7, dtype=torch.float64, device=device, requires_grad=True)
    grid = random_grid(2, 4, 5, device=device).requires_grad_()
    grad_output = GRAD_OUTPUT_LAYOUTS[layout](torch.randn(2, 3, 4, 5, dtype=torch.float64, device=device))
    assert not grad_output.is_contiguous()
    theirs = torch.autograd.grad(F.grid_sample(input, grid, "bicubic", "border", align_corners=True),
                                 (input, grid), grad_output)
    with deterministic_algorithms() if deterministic else contextlib.nullcontext():
        ours = torch.autograd.grad(grid_sample(input, grid, "bicubic", "border"), (input, grid), grad_output)
        second = []
        for go in (grad_output, grad_output.contiguous()):
            go = go.detach().requires_grad_()
            first = torch.autograd.grad(grid_sample(input, grid, "bicubic", "border"), (input, grid), go,
                                        create_graph=True)
            second.append(torch.autograd.grad(first[0].square().sum() + first[1].square().sum(), (go, input, grid)))
    for a, b in zip(ours, theirs):
        assert_close(a, b, **SAME_ARITHMETIC)
    for a, b in zip(*second):
        assert_close(a, b, **SAME_ARITHMETIC)


@pytest.mark.parametrize("mode,padding,align", SETTINGS[::4], ids=SETTING_IDS[::4])
def test_float32_matches_torch(device, mode, padding, align):
    input = torch.randn(2, 4, 8, 8, device=device)
    grid = random_grid(2, 6, 6, dtype=torch.float32, device=device)
    assert_matches_torch(input, grid, mode, padding, align, rtol=1e-5, atol=1e-5)


INPUT_LAYOUTS = {  # (3, 5, 9, 11) inputs as they come
    "contiguous": lambda t: t,
    "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
    "strided": lambda t: t.new_zeros(3, 5, 18, 33)[:, :, ::2, 1::3].copy_(t),
}


@pytest.mark.parametrize("points", ["contiguous", "point_major"])
@pytest.mark.parametrize("layout", INPUT_LAYOUTS)
@pytest.mark.parametrize("mode,padding,align", SETTINGS, ids=SETTING_IDS)
def test_float32_point_wise_results_match_float64(device, mode, padding, align, layout, points):
    """float32 output, grad_grid and the eikonal step's d_grid (from grad_grad_grid alone) equal float64's to
    float32's precision (the CPU takes eight points at a time where the processor allows: float32, 2-D): points
    inside, outside, NaN, infinite and huge (not reflected: float32 folds those elsewhere),
    35 per batch item (runs of eight and a rest), every input layout, point tensors (output, grad_output) contiguous
    or point-major. Taps outside an input of infinities read nothing."""
    grid = random_grid(3, 7, 5, dtype=torch.float32, device=device, reach=1.3)
    huge = 1e10 if padding != "reflection" else 0.5
    grid[0, 0, :4, 0] = torch.tensor([float("nan"), float("inf"), -float("inf"), huge])
    grid[1, 2, 1:3, 1] = torch.tensor([-huge, float("nan")])
    values = torch.randn(3, 5, 9, 11, dtype=torch.float64, device=device)
    grad_output = torch.randn(3, 5, 7, 5, dtype=torch.float64, device=device)
    if points == "point_major":
        grad_output = grad_output.permute(2, 3, 0, 1).contiguous().permute(2, 3, 0, 1)
    grad_grad_grid = torch.randn_like(grid)
    ops = torch.ops.grid_encoder
    settings = (["bilinear", "nearest", "bicubic"].index(mode), PADDINGS.index(padding), align)

    def results(dtype):
        input, g = INPUT_LAYOUTS[layout](values.to(dtype)), grid.to(dtype)
        go, ggg = grad_output.to(dtype), grad_grad_grid.to(dtype)
        output = ops.grid_sample_forward(input, g, *settings, points == "point_major")
        grad_grid = ops.grid_sample_backward(go, input, g, *settings, [False, True])[1]
        d_grid = ops.grid_sample_double_backward(None, ggg, go, input, g, *settings, [False, False, True])[2]
        return output, grad_grid, d_grid

    for name, ours, expected in zip(("output", "grad_grid", "d_grid"), results(torch.float32), results(torch.float64)):
        largest = expected.abs().max().item()  # bicubic's d_grid sums terms of both signs: relative to the largest
        assert_close(ours, expected.float(), rtol=1e-5, atol=1e-5 * largest, msg=lambda m: f"{name}: {m}")
    if padding == "zeros":  # x more than two pixels left of the input: every tap outside
        outside = grid.clone()
        outside[..., 0] = torch.rand_like(grid[..., 0]) * 0.5 - 2
        infinities = INPUT_LAYOUTS[layout](torch.full_like(values, float("inf")).float())
        output = ops.grid_sample_forward(infinities, outside, *settings, points == "point_major")
        grad_grid = ops.grid_sample_backward(grad_output.float(), infinities, outside, *settings, [False, True])[1]
        assert torch.equal(output, torch.zeros_like(output)) and torch.equal(grad_grid, torch.zeros_like(grad_grid))


def _same_bits(a, b):
    return torch.equal(a.contiguous().view(torch.int32), b.contiguous().view(torch.int32))


def _pointwise_results(input, grid, grad_output, grad_grad_grid, settings):
    """The operators' point-wise results: output, grad_grid and the eikonal step's d_grid."""
    ops = torch.ops.grid_encoder
    return (ops.grid_sample_forward(input, grid, *settings),
            ops.grid_sample_backward(grad_output, input, grid, *settings, [False, True])[1],
            ops.grid_sample_double_backward(None, grad_grad_grid, grad_output, input, grid, *settings,
                                            [False, False, True])[2])


@pytest.mark.parametrize("mode,padding,align", SETTINGS, ids=SETTING_IDS)
def test_cpu_points_by_eights_give_the_scalar_bits(mode, padding, align):
    """On the CPU, float32 2-D points go eight at a time (AVX2, where the processor has it) and a run's rest one at a
    time, each computing taps.h's arithmetic: the same points in runs of eight and one by one give the same bits
    (output, grad_grid, the eikonal step's d_grid). Points at and one ulp beside the reflection folds and the cell
    edges, huge, NaN and infinite; inputs of 1 to 41 pixels a side (a zero-width fold at size 1)."""
    folds = torch.tensor([1.0, -1.0, 3.0, -3.0, 5.0, -7.0, 0.5, -0.25, 999.0, -12345.0])
    special = torch.cat([folds, torch.nextafter(folds, folds + 1), torch.nextafter(folds, folds - 1),
                         torch.tensor([0.0, -0.0, 1e5, -3e6, 1e8, -1e9, 3e38, float("nan"), float("inf"),
                                       -float("inf")])])
    settings = (["bilinear", "nearest", "bicubic"].index(mode), PADDINGS.index(padding), align)
    for size in [(37, 41), (1, 9), (2, 1)]:
        input = torch.randn(1, 3, *size)
        grid = (torch.rand(1, 1, 128, 2) * 2 - 1) * 3.3
        picked = torch.randint(0, 256, (120,))
        grid.view(-1)[picked] = special[torch.randint(0, len(special), (120,))]
        grad_output, grad_grad_grid = torch.randn(1, 3, 1, 128), torch.randn_like(grid)
        # one batch item of 128 points: runs of 16
        by_eights = _pointwise_results(input, grid, grad_output, grad_grad_grid, settings)
        one_by_one = _pointwise_results(input.expand(128, *input.shape[1:]), grid.view(128, 1, 1, 2),  # 128 items
                                        grad_output.permute(3, 1, 2, 0), grad_grad_grid.view(128, 1, 1, 2), settings)
        for name, a, b in zip(("output", "grad_grid", "d_grid"), by_eights, one_by_one):
            assert _same_bits(a.reshape(-1), b.permute(*([1, 0, 2, 3] if name == "output" else [1, 2, 0, 3]))
                              .reshape(-1)), (name, size)


@pytest.mark.parametrize("dims", [2, 3])
def test_cpu_working_copy_gives_the_same_bits(dims):
    """On the CPU, a call whose taps cover an input of 8 to 64 MiB with 8 channels or more twice over reads a
    channels-last copy of it; every point's results keep their bits: the same points in a call too small for the copy
    (output, grad_grid, the eikonal step's d_grid; float32 and float64; bilinear and bicubic copy, nearest does not)."""
    spatial = (512, 512) if dims == 2 else (64, 64, 64)  # 8 MiB of float32 at 8 channels
    for dtype in (torch.float32, torch.float64):
        input = torch.randn(1, 8, *spatial, dtype=dtype)
        ones = [1] * (dims - 1)
        points = 131072 if dims == 2 else 65536  # bilinear and trilinear taps: twice the input's positions
        grid = (torch.rand(1, *ones, points, dims, dtype=dtype) * 2 - 1) * 1.1
        grad_output, grad_grad_grid = torch.randn(1, 8, *ones, points, dtype=dtype), torch.randn_like(grid)
        for mode in range(3):
            settings = (mode, 0, True)
            copied = _pointwise_results(input, grid, grad_output, grad_grad_grid, settings)
            # the first 512 points alone: too few taps to copy
            few = _pointwise_results(input, grid[..., :512, :], grad_output[..., :512], grad_grad_grid[..., :512, :],
                                     settings)
            for name, a, b in zip(("output", "grad_grid", "d_grid"), copied, few):
                assert _same_bits(a[..., :512, :] if name != "output" else a[..., :512], b), (name, mode, dtype)


@pytest.mark.parametrize("dims", [2, 3])
def test_cpu_scatter_by_blocks_gives_the_bits_of_runs(dims):
    """On the CPU, the input-shaped gradients of a channels-first input take a block of up to 32 768 points into one
    channel's plane before the next channel, those of a channels-last input run by run (16 points): every element
    receives its terms in point order either way, so the bits agree (grad_input, d_input; two blocks, the second
    ending in a partial run)."""
    ops = torch.ops.grid_encoder
    spatial, layout = ((37, 41), torch.channels_last) if dims == 2 else ((9, 10, 11), torch.channels_last_3d)
    ones = [1] * (dims - 1)
    input = torch.randn(2, 3, *spatial)
    grid = (torch.rand(2, *ones, 40001, dims) * 2 - 1) * 1.2
    grad_output, grad_grad_grid = torch.randn(2, 3, *ones, 40001), torch.randn_like(grid)
    for mode in (0, 1):  # bilinear, nearest (bicubic scatters point by point)
        def scatters(input):
            settings = (mode, 0, True)
            return (ops.grid_sample_backward(grad_output, input, grid, *settings, [True, False])[0],
                    ops.grid_sample_double_backward(None, grad_grad_grid, grad_output, input, grid, *settings,
                                                    [False, True, False])[1])

        by_blocks, by_runs = scatters(input), scatters(input.contiguous(memory_format=layout))
        assert not by_blocks[0].is_contiguous(memory_format=layout) and by_runs[0].is_contiguous(memory_format=layout)
        for a, b in zip(by_blocks, by_runs):
            assert _same_bits(a, b), mode


def test_default_arguments_are_bilinear_zeros_align_corners(device):
    input = torch.randn(2, 3, 5, 6, dtype=torch.float64, device=device)
    grid = random_grid(2, 4, 4, device=device)
    expected = F.grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    assert_close(grid_sample(input, grid), expected, **SAME_ARITHMETIC)
    assert (grid_sample(input, grid) - F.grid_sample(input, grid, align_corners=False)).abs().max() > 1e-3


@pytest.mark.parametrize("size", [(1, 1), (1, 5), (5, 1)])
@pytest.mark.parametrize("mode,padding,align", SETTINGS[::3], ids=SETTING_IDS[::3])
def test_size_one_axes(device, size, mode, padding, align):
    input = torch.randn(1, 2, *size, dtype=torch.float64, device=device)
    grid = random_grid(1, 3, 4, device=device)
    assert_matches_torch(input, grid, mode, padding, align, **SAME_ARITHMETIC)


def test_only_requested_gradients(device):
    """Backward computes grad_input alone, or grad_grid alone, with the same values as together."""
    input = torch.randn(1, 3, 5, 5, dtype=torch.float64, device=device)
    grid = random_grid(1, 4, 4, device=device)
    grad_output = torch.randn(1, 3, 4, 4, dtype=torch.float64, device=device)
    both_input, both_grid = first_order(grid_sample, input, grid, grad_output, "bicubic", "zeros", True)[1:]
    x = input.clone().requires_grad_()
    (only_input,) = torch.autograd.grad(grid_sample(x, grid, "bicubic"), (x,), grad_output)
    g = grid.clone().requires_grad_()
    (only_grid,) = torch.autograd.grad(grid_sample(input, g, "bicubic"), (g,), grad_output)
    assert_close(only_input, both_input, **SAME_ARITHMETIC)
    assert_close(only_grid, both_grid, **SAME_ARITHMETIC)
    gi, gg = torch.ops.grid_encoder.grid_sample_backward(grad_output, input, grid, 2, 0, True, [True, False])
    assert gg.shape == (0,) and gi.shape == input.shape
