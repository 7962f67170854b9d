// CUDA loops around the per-point math of sample_math.h: one thread per (n, p) sample, looping over
// channels; scatter targets accumulate with atomicAdd in float32 (float64 for double inputs).
//
// forward_cuda<kDims> and friends are defined here and instantiated in cuda/*.cu, one file per
// operator and dimensionality, so that ninja compiles them in parallel.
#pragma once

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "kernels.h"

namespace grid_encoder {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // beyond this, threads loop (grid-stride)

struct AtomicAdd {
  template <typename acc_t>
  __device__ void operator()(acc_t* target, acc_t value) const { atomicAdd(target, value); }
};

#define GRID_ENCODER_FOR_EACH_SAMPLE(a, point)                                                        \
  for (int64_t point = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; point < a.batch * a.points;   \
       point += int64_t(gridDim.x) * blockDim.x)

// args: views of input [N, C, (D,) H, W], grid [N, P, dims] and output [N, C, P]
template <typename scalar_t, Interp I, Padding P, int kDims, typename Args>
__global__ void __launch_bounds__(kThreads) forward_kernel(const Args args) {
  GRID_ENCODER_FOR_EACH_SAMPLE(args, point) { forward_point<scalar_t, I, P, kDims>(args, point); }
}

// args: grad_output [N, C, P]; writes grad_grid [N, P, dims] and/or adds into grad_input (like input)
template <typename scalar_t, Interp I, Padding P, int kDims, typename Args>
__global__ void __launch_bounds__(kThreads) backward_kernel(const Args args) {
  GRID_ENCODER_FOR_EACH_SAMPLE(args, point) {
    if (args.grad_grid != nullptr) backward_grid_point<scalar_t, I, P, kDims>(args, point);
    if (args.grad_input.data != nullptr) {
      backward_input_point<scalar_t, I, P, kDims>(args, point, 0, args.channels, AtomicAdd{});
    }
  }
}

// args: grad_grad_input / grad_grad_grid (either may be absent), grad_output; writes the requested
// d grad_output [N, C, P] and d grid [N, P, dims], and/or adds into d input (like input)
template <typename scalar_t, Interp I, Padding P, int kDims, typename Args>
__global__ void __launch_bounds__(kThreads) double_backward_kernel(const Args args) {
  GRID_ENCODER_FOR_EACH_SAMPLE(args, point) {
    if (args.grad_grad_output_out.data != nullptr || args.grid_grad_out != nullptr) {
      double_backward_point<scalar_t, I, P, kDims>(args, point);
    }
    if (args.input_grad_out.data != nullptr) {
      double_backward_input_point<scalar_t, I, P, kDims>(args, point, 0, args.channels, AtomicAdd{});
    }
  }
}

/// Launches kernel(args) on the current stream with one thread per sample.
template <typename Kernel, typename Args>
void launch(const Problem& pb, Kernel kernel, const Args& args) {
  const int64_t samples = pb.sample_count();
  if (samples == 0) return;
  const int64_t blocks = std::min<int64_t>((samples + kThreads - 1) / kThreads, kMaxBlocks);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(pb.input.get_device()).stream();
  kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(args);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

/// Runs the statement with scalar_t, I, P and args bound to the call's dtype and settings.
#define GRID_ENCODER_CUDA_DISPATCH(pb, NAME, ...)                                                    \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16,                   \
                                  pb.input.scalar_type(), NAME, [&] {                                \
    dispatch_interp<kDims>(pb, [&](auto interp_tag, auto padding_tag, auto) {                        \
      constexpr Interp I = decltype(interp_tag)::value;                                               \
      constexpr Padding P = decltype(padding_tag)::value;                                             \
      const auto args = make_args<scalar_t, kDims>(pb);                                               \
      __VA_ARGS__                                                                                     \
    });                                                                                               \
  })

}  // namespace

template <int kDims>
void forward_cuda(const Problem& pb) {
  GRID_ENCODER_CUDA_DISPATCH(pb, "grid_sample_forward_cuda", {
    launch(pb, forward_kernel<scalar_t, I, P, kDims, ArgsFor<scalar_t, kDims>>, args);
  });
}

template <int kDims>
void backward_cuda(const Problem& pb) {
  GRID_ENCODER_CUDA_DISPATCH(pb, "grid_sample_backward_cuda", {
    launch(pb, backward_kernel<scalar_t, I, P, kDims, ArgsFor<scalar_t, kDims>>, args);
  });
}

template <int kDims>
void double_backward_cuda(const Problem& pb) {
  GRID_ENCODER_CUDA_DISPATCH(pb, "grid_sample_double_backward_cuda", {
    launch(pb, double_backward_kernel<scalar_t, I, P, kDims, ArgsFor<scalar_t, kDims>>, args);
  });
}

}  // namespace grid_encoder
