"""Checks grid_encoder's grid_sample against torch (forward, first order) and against the pure-PyTorch
reference (every second-order term, and the forward-mode tangent), on the GPU when there is one, else on the CPU.

    python examples/check_grads.py [--device cpu|cuda] [--dtype float64|float32]

Prints the largest difference of each quantity and exits with status 1 if any exceeds its tolerance.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from grid_encoder import grid_sample  # noqa: E402
from grid_encoder.reference import grid_sample_reference  # noqa: E402

TOLERANCE = {"float64": 1e-9, "float32": 1e-3}  # relative to the largest magnitude of each quantity


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float64", choices=sorted(TOLERANCE))
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)

    # The seed project's example: 10 feature maps of 3 x 100 x 150, sampled at 13 x 17 points each.
    features = torch.randn(10, 3, 100, 150, dtype=dtype, device=device, requires_grad=True)
    grid = (torch.rand(10, 13, 17, 2, dtype=dtype, device=device) * 2 - 1).requires_grad_()

    # First order: grid_sample(features, grid) is torch's bilinear / zeros / align_corners=True.
    ours = grid_sample(features, grid)
    theirs = F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    grad_out = torch.randn_like(ours)
    d_feat, d_grid = torch.autograd.grad(ours, (features, grid), grad_out)
    d_feat_torch, d_grid_torch = torch.autograd.grad(theirs, (features, grid), grad_out)
    rows = [("forward", ours, theirs, "torch"),
            ("d out / d features", d_feat, d_feat_torch, "torch"),
            ("d out / d grid", d_grid, d_grid_torch, "torch")]

    # Second order: differentiate <grad_features, a> + <grad_grid, b> with respect to all three inputs
    # of the backward (grad_out, features, grid), for random a and b.
    a, b = torch.randn_like(features), torch.randn_like(grid)

    def second_order(fn):
        g_out = grad_out.detach().requires_grad_()
        gf, gg = torch.autograd.grad(fn(features, grid), (features, grid), g_out, create_graph=True)
        return torch.autograd.grad((gf * a).sum() + (gg * b).sum(), (g_out, features, grid))

    ours2 = second_order(grid_sample)
    ref2 = second_order(lambda f, g: grid_sample_reference(f, g, "bilinear", "zeros", True))
    names = ("d2 / d grad_out", "d2 / d features", "d2 / d grid (incl. grid-grid term)")
    rows += [(name, x, y, "reference") for name, x, y in zip(names, ours2, ref2)]

    # Forward mode: the output's tangent along random tangents of features and grid (torch raises here).
    reference = lambda f, g: grid_sample_reference(f, g, "bilinear", "zeros", True)
    tangents = (torch.randn_like(features), torch.randn_like(grid))
    primals = (features.detach(), grid.detach())
    rows.append(("jvp (forward mode)", torch.func.jvp(grid_sample, primals, tangents)[1],
                 torch.func.jvp(reference, primals, tangents)[1], "reference"))

    print(f"grid_encoder check on {device}, {args.dtype}; features {tuple(features.shape)}, "
          f"grid {tuple(grid.shape)}")
    failed = False
    for name, x, y, against in rows:
        difference = (x - y).abs().max().item()
        relative = difference / max(y.abs().max().item(), 1e-30)
        ok = relative <= TOLERANCE[args.dtype]
        failed |= not ok
        print(f"  {name:<36} max |diff| vs {against:<9} {difference:.2e}  (relative {relative:.1e})  "
              f"{'ok' if ok else 'FAIL'}")
    print("FAILED" if failed else "all quantities match")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
