// CUDA loops around the per-point math of sample_math.h. The channel blocks of a sample are split over
// `lanes` neighbouring threads of a warp (see lanes_per_point), which sum their shares of the grid
// derivatives with shuffles; scatter targets accumulate with atomicAdd in float32 (float64 for double
// inputs). Under torch.use_deterministic_algorithms(True) the scatters take a sorted path instead
// (deterministic_scatter).
//
// forward_cuda<scalar_t, kDims> and friends are defined here and instantiated in cuda/*.cu, one file per
// operator, dimensionality and dtype, so that ninja compiles them in parallel.
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

/// Threads per sample: with at most 4 taps, one per channel block, rounded up to a power of two, at most a warp
/// (lanes then take every lanes-th block). Neighbouring lanes read neighbouring channels of the same taps, so a
/// warp's loads touch fewer cache lines, and more loads are in flight. Samples with more taps (bicubic, 3-D)
/// already keep enough loads in flight per thread; split, they measured slower (H200).
inline int lanes_per_point(int64_t channels, int taps) {
  if (taps > 4) return 1;
  const int64_t blocks = (channels + kDeviceChannelBlock - 1) / kDeviceChannelBlock;
  int lanes = 1;
  while (lanes < blocks && lanes < 32) lanes *= 2;
  return lanes;
}

/// One thread's share of a sample: its channels, and whether it has a sample at all (the loops run whole
/// warps, so that every lane can take part in the shuffles).
struct Lane {
  int64_t point;
  ChannelSpan span;
  bool active;
  __device__ bool first() const { return span.begin == 0; }
};

/// Calls body(Lane) for every (sample, lane) pair. Items are rounded up to whole warps and the stride is a
/// multiple of the warp size, so all lanes of a warp run the same iterations and the lanes of a sample share
/// a warp (lanes divides 32).
template <typename Args, typename F>
__device__ inline void for_each_lane(const Args& a, int lanes, const F& body) {
  const int64_t samples = a.batch * a.points;
  const int64_t items = (samples * lanes + 31) / 32 * 32;
#pragma unroll 1
  for (int64_t item = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; item < items;
       item += int64_t(gridDim.x) * blockDim.x) {
    const int64_t point = item / lanes;
    const int lane = static_cast<int>(item % lanes);
    body(Lane{point, ChannelSpan{lane * kChannelBlock, a.channels, lanes * kChannelBlock}, point < samples});
  }
}

/// value[e] = the sum of value[e] over the `lanes` lanes of a sample (every lane of the warp must call this).
template <typename T, int kDims>
__device__ inline void sum_over_lanes(T (&value)[kDims], int lanes) {
  for (int offset = lanes / 2; offset > 0; offset /= 2) {
#pragma unroll
    for (int e = 0; e < kDims; ++e) value[e] += __shfl_xor_sync(0xffffffffu, value[e], offset);
  }
}

/// Thread blocks per SM that a kernel's registers must leave room for (__launch_bounds__; the double backward
/// gets half). Left alone, the compiler spends registers on loads in flight until one block of bilinear
/// sampling fits (185 registers), and these latency-bound gathers starve for warps; with 64 they do not
/// spill. Bicubic's 16 or 64 taps keep their registers: fewer spill.
template <Interp I>
constexpr int kMinBlocks = I == Interp::Bicubic ? 1 : 4;

// args: views of input [N, C, (D,) H, W], grid [N, P, dims] and output [N, C, P]
template <typename scalar_t, Interp I, Padding P, int kDims, typename Args>
__global__ void __launch_bounds__(kThreads, kMinBlocks<I>) forward_kernel(const Args args, int lanes) {
  for_each_lane(args, lanes, [&](Lane l) {
    if (l.active) forward_point<scalar_t, I, P, kDims>(args, l.point, l.span);
  });
}

// args: grad_output [N, C, P]; writes grad_grid [N, P, dims] and/or adds into grad_input (like input)
template <typename scalar_t, Interp I, Padding P, int kDims, typename Args>
__global__ void __launch_bounds__(kThreads, kMinBlocks<I>) backward_kernel(const Args args, int lanes) {
  for_each_lane(args, lanes, [&](Lane l) {
    if (args.grad_grid != nullptr) {
      opmath_t<scalar_t> dgrid[kDims] = {};
      if (l.active) backward_grid_point<scalar_t, I, P, kDims>(args, l.point, l.span, dgrid);
      sum_over_lanes(dgrid, lanes);
      if (l.active && l.first()) store_grid_values(args.grad_grid, l.point, dgrid);
    }
    if (args.grad_input.data != nullptr && l.active) {
      backward_input_point<scalar_t, I, P, kDims>(args, l.point, l.span, AtomicAdd{});
    }
  });
}

// args: grad_grad_input / grad_grad_grid (either may be absent), grad_output; writes the requested
// d grad_output [N, C, P] and d grid [N, P, dims], and/or adds into d input (like input)
template <typename scalar_t, Interp I, Padding P, int kDims, typename Args>
__global__ void __launch_bounds__(kThreads, (kMinBlocks<I> + 1) / 2) double_backward_kernel(const Args args, int lanes) {
  for_each_lane(args, lanes, [&](Lane l) {
    if (args.grad_grad_output_out.data != nullptr || args.grid_grad_out != nullptr) {
      opmath_t<scalar_t> dgrid[kDims] = {};
      if (l.active) double_backward_point<scalar_t, I, P, kDims>(args, l.point, l.span, dgrid);
      if (args.grid_grad_out != nullptr) {
        sum_over_lanes(dgrid, lanes);
        if (l.active && l.first()) store_grid_values(args.grid_grad_out, l.point, dgrid);
      }
    }
    if (args.input_grad_out.data != nullptr && l.active) {
      double_backward_input_point<scalar_t, I, P, kDims>(args, l.point, l.span, AtomicAdd{});
    }
  });
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

/// Launches kernel(args, lanes) with lanes_per_point threads per sample, in whole warps.
template <int kTaps, typename Kernel, typename Args>
void launch_lanes(const Problem& pb, Kernel kernel, const Args& args) {
  const int lanes = lanes_per_point(pb.channels(), kTaps);
  launch_items((pb.sample_count() * lanes + 31) / 32 * 32, pb.input.get_device(), kernel, args, lanes);
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

/// Runs the statement with I, P, kTaps (taps per sample) and args bound to the call's settings.
#define GRID_ENCODER_CUDA_DISPATCH(pb, ...)                                                          \
  dispatch_interp<kDims>(pb, [&](auto interp_tag, auto padding_tag, auto) {                         \
    constexpr Interp I = decltype(interp_tag)::value;                                                 \
    constexpr Padding P = decltype(padding_tag)::value;                                               \
    constexpr int kTaps = PointTaps<float, I, P, kDims>::kTaps;                                       \
    const auto args = make_args<scalar_t, kDims>(pb);                                                 \
    __VA_ARGS__                                                                                       \
  })

}  // namespace

template <typename scalar_t, int kDims>
void forward_cuda(const Problem& pb) {
  GRID_ENCODER_CUDA_DISPATCH(pb, {
    launch_lanes<kTaps>(pb, forward_kernel<scalar_t, I, P, kDims, ArgsFor<scalar_t, kDims>>, args);
  });
}

template <typename scalar_t, int kDims>
void backward_cuda(const Problem& pb) {
  GRID_ENCODER_CUDA_DISPATCH(pb, {
    const auto kernel = backward_kernel<scalar_t, I, P, kDims, ArgsFor<scalar_t, kDims>>;
    if (args.grad_input.data == nullptr || !at::globalContext().deterministicAlgorithms()) {
      launch_lanes<kTaps>(pb, kernel, args);
    } else {
      auto grid_only = args;
      grid_only.grad_input.data = nullptr;
      if (grid_only.grad_grid != nullptr) launch_lanes<kTaps>(pb, kernel, grid_only);
      deterministic_scatter<scalar_t, I, P, kDims>(pb, args, /*along_grid=*/false);
    }
  });
}

template <typename scalar_t, int kDims>
void double_backward_cuda(const Problem& pb) {
  GRID_ENCODER_CUDA_DISPATCH(pb, {
    const auto kernel = double_backward_kernel<scalar_t, I, P, kDims, ArgsFor<scalar_t, kDims>>;
    if (args.input_grad_out.data == nullptr || !at::globalContext().deterministicAlgorithms()) {
      launch_lanes<kTaps>(pb, kernel, args);
    } else {
      auto pointwise = args;
      pointwise.input_grad_out.data = nullptr;
      if (pointwise.grad_grad_output_out.data != nullptr || pointwise.grid_grad_out != nullptr) {
        launch_lanes<kTaps>(pb, kernel, pointwise);
      }
      deterministic_scatter<scalar_t, I, P, kDims>(pb, args, /*along_grid=*/true);
    }
  });
}

}  // namespace grid_encoder
