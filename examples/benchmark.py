"""Times grid_encoder against torch's grid_sample and the pure-PyTorch reference.

    python examples/benchmark.py [--device cuda|cpu] [--dtype float32|float16|bfloat16|float64]
                                 [--workload NAME ...] [--csv FILE] [--plot FILE.png] [--composite FILE.py]
                                 [--deterministic] [--channels-last] [--encoders] [--back-to-back N]

For each workload (sparse_planes: a NeuS-style step, 65 536 points on three 24-channel 512² planes, the grid a
non-contiguous slice of 3-D points) and implementation, three steps:
  forward   out = grid_sample(input, grid)
  fwd+bwd   forward, then grad(out, (input, grid), grad_out)
  eikonal   forward, grad(out, grid, ones, create_graph=True), loss = ((|grad_grid| - 1)^2).sum(),
            grad(loss, (input, grid)): the second-order step of SDF training on feature grids.
Times are medians of CUDA-event timings after warm-up (wall clock on the CPU), one step per timing on the GPU and
as many steps as take 20 ms on the CPU, or N steps back to back with --back-to-back N (the throughput of host-bound
steps, such as the seed example's, as a training loop sees it: the host queues the next step while the kernels of
the last one run); `peak` is the most memory allocated during the eikonal step (CUDA only). `floor/time` is the
time the bytes a step must move would take at --bandwidth, divided by the time measured: the fraction of that
bandwidth achieved (default: the datasheet memory bandwidth of an H100 SXM, 3.35 TB/s, or an H200, 4.8 TB/s; none
on other devices).
Ratios compare against torch from the same run.

--composite loads a module with grid_sample(input, grid, align_corners) implementing torch >= 2.12's
composite double backward (bilinear, zeros), to time it on a torch that lacks it.
--deterministic runs everything under torch.use_deterministic_algorithms(True) (torch's native CUDA
grid_sample backward refuses to run there; grid_encoder files its scatter by a stable sort).
--encoders times the encoder workloads instead: a tri-plane SDF lookup (3 planes of 32 x 512², concat) and a
K-Planes lookup (3 planes at each of 4 resolutions 64-512, 32 channels, product within a resolution, concat
across), as sample_planes and as one grid_sample call per plane ("calls": ours; "torch"; "composite").
--channels-last stores the input channels_last (channels_last_3d): grid_encoder's CUDA kernels read that layout
and otherwise copy the input into it on every call.
"""
import argparse
import csv
import importlib.util
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from grid_encoder import grid_sample, sample_planes  # noqa: E402
from grid_encoder.reference import grid_sample_reference  # noqa: E402

# name: (input shape, grid shape, mode) on the GPU and on the CPU (smaller, so it finishes in minutes)
WORKLOADS = {
    "seed_example": (((10, 3, 100, 150), (10, 13, 17, 2)), ((10, 3, 100, 150), (10, 13, 17, 2)), "bilinear"),
    "triplane_262k": (((3, 32, 512, 512), (3, 1, 262144, 2)), ((3, 32, 256, 256), (3, 1, 65536, 2)), "bilinear"),
    "warp_dense": (((8, 16, 256, 256), (8, 256, 256, 2)), ((4, 16, 128, 128), (4, 128, 128, 2)), "bilinear"),
    "triplane_1M": (((3, 16, 1024, 1024), (3, 1, 1048576, 2)), None, "bilinear"),
    "warp_bicubic": (((8, 16, 256, 256), (8, 256, 256, 2)), ((4, 16, 128, 128), (4, 128, 128, 2)), "bicubic"),
    "volume_262k": (((1, 16, 128, 128, 128), (1, 1, 1, 262144, 3)), ((1, 16, 64, 64, 64), (1, 1, 1, 65536, 3)),
                    "bilinear"),
    "sparse_planes": (((3, 24, 512, 512), (3, 1, 65536, 2)), ((3, 24, 256, 256), (3, 1, 16384, 2)), "bilinear"),
}
# Workloads whose grid is a non-contiguous slice, as a NeuS-style field's is: the (x, y) columns of 3-D points
# (512 rays x 128 samples, projected onto each plane).
SLICED_GRID = {"sparse_planes"}
STEPS = ("forward", "fwd+bwd", "eikonal")

# Encoder workloads (--encoders): levels of three planes (xy, xz, yz) as (K, C, size) on the GPU and on the CPU,
# points (GPU, CPU), and the reduction within a level; levels are concatenated. Each field is timed as
# sample_planes, as one grid_sample call per plane (ours, torch's, and the composite port's for the eikonal step).
ENCODER_WORKLOADS = {
    "triplane_sdf": ([(3, 32, 512)], [(3, 32, 128)], (262144, 16384), "concat"),
    "kplanes": ([(3, 32, r) for r in (64, 128, 256, 512)], [(3, 32, r) for r in (16, 32, 64, 128)],
                (262144, 16384), "product"),
}
TRIPLANE = ((0, 1), (0, 2), (1, 2))


CPU_SAMPLE = 0.02  # seconds: a CPU sample of small steps times many of them (a single 20 us step is mostly noise)


def time_call(fn, device, timing):
    """Median seconds of fn() after warm-up; timing = (samples, calls): each sample times `calls` calls back to back
    (with one synchronization, so that host time overlaps the kernels as it does in a training loop) and divides;
    calls None: one on the GPU, on the CPU as many as take CPU_SAMPLE seconds."""
    repeats, calls = timing
    for _ in range(2):
        fn()
    if calls is None:
        calls = 1
        if device.type != "cuda":
            start = time.perf_counter()
            fn()
            calls = max(1, round(CPU_SAMPLE / (time.perf_counter() - start)))
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1e3 / calls)
        else:
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples)


def make_step(step, sample, input, grid):
    if step == "forward":
        def run():
            with torch.no_grad():
                return sample(input, grid)
        return run
    x = input.detach().requires_grad_()
    g = grid.detach().requires_grad_()
    if step == "fwd+bwd":
        grad_out = torch.randn_like(sample(input.detach(), grid.detach()))
        return lambda: torch.autograd.grad(sample(x, g), (x, g), grad_out)

    def eikonal():
        out = sample(x, g)
        (grad_grid,) = torch.autograd.grad(out, g, torch.ones_like(out), create_graph=True)
        loss = ((grad_grid.norm(dim=-1) - 1) ** 2).sum()
        return torch.autograd.grad(loss, (x, g))
    return eikonal


def byte_floor(step, input, grid, mode):
    """Bytes that the kernels of a step must read and write at the least: every tensor once, the input
    only as far as the samples touch it."""
    elt = input.element_size()
    dims = grid.shape[-1]
    taps = {"nearest": 1, "bilinear": 2 ** dims, "bicubic": 4 ** dims}[mode]
    n, c = input.shape[:2]
    points = grid[..., 0].numel()
    image = input.numel() * elt
    touched = min(image, points * taps * c * elt)
    out = n * c * (points // n) * elt
    coords = grid.numel() * elt
    forward = touched + coords + out
    if step == "forward":
        return forward
    if step == "fwd+bwd":  # + read grad_out, grid, input; write grad_input, grad_grid
        return forward + out + coords + touched + image + coords
    # eikonal: forward; backward to grid (read grad_out, grid, input; write grad_grid); double backward
    # (read grad_grad_grid, grad_out, grid, input; write d input, d grid)
    return forward + (out + coords + touched + coords) + (coords + out + coords + touched + image + coords)


def implementations(mode, dims, composite):
    impls = {
        "grid_encoder": lambda x, g: grid_sample(x, g, mode, "zeros", True),
        "torch": lambda x, g: F.grid_sample(x, g, mode, "zeros", align_corners=True),
        "reference": lambda x, g: grid_sample_reference(x, g, mode, "zeros", True),
    }
    if composite is not None and mode == "bilinear" and dims == 2:
        impls["composite"] = lambda x, g: composite.grid_sample(x, g, True)
    return impls


def measure(name, shapes, mode, device, dtype, timing, composite, bandwidth, channels_last):
    input_shape, grid_shape = shapes
    input = torch.randn(input_shape, device=device, dtype=dtype)
    if channels_last:
        input = input.contiguous(memory_format=torch.channels_last if input.dim() == 4 else torch.channels_last_3d)
    grid = (torch.rand(grid_shape, device=device, dtype=torch.float32) * 2 - 1).to(dtype)
    if name in SLICED_GRID:
        grid = torch.cat([grid, torch.zeros_like(grid[..., :1])], -1)[..., :2]
    rows = []
    for step in STEPS:
        floor = byte_floor(step, input, grid, mode) / bandwidth if bandwidth else None
        for impl, sample in implementations(mode, grid.shape[-1], composite).items():
            if impl == "composite" and step != "eikonal":
                continue
            row = dict(workload=name, step=step, impl=impl, ms=None, peak_mib=None,
                       floor_ms=floor * 1e3 if floor else None)
            rows.append(timed(row, lambda: make_step(step, sample, input, grid), device, timing))
    return rows


def timed(row, make_run, device, timing):
    """row with its time filled in (and, for the eikonal step on CUDA, its peak memory), or the error met."""
    try:
        run = make_run()
        row["ms"] = time_call(run, device, timing) * 1e3
        if device.type == "cuda" and row["step"] == "eikonal":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            run()
            torch.cuda.synchronize()
            row["peak_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    except (RuntimeError, NotImplementedError) as error:
        row["error"] = str(error).splitlines()[0][:60]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def reduce_planes(features, reduce):
    """features: one (P, C) tensor per plane; a product as K-Planes writes it, a chain of multiplications."""
    if reduce == "concat":
        return torch.cat(features, -1)
    result = features[0]
    for f in features[1:]:
        result = result * f if reduce == "product" else result + f
    return result


def concat_levels(features):
    """The levels' features side by side; a field of one level is its features (no copy)."""
    return features[0] if len(features) == 1 else torch.cat(features, -1)


def encoder_fields(reduce, composite):
    """name: field(levels, points (P, 3)) -> (P, F)."""
    def by_calls(sample):
        return lambda levels, x: concat_levels([
            reduce_planes([sample(plane[None], x[None, None, :, [a, b]])[0, :, 0].T
                           for plane, (a, b) in zip(level, TRIPLANE)], reduce) for level in levels])

    fields = {
        "grid_encoder": lambda levels, x: concat_levels(
            [sample_planes(level, x, TRIPLANE, reduce, "bilinear", "zeros", True) for level in levels]),
        "calls": by_calls(lambda p, g: grid_sample(p, g, "bilinear", "zeros", True)),
        "torch": by_calls(lambda p, g: F.grid_sample(p, g, "bilinear", "zeros", align_corners=True)),
    }
    if composite is not None:
        fields["composite"] = by_calls(lambda p, g: composite.grid_sample(p, g, True))
    return fields


def make_encoder_step(step, field, levels, points):
    if step == "forward":
        def run():
            with torch.no_grad():
                return field(levels, points)
        return run
    ls = [level.detach().requires_grad_() for level in levels]
    x = points.detach().requires_grad_()
    if step == "fwd+bwd":
        return lambda: torch.autograd.grad(field(ls, x).square().sum(), [*ls, x])
    weights = torch.randn(field(levels, points).shape[-1], device=points.device, dtype=points.dtype)

    def eikonal():  # sdf = features . weights; the eikonal loss on d sdf / d points
        sdf = field(ls, x) @ weights
        (normal,) = torch.autograd.grad(sdf.sum(), x, create_graph=True)
        return torch.autograd.grad(((normal.norm(dim=-1) - 1) ** 2).sum(), [*ls, x])
    return eikonal


def measure_encoder(name, spec, device, dtype, timing, composite):
    gpu_levels, cpu_levels, points, reduce = spec
    on_gpu = device.type == "cuda"
    levels = [torch.randn(k, c, r, r, device=device, dtype=dtype) for k, c, r in (gpu_levels if on_gpu else cpu_levels)]
    x = torch.rand(points[0 if on_gpu else 1], 3, device=device, dtype=dtype) * 2 - 1
    rows = []
    for step in STEPS:
        for impl, field in encoder_fields(reduce, composite).items():
            if impl == "composite" and step != "eikonal":
                continue
            row = dict(workload=name, step=step, impl=impl, ms=None, peak_mib=None, floor_ms=None)
            rows.append(timed(row, lambda: make_encoder_step(step, field, levels, x), device, timing))
    return rows


def print_table(rows):
    print(f"{'workload':<14} {'step':<8} {'impl':<13} {'ms':>9} {'vs torch':>9} {'floor/time':>10} {'peak MiB':>9}")
    for row in rows:
        torch_row = next((r for r in rows if r["workload"] == row["workload"] and r["step"] == row["step"]
                          and r["impl"] == "torch"), None)
        if row["ms"] is None:
            print(f"{row['workload']:<14} {row['step']:<8} {row['impl']:<13} {'-':>9}  ({row['error']})")
            continue
        ratio = (f"{row['ms'] / torch_row['ms']:.2f}x" if torch_row and torch_row["ms"] else "-")
        peak = f"{row['peak_mib']:.0f}" if row["peak_mib"] is not None else "-"
        efficiency = f"{100 * row['floor_ms'] / row['ms']:.0f}%" if row["floor_ms"] else "-"
        print(f"{row['workload']:<14} {row['step']:<8} {row['impl']:<13} {row['ms']:>9.3f} {ratio:>9} "
              f"{efficiency:>10} {peak:>9}")


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib, which is not installed; skipped")
        return
    labels, ratios = [], []
    for row in rows:
        base = next((r for r in rows if r["workload"] == row["workload"] and r["step"] == row["step"]
                     and r["impl"] == "torch" and r["ms"]), None)
        if row["impl"] == "grid_encoder" and base and row["ms"]:
            labels.append(f"{row['workload']}\n{row['step']}")
            ratios.append(row["ms"] / base["ms"])
    fig, ax = plt.subplots(figsize=(max(6, len(labels) * 0.8), 4))
    ax.bar(range(len(ratios)), ratios)
    ax.axhline(1.0, color="k", linewidth=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("grid_encoder time / torch time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    parser.add_argument("--workload", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions (default 20 GPU, 5 CPU)")
    parser.add_argument("--back-to-back", type=int, default=None, metavar="N",
                        help="time N steps back to back per repetition (host-bound steps: their throughput); "
                             "default 1 on the GPU, on the CPU as many as take 20 ms")
    parser.add_argument("--bandwidth", type=float, help="memory bandwidth in bytes/s for the floor/time column")
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    parser.add_argument("--plot", help="draw grid_encoder/torch ratios into this PNG (needs matplotlib)")
    parser.add_argument("--composite", help="a .py file with grid_sample(input, grid, align_corners)")
    parser.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms(True)")
    parser.add_argument("--channels-last", action="store_true", help="store the input channels_last")
    parser.add_argument("--encoders", action="store_true",
                        help="time the encoder workloads (sample_planes against per-plane grid_sample calls) instead")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(args.deterministic)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    timing = (args.repeats or (20 if device.type == "cuda" else 5), args.back_to_back)
    composite = None
    if args.composite:
        spec = importlib.util.spec_from_file_location("composite", args.composite)
        composite = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(composite)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    bandwidth = args.bandwidth or (4.8e12 if "H200" in name else 3.35e12 if "H100" in name else None)
    print(f"grid_encoder benchmark: {name}, torch {torch.__version__}, {args.dtype}"
          + (", deterministic algorithms" if args.deterministic else "")
          + (", channels_last input" if args.channels_last else ""))
    rows = []
    if args.encoders:
        for workload, spec in ENCODER_WORKLOADS.items():
            rows += measure_encoder(workload, spec, device, dtype, timing, composite)
    for workload in [] if args.encoders else args.workload:
        gpu_shapes, cpu_shapes, mode = WORKLOADS[workload]
        shapes = gpu_shapes if device.type == "cuda" else cpu_shapes
        if shapes is None:
            continue
        rows += measure(workload, shapes, mode, device, dtype, timing, composite, bandwidth, args.channels_last)
    print_table(rows)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["workload", "step", "impl", "ms", "peak_mib", "floor_ms", "error"])
            writer.writeheader()
            writer.writerows(rows)
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
