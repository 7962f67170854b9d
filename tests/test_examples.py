"""The examples run and do their job: check_grads passes; a short SDF fit learns the shape."""
import importlib.util
import os
import socket
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


def test_k_planes_style_training_learns_the_shape(device):
    """Three planes at each of four resolutions, multiplied within a resolution (sample_planes' product): a short
    fit gets the surface right; the far field takes longer than this test runs."""
    train_sdf = load_example("train_sdf")
    _, losses, result = train_sdf.train("torus", "kplanes", steps=120, device=device, log_every=0)
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])
    assert result["near_error"] < 0.02, result
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


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
@pytest.mark.parametrize("ddp_device", ["cpu", "cuda"])
def test_sdf_training_under_torchrun_matches_one_process(ddp_device):
    """Two processes with DistributedDataParallel (gloo on the CPU; nccl on two GPUs) reach the quality of one."""
    if ddp_device == "cuda" and torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    with socket.socket() as probe:  # a free port on this machine for the processes' rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={port}", os.path.join(REPO, "examples", "train_sdf.py"), "--steps", "300",
               "--device", ddp_device]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 processes" in result.stdout
    held_out = [line for line in result.stdout.splitlines() if line.startswith("held-out")]
    assert len(held_out) == 1, result.stdout  # printed by rank 0 only
    near_error = float(held_out[0].split("near the surface ")[1].split(",")[0])
    _, _, single = load_example("train_sdf").train("torus", "triplane", steps=300, device=ddp_device, log_every=0)
    assert near_error < max(2 * single["near_error"], 0.005), (near_error, single)
