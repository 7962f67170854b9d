"""CUDA-only behaviour: channel blocks and layouts, reduced precision, determinism, streams, CUDA graphs, a
second GPU. (Every other test also runs on CUDA when present.)"""
import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from helpers import MODES, PADDINGS, REORDERED_SUMS, deterministic_algorithms, first_and_second_order, random_grid
from grid_encoder import grid_sample

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# Max error relative to the largest magnitude of each result: half keeps ~11 bits, bfloat16 ~8.
REDUCED_TOLERANCE = {torch.float16: 4e-3, torch.bfloat16: 3e-2}


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_reduced_precision_matches_float32(dtype, mode, dims):
    spatial, out_spatial = ((16, 16), (8, 8)) if dims == 2 else ((8, 8, 8), (4, 4, 4))
    input = torch.randn(2, 8, *spatial, device="cuda").to(dtype)
    grid = random_grid(2, *out_spatial, dims=dims, dtype=torch.float32, device="cuda").to(dtype)
    low = first_and_second_order(grid_sample, input, grid, mode, "zeros", False)
    high = first_and_second_order(grid_sample, input.float(), grid.float(), mode, "zeros", False)
    for name, a, b in zip(("output", "grad_input", "grad_grid", "d_grad_output", "d_input", "d_grid"), low, high):
        assert a.dtype == dtype, name
        scale = b.abs().max().clamp_min(1e-6)
        error = (a.float() - b).abs().max() / scale
        assert error < REDUCED_TOLERANCE[dtype], f"{name}: relative error {error:.2e}"


def test_float16_kernels_load_on_first_use():
    """In a new process the float16/bfloat16 kernels are not loaded: the operator called directly says how to load
    them; tracing a float16 call for torch.compile loads them (building them first if no earlier run did), and
    then the compiled function, grid_sample and the operator all run them."""
    import os
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import torch, torch.nn.functional as F
        from grid_encoder import _build, grid_sample
        x = torch.randn(2, 8, 16, 16, device="cuda", dtype=torch.float16)
        g = torch.rand(2, 4, 4, 2, device="cuda", dtype=torch.float16) * 2 - 1
        assert "cuda16" not in _build.loaded_on_use
        try:
            torch.ops.grid_encoder.grid_sample_forward(x, g, 0, 0, True)
            raise AssertionError("the operator ran without its float16 kernels")
        except RuntimeError as error:
            assert "float16/bfloat16 CUDA kernels are not loaded" in str(error), error
        compiled = torch.compile(lambda x, g: grid_sample(x, g) * 2, fullgraph=True, backend="aot_eager")
        out = compiled(x, g) / 2
        assert "cuda16" in _build.loaded_on_use
        torch.testing.assert_close(out, F.grid_sample(x, g, align_corners=True), rtol=2e-3, atol=2e-3)
        assert torch.equal(grid_sample(x, g), out)
        assert torch.equal(torch.ops.grid_encoder.grid_sample_forward(x, g, 0, 0, True), out)
        print("loaded on first use")
    """)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHONPATH=repo))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "loaded on first use" in result.stdout


def test_float16_forward_matches_torch():
    input = torch.randn(2, 8, 16, 16, device="cuda", dtype=torch.float16)
    grid = random_grid(2, 8, 8, dtype=torch.float16, device="cuda")
    assert_close(grid_sample(input, grid, "bicubic", "border", False),
                 F.grid_sample(input, grid, "bicubic", "border", align_corners=False), rtol=2e-3, atol=2e-3)


def test_runs_on_the_current_stream():
    input = torch.randn(2, 4, 32, 32, device="cuda", requires_grad=True)
    grid = random_grid(2, 16, 16, dtype=torch.float32, device="cuda").requires_grad_()
    expected = torch.autograd.grad(grid_sample(input, grid).square().sum(), (input, grid))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = torch.autograd.grad(grid_sample(input, grid).square().sum(), (input, grid))
    torch.cuda.current_stream().wait_stream(stream)
    for a, b in zip(got, expected):
        assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_cuda_matches_cpu_at_second_order():
    input = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    grid = random_grid(2, 6, 5)
    on_cpu = first_and_second_order(grid_sample, input, grid, "bicubic", "reflection", True)
    on_gpu = first_and_second_order(grid_sample, input.cuda(), grid.cuda(), "bicubic", "reflection", True)
    for a, b in zip(on_gpu, on_cpu):
        assert_close(a.cpu(), b, **REORDERED_SUMS)


def misaligned_channels_last(n, c, *spatial, dtype, device="cuda"):
    """A channels-last tensor whose data starts 1 element past an allocation: 16-byte loads do not fit it."""
    storage = torch.randn(1 + n * c * torch.Size(spatial).numel(), dtype=dtype, device=device)
    tensor = storage[1:].view(n, *spatial, c)
    return tensor.permute(0, tensor.dim() - 1, *range(1, tensor.dim() - 1))


@pytest.mark.parametrize("layout", ["channels-first", "channels-last", "misaligned"])
@pytest.mark.parametrize("channels", [4, 8, 12, 16, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("dims", [2, 3])
def test_channel_blocks_and_layouts_match_cpu(dims, dtype, channels, layout):
    """Whole and partial channel blocks, 16-byte loads and stores, and their scalar fallbacks."""
    spatial, out_spatial = ((9, 11), (6, 7)) if dims == 2 else ((5, 6, 7), (3, 4, 5))
    if layout == "misaligned":
        input = misaligned_channels_last(2, channels, *spatial, dtype=dtype)
    else:
        input = torch.randn(2, channels, *spatial, dtype=dtype, device="cuda")
        if layout == "channels-last":
            input = input.contiguous(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
    grid = random_grid(2, *out_spatial, dims=dims, dtype=dtype, device="cuda")
    tolerance = 1e-10 if dtype == torch.float64 else 1e-4  # float32: relative to each result's largest value
    for mode in MODES:
        on_gpu = first_and_second_order(grid_sample, input, grid, mode, "zeros", True)
        on_cpu = first_and_second_order(grid_sample, input.cpu().double(), grid.cpu().double(), mode, "zeros", True)
        for a, b in zip(on_gpu, on_cpu):
            assert a.dtype == dtype
            scale = b.abs().max().item()
            assert_close(a.cpu().double(), b, rtol=tolerance, atol=tolerance * scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("dims", [2, 3])
def test_working_copy_keeps_every_value(dims, dtype):
    """Nearest sampling at every pixel centre gives the input back, so the channels-last working copy puts every
    value in its place: rows under 96 bytes by positions, longer ones by tiles of 32 positions and up to 32 channels,
    each with 16-byte and scalar stores."""
    spatial = (7, 45) if dims == 2 else (3, 5, 13)  # 315 and 195 positions: whole tiles and a rest
    axes = [torch.linspace(-1, 1, size, dtype=torch.float64, device="cuda") for size in spatial]
    centres = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], dim=-1)  # x (along W) first
    for channels in (4, 5, 12, 31, 32, 33, 40, 64, 70):
        input = torch.randn(3, channels, *spatial, device="cuda").to(dtype)
        grid = centres.expand(3, *centres.shape).to(dtype)
        assert torch.equal(grid_sample(input, grid, "nearest", "zeros", True), input), channels


@pytest.mark.parametrize("channels", [3, 16])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("dims", [2, 3])
def test_deterministic_algorithms_give_identical_bits(dims, padding, mode, channels):
    """Under torch.use_deterministic_algorithms(True) a stable sort files the input gradients' terms: every
    derivative is bitwise identical from run to run, and right. Points crowd onto few pixels."""
    spatial, out_spatial = ((3, 4), (64, 64)) if dims == 2 else ((2, 3, 2), (16, 16, 16))
    input = torch.randn(2, channels, *spatial, device="cuda")
    grid = random_grid(2, *out_spatial, dims=dims, dtype=torch.float32, device="cuda")
    with deterministic_algorithms():
        runs = [first_and_second_order(grid_sample, input, grid, mode, padding, False) for _ in range(3)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)
    exact = first_and_second_order(grid_sample, input.double().cpu(), grid.double().cpu(), mode, padding, False)
    for a, b in zip(runs[0], exact):
        assert_close(a.cpu().double(), b, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("deterministic", [False, True], ids=["default", "deterministic"])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_binned_scatter_in_chunks_of_batch_items(mode, deterministic):
    """The binned scatter runs over chunks of batch items of at most 2^20 pairs (tap of a sample), or one item: five
    items of 65 792 points are two chunks of bilinear taps (3 items, then 2) and five of bicubic ones. Every order
    agrees with the CPU's."""
    input = torch.randn(5, 3, 24, 20, dtype=torch.float64, device="cuda")
    grid = random_grid(5, 256, 257, dtype=torch.float64, device="cuda")
    assert_gpu_matches_cpu(input, grid, mode, deterministic)


@pytest.mark.parametrize("deterministic", [False, True], ids=["default", "deterministic"])
def test_binned_scatter_scans_counts_over_many_tiles(deterministic):
    """The binned scatter's scan of the counts per position runs over tiles of 4096 positions, and one block sums the
    tiles' totals, each of its 256 threads a run of tiles: 1.2 million positions are 293 tiles. Half the points
    crowd a corner (long ranges there, empty tiles elsewhere), half spread over the plane; every input-shaped
    gradient agrees with the CPU's."""
    input = torch.randn(1, 2, 1200, 1000, dtype=torch.float64, device="cuda")
    grid = random_grid(1, 2, 150000, dtype=torch.float64, device="cuda")
    grid[:, 0] = grid[:, 0] * 0.05 - 0.95
    assert_gpu_matches_cpu(input, grid, "bilinear", deterministic)


def assert_gpu_matches_cpu(input, grid, mode, deterministic):
    """First and second order on the GPU (under deterministic algorithms or not) agree with the CPU's."""
    with deterministic_algorithms() if deterministic else contextlib.nullcontext():
        on_gpu = first_and_second_order(grid_sample, input, grid, mode, "zeros", True)
    on_cpu = first_and_second_order(grid_sample, input.cpu(), grid.cpu(), mode, "zeros", True)
    for a, b in zip(on_gpu, on_cpu):
        assert_close(a.cpu(), b, **REORDERED_SUMS)


@pytest.mark.parametrize("dims", [2, 3])
def test_crowded_points_and_many_channel_blocks_match_cpu(dims):
    """Thousands of points on a dozen pixels (border padding piles the outside ones onto the edges), with 5
    channels (few terms: the atomic scatter) and 264 (the binned scatter, with long ranges; 33 blocks of 8, more
    than a warp's lanes, so lanes take two blocks each)."""
    spatial, out_spatial = ((3, 4), (64, 64)) if dims == 2 else ((2, 3, 2), (8, 8, 8))
    for channels in (5, 264):
        input = torch.randn(2, channels, *spatial, dtype=torch.float64, device="cuda")
        grid = random_grid(2, *out_spatial, dims=dims, dtype=torch.float64, device="cuda")
        for mode in MODES:
            on_gpu = first_and_second_order(grid_sample, input, grid, mode, "border", True)
            on_cpu = first_and_second_order(grid_sample, input.cpu(), grid.cpu(), mode, "border", True)
            for a, b in zip(on_gpu, on_cpu):
                assert_close(a.cpu(), b, **REORDERED_SUMS)


def test_forward_backward_and_eikonal_step_replay_in_a_cuda_graph():
    """Captured once, replayed on new values: no host synchronization or allocation outside the graph's pool."""
    input = torch.randn(2, 16, 32, 32, device="cuda")
    grid = random_grid(2, 24, 24, dtype=torch.float32, device="cuda")
    static_input, static_grid = input.clone().requires_grad_(), grid.clone().requires_grad_()

    def step(x, g):
        out = grid_sample(x, g, "bilinear", "zeros", True)
        grad_input, grad_grid = torch.autograd.grad(out.square().sum(), (x, g), create_graph=True)
        eikonal = ((grad_grid.norm(dim=-1) - 1) ** 2).sum() + grad_input.square().sum()
        return (out,) + torch.autograd.grad(eikonal, (x, g))

    warmup = torch.cuda.Stream()
    warmup.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(warmup):
        for _ in range(2):
            step(static_input, static_grid)
    torch.cuda.current_stream().wait_stream(warmup)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step(static_input, static_grid)
    for _ in range(2):
        new_input, new_grid = torch.randn_like(input), random_grid(2, 24, 24, dtype=torch.float32, device="cuda")
        with torch.no_grad():
            static_input.copy_(new_input)
            static_grid.copy_(new_grid)
        graph.replay()
        expected = step(new_input.requires_grad_(), new_grid.requires_grad_())
        for a, b in zip(captured, expected):  # equal up to the order in which input-gradient terms are filed
            assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tensors_on_a_second_gpu():
    """The kernels run on the tensors' GPU and its current stream, whichever GPU is current."""
    input = torch.randn(2, 8, 9, 10, dtype=torch.float64)
    grid = random_grid(2, 6, 7)
    on_cpu = first_and_second_order(grid_sample, input, grid, "bicubic", "border", True)
    with torch.cuda.device(0):
        on_second = first_and_second_order(grid_sample, input.to("cuda:1"), grid.to("cuda:1"), "bicubic", "border",
                                           True)
    for a, b in zip(on_second, on_cpu):
        assert a.device == torch.device("cuda:1")
        assert_close(a.cpu(), b, **REORDERED_SUMS)
