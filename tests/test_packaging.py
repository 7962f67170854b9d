"""Operator registration (opcheck), torch.compile, the drop-in folder workflow and the build cache."""
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from helpers import random_grid
from grid_encoder import grid_sample

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ops = torch.ops.grid_encoder


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_opcheck(device, mode, dims):
    spatial = (5, 6) if dims == 2 else (3, 4, 5)
    out_spatial = (4, 3) if dims == 2 else (2, 2, 3)
    input = torch.randn(2, 3, *spatial, dtype=torch.float64, device=device, requires_grad=True)
    grid = random_grid(2, *out_spatial, dims=dims, device=device).requires_grad_()
    grad_output = torch.randn(2, 3, *out_spatial, dtype=torch.float64, device=device, requires_grad=True)
    ggi = torch.randn_like(input)
    ggg = torch.randn_like(grid)
    settings = (mode, 2, False)
    torch.library.opcheck(ops.grid_sample_forward.default, (input, grid, *settings))
    torch.library.opcheck(ops.grid_sample_forward.default, (input, grid, *settings, True))  # point-major output
    for product in (False, True):  # not differentiable: its autograd kernel refuses to record
        torch.library.opcheck(ops.grid_sample_reduced.default, (input.detach(), grid.detach(), *settings, 2, product))
    for mask in ([True, True], [True, False], [False, True]):
        torch.library.opcheck(ops.grid_sample_backward.default, (grad_output, input, grid, *settings, mask))
    for first, second in ((ggi, ggg), (ggi, None), (None, ggg)):
        torch.library.opcheck(ops.grid_sample_double_backward.default,
                              (first, second, grad_output.detach(), input.detach(), grid.detach(), *settings,
                               [True, True, True]))
        # The tangent operator is differentiated through the others (transforms.py): its own autograd refuses.
        torch.library.opcheck(ops.grid_sample_tangent.default,
                              (first, second, input.detach(), grid.detach(), *settings),
                              test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


def test_opcheck_encoder_operators(device):
    """The encoders' glue operators: plane coordinates and the planes' product, every order."""
    points = torch.randn(2, 7, 4, dtype=torch.float64, device=device, requires_grad=True)
    columns = [0, 1, 0, 2, 3, 3]
    grad = torch.randn(2, 3, 7, 2, dtype=torch.float64, device=device, requires_grad=True)
    torch.library.opcheck(ops.plane_coords.default, (points, columns))
    torch.library.opcheck(ops.plane_coords_backward.default, (grad, columns, 4))
    features = torch.randn(2, 3, 5, 7, dtype=torch.float64, device=device).transpose(2, 3).requires_grad_()
    product_grad = torch.randn(2, 7, 5, dtype=torch.float64, device=device, requires_grad=True)
    torch.library.opcheck(ops.plane_product.default, (features,))
    torch.library.opcheck(ops.plane_product_backward.default, (product_grad, features))
    grad_grad = torch.randn(2, 3, 7, 5, dtype=torch.float64, device=device)
    for mask in ([True, True], [True, False], [False, True]):
        torch.library.opcheck(ops.plane_product_double_backward.default,
                              (grad_grad, product_grad.detach(), features.detach(), mask))


class Triplane(torch.nn.Module):
    def __init__(self, channels=8, resolution=16):
        super().__init__()
        self.planes = torch.nn.Parameter(torch.randn(3, channels, resolution, resolution) * 0.1)
        self.head = torch.nn.Linear(channels, 1)

    def forward(self, points):  # points: (P, 3) in [-1, 1]
        coords = torch.stack([points[:, [0, 1]], points[:, [0, 2]], points[:, [1, 2]]]).unsqueeze(1)
        features = grid_sample(self.planes, coords, "bilinear", "border").sum(0)  # (C, 1, P)
        return self.head(features[:, 0].t()).squeeze(-1)


def test_torch_compile_fullgraph_training_step():
    model = Triplane()
    points = torch.rand(256, 3) * 2 - 1
    target = points.norm(dim=-1) - 0.5
    compiled = torch.compile(model, fullgraph=True)
    loss = F.mse_loss(compiled(points), target)
    loss.backward()
    compiled_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    F.mse_loss(model(points), target).backward()
    for a, b in zip(compiled_grads, [p.grad for p in model.parameters()]):
        assert_close(a, b, rtol=1e-4, atol=1e-6)


def _run(code, cwd, env=None):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_drop_in_folder(tmp_path):
    """A user copies grid_encoder/ into their package and imports it relatively, from any directory."""
    package = tmp_path / "mypackage"
    package.mkdir()
    shutil.copytree(os.path.join(REPO, "grid_encoder"), package / "grid_encoder",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (package / "__init__.py").write_text("")
    (package / "model.py").write_text("from .grid_encoder import grid_sample\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _run(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import torch, torch.nn.functional as F
        from mypackage.model import grid_sample
        x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
        g = torch.rand(2, 4, 5, 2, dtype=torch.float64) * 2 - 1
        assert torch.allclose(grid_sample(x, g), F.grid_sample(x, g, align_corners=True), atol=1e-12)
        print("drop-in ok")
    """, cwd=elsewhere)
    assert "drop-in ok" in result.stdout


def test_cached_build_loads_quickly_in_a_new_process(tmp_path):
    """This process built (or loaded) the extension; a new process loads it without compiling."""
    result = _run("""
        import time
        import torch
        start = time.perf_counter()
        import grid_encoder
        print(f"import took {time.perf_counter() - start:.2f} s")
    """, cwd=REPO)
    assert "compiling" not in result.stderr, result.stderr
    seconds = float(result.stdout.split()[2])
    assert seconds < 3, result.stdout


def test_cuda_instantiation_files_match_their_generator():
    """csrc/instantiations/*.cu are generate.py's output: none missing, none extra, none edited by hand."""
    script = os.path.join(REPO, "grid_encoder", "csrc", "instantiations", "generate.py")
    result = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_libraries_built_on_first_use_hold_their_own_sources():
    """The main build compiles the operators and the float (and on CUDA double) kernels; the CPU kernels for double
    and the CUDA kernels for float16 and bfloat16 build on their first use. Every CUDA instantiation file belongs to
    exactly one CUDA library, and the host code of the CUDA phases to both."""
    from grid_encoder import _build

    main, dtypes16 = _build._sources("cuda"), _build._sources("cuda16")
    instantiations = {os.path.join("instantiations", name)
                      for name in os.listdir(os.path.join(REPO, "grid_encoder", "csrc", "instantiations"))
                      if name.endswith(".cu")}
    assert instantiations == {s for s in main + dtypes16 if s.endswith(".cu") and s.startswith("instantiations")}
    assert all(s.endswith(("_f16.cu", "_bf16.cu")) for s in dtypes16 if s.startswith("instantiations"))
    assert not any(s.endswith(("_f16.cu", "_bf16.cu")) for s in main)
    assert "phases_cuda.cpp" in main and "phases_cuda.cpp" in dtypes16
    assert _build._sources("cpu64") == ["kernels_cpu_f64.cpp"]
    assert not set(_build._sources("cpu64")) & set(main + _build._sources("cpu"))
    names = {_build._build_dir(kind)[0] for kind in ("cpu", "cpu64", "cuda", "cuda16")}
    assert len(names) == 4


@pytest.mark.parametrize("first_call", ["grid_sample", "torch.func", "torch.compile", "encoder", "threads"])
def test_float64_cpu_kernels_load_on_first_use(first_call):
    """In a new process the float64 CPU kernels are not loaded and the operator called directly says how to load
    them; the first float64 call, whichever path it takes, loads them, and from then on the operator runs them."""
    result = _run(f"""
        import torch, torch.nn.functional as F
        from grid_encoder import _build, grid_sample, sample_planes
        x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
        g = torch.rand(2, 4, 5, 2, dtype=torch.float64) * 2 - 1
        assert "cpu64" not in _build.loaded_on_use
        try:
            torch.ops.grid_encoder.grid_sample_forward(x, g, 0, 0, True)
            raise AssertionError("the operator ran without its float64 kernels")
        except RuntimeError as error:
            assert "float64 CPU kernels are not loaded" in str(error), error
        expected = F.grid_sample(x, g, align_corners=True)
        first_call = {first_call!r}
        if first_call == "grid_sample":
            out = grid_sample(x, g)
        elif first_call == "torch.func":
            out = torch.func.vmap(lambda x, g: grid_sample(x[None], g[None])[0])(x, g)
        elif first_call == "torch.compile":
            out = torch.compile(grid_sample, fullgraph=True, backend="aot_eager")(x, g)
        elif first_call == "threads":  # first calls at once: those that wait for the loading then run too
            import threading
            from concurrent.futures import ThreadPoolExecutor
            start = threading.Barrier(8)

            def sample(_):
                start.wait()
                return grid_sample(x, g)

            with ThreadPoolExecutor(8) as pool:
                outs = list(pool.map(sample, range(8)))
            assert all(torch.equal(o, outs[0]) for o in outs)
            out = outs[0]
        else:
            points = torch.rand(20, 3, dtype=torch.float64) * 2 - 1
            planes = torch.randn(3, 4, 6, 7, dtype=torch.float64)
            expected = torch.cat([F.grid_sample(planes[k:k + 1], points[None, None, :, list(axes)],
                                                align_corners=True)[0, :, 0].T
                                  for k, axes in enumerate(((0, 1), (0, 2), (1, 2)))], dim=1)
            out = sample_planes(planes, points)
        assert "cpu64" in _build.loaded_on_use
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
        assert torch.equal(torch.ops.grid_encoder.grid_sample_forward(x, g, 0, 0, True), grid_sample(x, g))
        print("loaded on first use")
    """, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    assert "loaded on first use" in result.stdout


@pytest.mark.slow
def test_float16_cuda_library_compiles_and_loads():
    """Where the loaded library has CUDA kernels (also when compiled without a GPU, as CI does), the float16/bfloat16
    library builds (if no earlier run did) and hands its phases to it."""
    from grid_encoder import _build

    if not _build.has_cuda:
        assert not _build.load_on_use("cuda16")  # a CPU-only library has nothing to load them into: no build
        pytest.skip("the loaded library has no CUDA kernels")
    _build.load_on_use("cuda16")
    assert "cuda16" in _build.loaded_on_use

