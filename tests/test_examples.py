"""The examples run and do their job: check_grads passes; a short SDF fit learns the shape."""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "examples", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_grads_passes():
    result = subprocess.run([sys.executable, os.path.join(REPO, "examples", "check_grads.py"), "--device", "cpu"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all quantities match" in result.stdout


@pytest.mark.parametrize("grid,steps", [("triplane", 200), ("voxel", 300)])
def test_sdf_training_learns_the_shape(device, grid, steps):
    train_sdf = load_example("train_sdf")
    _, losses, result = train_sdf.train("torus", grid, steps=steps, device=device, log_every=0)
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])
    assert result["near_error"] < 0.02, result
    assert result["error"] < 0.1, result
    assert result["eikonal"] < 0.3, result


def test_eikonal_loss_reaches_the_feature_grid_through_second_order():
    """With a linear head, d sdf / d x depends on the feature grid only through grid_sample's grid
    gradient, so the eikonal loss can reach the grid only through the double backward's d input term."""
    train_sdf = load_example("train_sdf")
    model = train_sdf.FieldModel("triplane", channels=8, resolution=16)
    model.mlp = torch.nn.Linear(8 + 3, 1)
    x = torch.rand(256, 3) * 2 - 1
    _, gradient = train_sdf.sdf_and_gradient(model, x, create_graph=True)
    ((gradient.norm(dim=-1) - 1) ** 2).mean().backward()
    assert model.features.grad is not None and model.features.grad.abs().max() > 0
