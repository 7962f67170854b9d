"""The loader: concurrent first imports, an interrupted build, a read-only copy, a broken compiler.

Each test builds the CPU kernels from nothing in a fresh cache folder (about 20 s on two cores)."""
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPORT_AND_SAMPLE = ("import torch, grid_encoder; "
                     "x = torch.randn(1, 2, 3, 4); g = torch.zeros(1, 1, 1, 2); "
                     "print('sampled', tuple(grid_encoder.grid_sample(x, g).shape))")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform != "linux", reason="the build lock and these checks are for Linux")]


def environment(cache, **overrides):
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(cache), GRID_ENCODER_BUILD_CUDA="0", PYTHONPATH=REPO)
    env.update(overrides)
    return env


def start(cache, cwd=REPO, **overrides):
    return subprocess.Popen([sys.executable, "-c", IMPORT_AND_SAMPLE], cwd=cwd, env=environment(cache, **overrides),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def test_concurrent_first_imports_build_once(tmp_path):
    processes = [start(tmp_path) for _ in range(4)]
    results = [finish(p) for p in processes]
    for code, out, err in results:
        assert code == 0, err
        assert "sampled (1, 2, 1, 1)" in out
    assert sum("compiling the CPU kernels" in err for _, _, err in results) == 1


def test_interrupted_build_is_recovered(tmp_path):
    process = start(tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline and not any(f.endswith(".ninja") for _, _, fs in os.walk(tmp_path) for f in fs):
        time.sleep(0.2)
    time.sleep(3)  # the compiler is running now
    assert process.poll() is None, "the build finished before it could be interrupted"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    code, out, err = finish(start(tmp_path))
    assert code == 0, err
    assert "did not finish earlier; starting it again" in err
    assert "sampled (1, 2, 1, 1)" in out


def test_read_only_copy_of_the_folder(tmp_path):
    copy = tmp_path / "project"
    shutil.copytree(os.path.join(REPO, "grid_encoder"), copy / "grid_encoder",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for root, dirs, files in os.walk(copy):
        for name in dirs + files:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        code, out, err = finish(start(tmp_path / "cache", cwd=copy, PYTHONPATH=str(copy),
                                      PYTHONDONTWRITEBYTECODE="1"))
        assert code == 0, err
        assert "sampled (1, 2, 1, 1)" in out
    finally:
        for root, dirs, files in os.walk(copy):
            for name in dirs + files:
                os.chmod(os.path.join(root, name), stat.S_IRWXU)


def test_broken_compiler_gives_one_clear_error_and_a_good_one_recovers(tmp_path):
    code, out, err = finish(start(tmp_path, CXX="/bin/false"))
    assert code != 0
    assert err.count("Traceback") == 1, err
    assert "RuntimeError: grid_encoder: compiling the CPU kernels failed (C++ compiler '/bin/false')" in err, err
    assert err.strip().endswith("or GRID_ENCODER_BUILD_CUDA=0 for a CPU-only build."), err
    code, out, err = finish(start(tmp_path))
    assert code == 0, err
    assert "sampled (1, 2, 1, 1)" in out


def test_missing_compiler_is_named(tmp_path):
    code, out, err = finish(start(tmp_path, CXX="no-such-compiler-here"))
    assert code != 0
    assert "needs a C++ compiler, but 'no-such-compiler-here' was not found" in err, err
