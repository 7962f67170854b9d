// CUDA loops around the per-point math of sample_math.h: one thread per (n, p) sample, looping over
// channels; scatter targets accumulate with atomicAdd in float32 (float64 for double inputs). Under
// torch.use_deterministic_algorithms(True) the scatters take a sorted path instead (deterministic_scatter).
//
// forward_cuda<kDims> and friends are defined here and instantiated in cuda/*.cu, one file per
// operator and dimensionality, so that ninja compiles them in parallel.
#pragma once

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sort.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <type_traits>

#include "kernels.h"

namespace grid_encoder {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // beyond this, threads loop (grid-stride)

/// target[j * stride_c] += values[j] for the block's channels, atomically (see scatter_block). Whole blocks of
/// contiguous, aligned float channels go as 16-byte vector atomics where the GPU has them (sm_90 and later).
struct AtomicAdd {
  template <typename acc_t>
  __device__ void operator()(acc_t* target, int64_t stride_c, int count, bool channel_words,
                             const acc_t (&values)[kChannelBlock]) const {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if constexpr (std::is_same<acc_t, float>::value) {
      if (channel_words && count == kChannelBlock) {
#pragma unroll
        for (int j = 0; j < kChannelBlock; j += 4) {
          atomicAdd(reinterpret_cast<float4*>(target + j),
                    make_float4(values[j], values[j + 1], values[j + 2], values[j + 3]));
        }
        return;
      }
    }
#endif
    (void)channel_words;
#pragma unroll
    for (int j = 0; j < kChannelBlock; ++j) {
      if (j < count) atomicAdd(target + j * stride_c, values[j]);
    }
  }
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

/// Launches kernel(args...) on the current stream of `device` with one thread per item (grid-stride beyond
/// kMaxBlocks blocks).
template <typename Kernel, typename... Args>
void launch_items(int64_t items, c10::DeviceIndex device, Kernel kernel, const Args&... args) {
  if (items == 0) return;
  const int64_t blocks = std::min<int64_t>((items + kThreads - 1) / kThreads, kMaxBlocks);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

/// Launches kernel(args...) with one thread per (n, p) sample.
template <typename Kernel, typename... Args>
void launch(const Problem& pb, Kernel kernel, const Args&... args) {
  launch_items(pb.sample_count(), pb.input.get_device(), kernel, args...);
}

// ---------------------------------------------------------------------------------------------
// Deterministic scatter. Atomic adds land in an order that depends on timing, so float sums can differ in
// their last bits from run to run. Instead: (1) one thread per sample writes the (position, coefficient)
// pair of each of its taps (scatter_pairs_point); (2) a stable sort groups equal positions, keeping
// sample order within a group; (3) one thread per (group, channel) sums coefficient * grad_output over
// its group in that order and writes the total. Same sums, same order, every run.

template <typename scalar_t, Interp I, Padding P, int kDims, typename Args>
__global__ void __launch_bounds__(kThreads)
    scatter_pairs_kernel(const Args args, bool along_grid, int64_t* position, opmath_t<scalar_t>* coefficient) {
  constexpr int kTaps = PointTaps<opmath_t<scalar_t>, I, P, kDims>::kTaps;
  GRID_ENCODER_FOR_EACH_SAMPLE(args, point) {
    scatter_pairs_point<scalar_t, I, P, kDims>(args, point, along_grid, position + point * kTaps,
                                               coefficient + point * kTaps);
  }
}

/// Thread (i, c) with i the first pair of a group of equal sorted positions: target[n, c, position] = its sum.
template <typename scalar_t, typename acc_t, int kDims, typename Args>
__global__ void __launch_bounds__(kThreads)
    group_sums_kernel(const Args args, ImageView<acc_t, kDims> target, int taps, const int64_t* sorted_position,
                      const int64_t* order, const acc_t* coefficient) {
  const int64_t pairs = args.batch * args.points * taps;
  for (int64_t item = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; item < pairs * args.channels;
       item += int64_t(gridDim.x) * blockDim.x) {
    const int64_t first = item / args.channels, c = item % args.channels;
    const int64_t position = sorted_position[first];
    if (position == kNoPosition || (first > 0 && sorted_position[first - 1] == position)) continue;
    acc_t sum = 0;
    for (int64_t i = first; i < pairs && sorted_position[i] == position; ++i) {
      const int64_t pair = order[i], point = pair / taps;
      const int64_t n = point / args.points, p = point % args.points;
      sum += coefficient[pair] * static_cast<acc_t>(*args.grad_output.at(n, c, p, args.channels, args.points));
    }
    int64_t rest = position, offset = 0;
#pragma unroll
    for (int e = 0; e < kDims; ++e) {
      offset += (rest % args.size[e]) * target.stride[e];
      rest /= args.size[e];
    }
    target.plane(rest, c)[offset] = sum;
  }
}

/// Adds the backward's scatter (along_grid false: into args.grad_input) or the double backward's (true:
/// into args.input_grad_out), deterministically. The target is zero-filled and written once per element.
template <typename scalar_t, Interp I, Padding P, int kDims, typename Args>
void deterministic_scatter(const Problem& pb, const Args& args, bool along_grid) {
  using acc_t = opmath_t<scalar_t>;
  constexpr int kTaps = PointTaps<acc_t, I, P, kDims>::kTaps;
  const auto& target = along_grid ? args.input_grad_out : args.grad_input;
  const int64_t pairs = pb.sample_count() * kTaps;
  const at::Tensor position = at::empty({pairs}, pb.input.options().dtype(at::kLong));
  const at::Tensor coefficient = at::empty({pairs}, pb.input.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  launch(pb, scatter_pairs_kernel<scalar_t, I, P, kDims, Args>, args, along_grid, position.data_ptr<int64_t>(),
         coefficient.data_ptr<acc_t>());
  const auto sorted = at::sort(position, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  launch_items(pairs * pb.channels(), pb.input.get_device(), group_sums_kernel<scalar_t, acc_t, kDims, Args>, args,
               target, kTaps, std::get<0>(sorted).data_ptr<int64_t>(), std::get<1>(sorted).data_ptr<int64_t>(),
               coefficient.data_ptr<acc_t>());
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
    const auto kernel = backward_kernel<scalar_t, I, P, kDims, ArgsFor<scalar_t, kDims>>;
    if (args.grad_input.data == nullptr || !at::globalContext().deterministicAlgorithms()) {
      launch(pb, kernel, args);
    } else {
      auto grid_only = args;
      grid_only.grad_input.data = nullptr;
      if (grid_only.grad_grid != nullptr) launch(pb, kernel, grid_only);
      deterministic_scatter<scalar_t, I, P, kDims>(pb, args, /*along_grid=*/false);
    }
  });
}

template <int kDims>
void double_backward_cuda(const Problem& pb) {
  GRID_ENCODER_CUDA_DISPATCH(pb, "grid_sample_double_backward_cuda", {
    const auto kernel = double_backward_kernel<scalar_t, I, P, kDims, ArgsFor<scalar_t, kDims>>;
    if (args.input_grad_out.data == nullptr || !at::globalContext().deterministicAlgorithms()) {
      launch(pb, kernel, args);
    } else {
      auto pointwise = args;
      pointwise.input_grad_out.data = nullptr;
      if (pointwise.grad_grad_output_out.data != nullptr || pointwise.grid_grad_out != nullptr) {
        launch(pb, kernel, pointwise);
      }
      deterministic_scatter<scalar_t, I, P, kDims>(pb, args, /*along_grid=*/true);
    }
  });
}

}  // namespace grid_encoder
