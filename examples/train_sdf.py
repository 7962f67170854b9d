"""Fits the signed distance field of a simple shape with learnable feature grids and a small MLP,
trained with an eikonal loss, whose gradient passes through grid_sample's second order.

    python examples/train_sdf.py [--shape torus|sphere|box] [--grid triplane|voxel|kplanes] [--steps N] [--device D]
    torchrun --nproc_per_node=2 examples/train_sdf.py ...    # DistributedDataParallel, one process per GPU

sdf(x) = MLP(features(x), x), where features(x) samples three learnable planes (triplane, sample_planes), one
learnable volume (voxel, sample_volumes), or three planes at each of four resolutions (kplanes: a product within a
resolution, concatenated across them, as K-Planes does) at x in [-1, 1]^3. Each step minimizes
    surface loss  mean |sdf(x) - true_sdf(x)| on points on and near the surface
  + eikonal loss  mean (|d sdf / d x| - 1)^2 on points everywhere,
where d sdf / d x is taken with create_graph=True, so the eikonal loss is differentiated through
grid_sample's backward: its double backward feeds the feature grids, the MLP and the sample coordinates.
Ends with the mean SDF error and eikonal residual on held-out points.
"""
import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from grid_encoder import sample_planes, sample_volumes  # noqa: E402


def true_sdf(shape, x):
    if shape == "sphere":
        return x.norm(dim=-1) - 0.5
    if shape == "torus":  # major radius 0.45 around the z axis, minor radius 0.2
        ring = torch.stack([x[:, :2].norm(dim=-1) - 0.45, x[:, 2]], -1)
        return ring.norm(dim=-1) - 0.2
    if shape == "box":  # half extents 0.4, 0.3, 0.35
        q = x.abs() - torch.tensor([0.4, 0.3, 0.35], device=x.device, dtype=x.dtype)
        return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)
    raise ValueError(f"unknown shape {shape!r}")


def surface_points(shape, n, device, generator):
    """Points on the surface: random points projected along the SDF gradient (exact for these shapes)."""
    x = (torch.rand(n, 3, device=device, generator=generator) * 2 - 1).requires_grad_()
    d = true_sdf(shape, x)
    (normal,) = torch.autograd.grad(d.sum(), x)
    for _ in range(3):  # a few projection steps settle the box's corners and edges
        x = (x - d.unsqueeze(-1) * normal).detach().requires_grad_()
        d = true_sdf(shape, x)
        (normal,) = torch.autograd.grad(d.sum(), x)
    return x.detach()


TRIPLANE = ((0, 1), (0, 2), (1, 2))  # the xy, xz and yz planes


class FieldModel(torch.nn.Module):
    """sdf(x) = MLP(features(x), x). features: three planes summed (triplane), one volume (voxel), or K-Planes-style
    three planes at each of four resolutions, multiplied within a resolution and concatenated across them."""

    def __init__(self, grid="triplane", channels=8, resolution=64, hidden=32):
        super().__init__()
        self.grid = grid
        if grid == "triplane":
            self.features = torch.nn.Parameter(torch.randn(3, channels, resolution, resolution) * 0.01)
        elif grid == "voxel":
            self.features = torch.nn.Parameter(torch.randn(1, channels, resolution, resolution, resolution) * 0.01)
        else:  # kplanes: resolutions resolution / 8 .. resolution; products start near 1
            self.levels = torch.nn.ParameterList(
                torch.nn.Parameter(1 + torch.randn(3, channels, resolution >> i, resolution >> i) * 0.01)
                for i in (3, 2, 1, 0))
        width = channels * (4 if grid == "kplanes" else 1)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(width + 3, hidden), torch.nn.Softplus(beta=20),
            torch.nn.Linear(hidden, hidden), torch.nn.Softplus(beta=20),
            torch.nn.Linear(hidden, 1))

    def forward(self, x):  # x: (P, 3) in [-1, 1]
        if self.grid == "triplane":
            features = sample_planes(self.features, x, TRIPLANE, "sum", "bilinear", "border")  # (P, C)
        elif self.grid == "voxel":
            features = sample_volumes(self.features, x, "concat", "bilinear", "border")  # (P, C)
        else:
            features = torch.cat([sample_planes(level, x, TRIPLANE, "product", "bilinear", "border")
                                  for level in self.levels], -1)  # (P, 4 C)
        return self.mlp(torch.cat([features, x], -1)).squeeze(-1)


def sdf_and_gradient(model, x, create_graph):
    x = x.detach().requires_grad_()
    sdf = model(x)
    (gradient,) = torch.autograd.grad(sdf.sum(), x, create_graph=create_graph)
    return sdf, gradient


def evaluate(model, shape, device, generator, n=20000):
    """Mean |sdf - true sdf| near the surface (|true sdf| < 0.1) and everywhere, and the mean eikonal
    residual | |grad sdf| - 1 |, on held-out points."""
    near = surface_points(shape, n // 2, device, generator)
    near = near + torch.randn(near.shape, device=device, generator=generator) * 0.03
    x = torch.cat([near, torch.rand(n // 2, 3, device=device, generator=generator) * 2 - 1])
    sdf, gradient = sdf_and_gradient(model, x, create_graph=False)
    truth = true_sdf(shape, x)
    error = (sdf.detach() - truth).abs()
    close = truth.abs() < 0.1
    return dict(near_error=error[close].mean().item(), error=error.mean().item(),
                eikonal=(gradient.norm(dim=-1) - 1).abs().mean().item())


def train(shape="torus", grid="triplane", steps=1000, batch=2048, lr=1e-2, eikonal_weight=0.1, device="cpu",
          seed=0, log_every=50, resolution=None):
    """Fits the field; returns (model, losses, held-out metrics). Under torch.distributed (torchrun), each
    of the world's processes takes batch / world_size points a step and DistributedDataParallel averages
    the gradients, so the run follows the one-process run with the same batch."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
    torch.manual_seed(seed)  # the same initial model in every process
    generator = torch.Generator(device=device).manual_seed(seed + rank)  # each process its own points
    model = FieldModel(grid, resolution=resolution or (32 if grid == "voxel" else 64)).to(device)
    field = model
    if distributed:
        device_ids = [torch.device(device).index] if torch.device(device).type == "cuda" else None
        field = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    batch //= world
    losses = []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        on_surface = surface_points(shape, batch // 2, device, generator)
        noise = torch.randn(on_surface.shape, device=device, generator=generator)
        noise[: batch // 4] *= 0.05  # close to the surface, and a wider shell that reaches the far field
        noise[batch // 4:] *= 0.3
        data_points = torch.cat([on_surface, (on_surface + noise).clamp(-1, 1)])
        anywhere = torch.rand(batch, 3, device=device, generator=generator) * 2 - 1
        # One forward for both terms (DistributedDataParallel wants one forward per backward).
        sdf, gradient = sdf_and_gradient(field, torch.cat([data_points, anywhere]), create_graph=True)
        surface_loss = (sdf[: len(data_points)] - true_sdf(shape, data_points)).abs().mean()
        eikonal_loss = ((gradient[len(data_points):].norm(dim=-1) - 1) ** 2).mean()
        loss = surface_loss + eikonal_weight * eikonal_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if log_every and rank == 0 and (step % log_every == 0 or step == 1):
            print(f"step {step:4d}  loss {loss.item():.4f}  surface {surface_loss.item():.4f}  "
                  f"eikonal {eikonal_loss.item():.4f}  ({time.perf_counter() - start:.1f} s)", flush=True)
    return model, losses, evaluate(model, shape, device, generator)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="torus", choices=["torus", "sphere", "box"])
    parser.add_argument("--grid", default="triplane", choices=["triplane", "voxel", "kplanes"])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device, rank = args.device, 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun: one process per GPU (or CPU)
        on_gpu = torch.device(device).type == "cuda"
        torch.distributed.init_process_group("nccl" if on_gpu else "gloo")
        rank = torch.distributed.get_rank()
        if on_gpu:
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
            torch.cuda.set_device(device)
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if rank == 0:
        print(f"fitting a {args.shape} with a {args.grid} on {device}" + (f", {world} processes" if world > 1 else ""))
    start = time.perf_counter()
    _, losses, result = train(args.shape, args.grid, args.steps, device=device)
    if rank == 0:
        print(f"done in {time.perf_counter() - start:.1f} s; loss {losses[0]:.4f} -> {losses[-1]:.4f}")
        print(f"held-out: mean |sdf error| near the surface {result['near_error']:.4f}, everywhere "
              f"{result['error']:.4f}; mean eikonal residual ||grad sdf| - 1| {result['eikonal']:.4f}")
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0 if math.isfinite(losses[-1]) else 1


if __name__ == "__main__":
    sys.exit(main())
