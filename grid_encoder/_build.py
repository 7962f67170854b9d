"""Compiles the C++/CUDA kernels on first use and loads them as the ``torch.ops.grid_encoder`` ops.

The build folder is named by a hash of the sources, this file (which holds the compiler flags), the
torch and Python versions and the build settings, so an edited kernel rebuilds and an unchanged one loads
straight from the cache (``$TORCH_EXTENSIONS_DIR``, else ``~/.cache/torch_extensions``).

CUDA kernels are built when torch has CUDA and a GPU is visible, or when ``GRID_ENCODER_BUILD_CUDA=1``
(to compile them on a machine without a GPU); ``GRID_ENCODER_BUILD_CUDA=0`` forces a CPU-only build.
``TORCH_CUDA_ARCH_LIST`` is respected as torch reads it. Two sets of kernels are libraries of their own, built on
the first call that needs them (``load_on_use``): the CPU kernels for float64 and the CUDA kernels for float16 and
bfloat16. The first build compiles only what float32 needs.
"""
import contextlib
import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time

import torch

try:
    import fcntl
except ImportError:  # Windows: builds are not locked against each other
    fcntl = None

_SOURCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
# the slowest first: ninja starts the files in the order given
_CPU_SOURCES = ["kernels_cpu.cpp", "autograd.cpp", "operators.cpp"]
_HEADERS = ["taps.h", "point_work.h", "problem.h", "operators.h", "encoders.h", "kernels_cpu.h",
            "kernels_cpu_avx2.h", "kernels_cuda.h", "kernels_cuda.cuh"]


def _cuda_sources(dtypes16=False):
    """The CUDA instantiation files (instantiations/generate.py writes them) for float and double, or with
    dtypes16 for float16 and bfloat16, the slowest first (the double backward, then the scatter, as measured);
    the main library's channels-last copy and encoder glue kernels; the CUDA phases' host code."""
    folder = os.path.join(_SOURCE_DIR, "instantiations")
    names = sorted(name for name in os.listdir(folder)
                   if name.endswith(".cu") and name.endswith(("_f16.cu", "_bf16.cu")) == dtypes16)
    names.sort(key=lambda name: (not name.startswith("double_backward"), not name.startswith("scatter")))
    return [os.path.join("instantiations", name) for name in names] + (
        ["phases_cuda.cpp"] if dtypes16 else ["channels_last.cu", "encoders.cu", "phases_cuda.cpp"])


# The libraries: the main one, "cpu" (the operators, CPU kernels for float) or "cuda" (and CUDA kernels for float
# and double), and the ones load_on_use builds on first use and hands to it: "cpu64" (CPU kernels for double) and
# "cuda16" (CUDA kernels for float16 and bfloat16).
def _sources(kind):
    if kind == "cpu64":
        return ["kernels_cpu_f64.cpp"]
    if kind == "cuda16":
        return _cuda_sources(dtypes16=True)
    return _CPU_SOURCES + (_cuda_sources() if kind == "cuda" else [])


_CUDA_KINDS = ("cuda", "cuda16")
_DEFINES = {"cpu": [], "cpu64": [], "cuda": ["-DGRID_ENCODER_WITH_CUDA"],
            "cuda16": ["-DGRID_ENCODER_WITH_CUDA", "-DGRID_ENCODER_CUDA16"]}
_WHAT = {"cpu": ("CPU", "about 25 s on two idle cores"),
         "cpu64": ("float64 CPU", "about 15 s on two cores"),
         "cuda": ("CPU and CUDA", "about 35 s on 16 cores, 2.5 minutes on two"),
         "cuda16": ("float16/bfloat16 CUDA", "about 20 s on 16 cores, 1.5 minutes on two")}
_BUILT_MARKER = "build-complete"


def _want_cuda():
    flag = os.environ.get("GRID_ENCODER_BUILD_CUDA", "")
    if flag not in ("", "0", "1"):
        raise ValueError(f"GRID_ENCODER_BUILD_CUDA must be '0' or '1', got {flag!r}")
    if torch.version.cuda is None:
        if flag == "1":
            raise RuntimeError(
                "grid_encoder: GRID_ENCODER_BUILD_CUDA=1 but this torch has no CUDA support "
                f"(torch {torch.__version__}); install a CUDA build of torch or unset the variable")
        return False
    return flag == "1" or (flag == "" and torch.cuda.is_available())


def _build_dir(kind):
    digest = hashlib.sha256()
    names = sorted(set(_CPU_SOURCES + _sources("cpu64") + _cuda_sources() + _cuda_sources(dtypes16=True) + _HEADERS))
    for path in [os.path.join(_SOURCE_DIR, name) for name in names] + [os.path.abspath(__file__)]:
        with open(path, "rb") as f:  # this file holds the compiler flags
            digest.update(os.path.basename(path).encode() + b"\0" + f.read())
    key = [torch.__version__, sys.version.split()[0], kind]
    if kind in _CUDA_KINDS:
        key += [str(torch.version.cuda), os.environ.get("TORCH_CUDA_ARCH_LIST", "")]
    digest.update("|".join(key).encode())
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "torch_extensions")
    name = f"grid_encoder_{kind}_{digest.hexdigest()[:16]}"
    return name, os.path.join(root, name)


def _check_toolchain(with_cuda):
    from torch.utils import cpp_extension

    if not cpp_extension.is_ninja_available():
        raise RuntimeError("grid_encoder compiles its kernels on first use and needs ninja for that: "
                           "`pip install ninja`")
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"grid_encoder compiles its kernels on first use and needs a C++ compiler, but "
                           f"{compiler!r} was not found: install g++ (or clang++) or set CXX")
    if with_cuda:
        home = cpp_extension.CUDA_HOME
        if home is None or not os.path.exists(os.path.join(home, "bin", "nvcc")):
            raise RuntimeError(
                "grid_encoder compiles CUDA kernels because a GPU is visible, but no CUDA toolkit was found "
                f"(CUDA_HOME={home!r}): install the CUDA toolkit matching torch's CUDA {torch.version.cuda} and "
                "set CUDA_HOME to the folder holding bin/nvcc, or set GRID_ENCODER_BUILD_CUDA=0 for a CPU-only "
                "build")


@contextlib.contextmanager
def _progress(build_dir, total, every=15.0):
    """Prints how many of the `total` sources are compiled, every `every` seconds while the block runs."""
    done = threading.Event()
    start = time.monotonic()

    def report():
        while not done.wait(every):
            compiled = sum(name.endswith(".o") for name in os.listdir(build_dir))
            print(f"grid_encoder: {compiled} of {total} files compiled ({time.monotonic() - start:.0f} s)",
                  file=sys.stderr, flush=True)

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        yield
    finally:
        done.set()
        reporter.join()
    print(f"grid_encoder: compiled in {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _build_lock(build_dir):
    """Holds an exclusive lock on build_dir while one process builds; others wait for it. The operating
    system drops the lock when its holder dies, so a killed build never blocks the next import."""
    with open(os.path.join(build_dir, "grid_encoder.lock"), "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _compile(name, build_dir, kind):
    from torch.utils import cpp_extension

    with_cuda = kind in _CUDA_KINDS
    leftovers = [f for f in os.listdir(build_dir) if f != "grid_encoder.lock"]
    if leftovers:  # a build that never finished (killed, or failed): start it again from nothing
        print(f"grid_encoder: the build in {build_dir} did not finish earlier; starting it again",
              file=sys.stderr, flush=True)
        for leftover in leftovers:
            path = os.path.join(build_dir, leftover)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    what, takes = _WHAT[kind]
    print(f"grid_encoder: compiling the {what} kernels into {build_dir} (first use only, {takes})",
          file=sys.stderr, flush=True)
    sources = [os.path.join(_SOURCE_DIR, s) for s in _sources(kind)]
    defines = _DEFINES[kind]
    # at::parallel_for is inlined into our code: with torch's OpenMP backend it needs -fopenmp here,
    # or the CPU kernels run on one thread.
    openmp = ["-fopenmp"] if torch.backends.openmp.is_available() and sys.platform.startswith("linux") else []
    try:
        with _progress(build_dir, len(sources)):
            cpp_extension.load(
                name=name,
                sources=sources,
                build_directory=build_dir,
                extra_cflags=["-O3"] + openmp + defines,
                extra_ldflags=openmp,
                extra_cuda_cflags=["-O3"] + defines if with_cuda else None,
                with_cuda=with_cuda,
                is_python_module=False,
                verbose=os.environ.get("GRID_ENCODER_VERBOSE_BUILD") == "1",
            )
    except (RuntimeError, OSError, subprocess.CalledProcessError) as error:
        log = str(error).strip().splitlines()
        compilers = f"C++ compiler {os.environ.get('CXX', 'c++')!r}"
        if with_cuda:
            compilers += f", nvcc in {cpp_extension.CUDA_HOME!r}"
        raise RuntimeError(
            f"grid_encoder: compiling the {what} kernels failed ({compilers}). The build's last lines:\n    "
            + "\n    ".join(log[-15:])
            + "\nSet GRID_ENCODER_VERBOSE_BUILD=1 to see the whole build, or GRID_ENCODER_BUILD_CUDA=0 for a "
              "CPU-only build.") from None  # the log's tail is in the message: one error, not two
    with open(os.path.join(build_dir, _BUILT_MARKER), "w") as f:
        f.write(name + "\n")


def _built_library(kind):
    """The path of the library `kind`, built first if its build folder holds no finished build."""
    name, build_dir = _build_dir(kind)
    marker = os.path.join(build_dir, _BUILT_MARKER)
    if not os.path.exists(marker):
        _check_toolchain(kind in _CUDA_KINDS)
        os.makedirs(build_dir, exist_ok=True)
        with _build_lock(build_dir):
            if not os.path.exists(marker):  # else another process built it while we waited
                _compile(name, build_dir, kind)
    return os.path.join(build_dir, f"{name}.so")


has_cuda = None  # whether the loaded library has CUDA kernels (set by load)
loaded_on_use = {}  # the libraries built on first use that are loaded, by kind (see load_on_use; kept: mapped)
_main_library = None
_on_use_lock = threading.Lock()
# (device type, dtype) -> the library built on first use that serves it
_ON_USE = {("cpu", torch.float64): "cpu64", ("cuda", torch.float16): "cuda16", ("cuda", torch.bfloat16): "cuda16"}


def load():
    """Builds the library (CPU, or CPU and CUDA) if needed, then loads it as torch.ops.grid_encoder."""
    global has_cuda, _main_library
    has_cuda = _want_cuda()
    library = _built_library("cuda" if has_cuda else "cpu")
    torch.ops.load_library(library)
    _main_library = ctypes.CDLL(library)
    return library


def load_for(t):
    """Loads the library built on first use that serves tensor t's dtype and device, if there is one and it is not
    loaded yet (see load_on_use). Returns whether t needs such a library and it is loaded now (by this call or an
    earlier one, perhaps on another thread)."""
    kind = _ON_USE.get((t.device.type, t.dtype))
    if kind is None:
        return False
    if kind not in loaded_on_use:
        load_on_use(kind)
    return kind in loaded_on_use


def load_on_use(kind):
    """Builds (if no earlier run did) and loads the library `kind` ("cpu64" or "cuda16") and hands its kernels to
    the main library. Returns whether it loaded it now: False when it is loaded already, and for "cuda16" when the
    main library has no CUDA kernels (it refuses CUDA tensors itself)."""
    with _on_use_lock:
        if kind in loaded_on_use or (kind == "cuda16" and not has_cuda):
            return False
        library = ctypes.CDLL(_built_library(kind))
        library.grid_encoder_phases.restype = ctypes.c_void_p
        set_phases = _main_library.grid_encoder_set_phases
        set_phases.restype = ctypes.c_bool
        if not set_phases(kind.encode(), ctypes.c_void_p(library.grid_encoder_phases())):
            raise RuntimeError(f"grid_encoder: the main library does not take the {kind!r} kernels")
        loaded_on_use[kind] = library
        return True
