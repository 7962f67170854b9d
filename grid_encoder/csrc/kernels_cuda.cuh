// The CUDA kernels, and the launchers of kernels_cuda.h that run them: loops around the per-point work of
// point_work.h. Point-wise outputs (output, grad_grid, d_grad_output, d_grid) take one sample per thread, or per
// `lanes` neighbouring threads of a warp that split its channel blocks (see lanes_per_point) and sum their shares
// of the grid derivatives with shuffles. Input-shaped gradients take the binned scatter (no float atomics), or for
// small problems the atomic scatter (atomic_scatter_kernel); phases_cuda.cpp chooses and allocates.
//
// The launchers are instantiated in instantiations/*.cu, one file per kernel group, dimensionality and dtype, so
// that ninja compiles them in parallel.
#pragma once

#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>

#include "kernels_cuda.h"

namespace grid_encoder {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // beyond this, threads loop (grid-stride)

/// Calls body(item) for every item in [0, items), spread over the launch's threads (grid-stride: a thread takes
/// every (blocks * threads)-th item, so that any launch size covers every item).
template <typename F>
__device__ inline void for_each_item(int64_t items, const F& body) {
#pragma unroll 1
  for (int64_t item = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; item < items;
       item += int64_t(gridDim.x) * blockDim.x) {
    body(item);
  }
}

/// Threads per sample: with at most 8 taps (bilinear, trilinear, nearest), one per channel block, rounded up to a
/// power of two, at most a warp (lanes then take every lanes-th block). Neighbouring lanes read neighbouring
/// channels of the same taps, so a warp's loads touch fewer cache lines, and more loads are in flight. Bicubic's
/// 16 or 64 taps already keep enough loads in flight per thread; split, they measured slower (H200).
inline int lanes_per_point(int64_t channels, int taps) {
  if (taps > 8) return 1;
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
  for_each_item((samples * lanes + 31) / 32 * 32, [&](int64_t item) {
    const int64_t point = item / lanes;
    const int index = static_cast<int>(item % lanes);
    body(Lane{point, ChannelSpan{index * kChannelBlock, a.channels, lanes * kChannelBlock}, point < samples});
  });
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
/// sampling fits (185 registers), and these latency-bound gathers starve for warps; with 64 registers 2-D
/// sampling does not spill, trilinear needs 80 (3 blocks). Bicubic's 16 or 64 taps keep their registers: fewer
/// spill.
template <Mode M, int kDims>
constexpr int kMinBlocks = M == Mode::Bicubic ? 1 : kDims == 3 ? 3 : 4;

// The kernels take their sampler S (mode, padding, dimensionality) as a Sampler<...> of taps.h.

/// The reduced forward (forward_reduced_point) holds a group's partial result besides a point's taps: room for one
/// block fewer, or it spills.
template <Mode M, int kDims, bool kReduced>
constexpr int kForwardMinBlocks = kMinBlocks<M, kDims> - (kReduced && kMinBlocks<M, kDims> > 1 ? 1 : 0);

// args: views of input [N, C, (D,) H, W], grid [N, P, dims] and output [N, C, P]; kReduced: groups of items reduced,
// output [N / group, C, P] (see forward_reduced_point; a kernel of its own, so that the plain one keeps its registers)
template <typename scalar_t, typename S, bool kReduced>
__global__ void __launch_bounds__(kThreads, kForwardMinBlocks<S::kMode, S::kDims, kReduced>)
    forward_kernel(const SampleArgs<scalar_t, S::kDims> args, int lanes) {
  for_each_lane(args, lanes, [&](Lane lane) {
    if (!lane.active) return;
    if constexpr (kReduced) {
      forward_reduced_point<scalar_t, S::kMode, S::kPadding, S::kDims>(args, lane.point, lane.span);
    } else {
      forward_point<scalar_t, S::kMode, S::kPadding, S::kDims>(args, lane.point, lane.span);
    }
  });
}

// args: grad_output [N, C, P]; writes grad_grid [N, P, dims] (or d_grid: see grad_grid_point)
template <typename scalar_t, typename S>
__global__ void __launch_bounds__(kThreads, kMinBlocks<S::kMode, S::kDims>)
    grad_grid_kernel(const SampleArgs<scalar_t, S::kDims> args, int lanes) {
  for_each_lane(args, lanes, [&](Lane lane) {
    opmath_t<scalar_t> grad_grid[S::kDims] = {};
    if (lane.active) {
      grad_grid_point<scalar_t, S::kMode, S::kPadding, S::kDims>(args, lane.point, lane.span, grad_grid);
    }
    sum_over_lanes(grad_grid, lanes);
    if (lane.active && lane.first()) store_grid_values(grid_result(args), lane.point, grad_grid);
  });
}

// args: grad_grad_input / grad_grad_grid (either may be absent), grad_output; writes the requested
// d_grad_output [N, C, P] and d_grid [N, P, dims]
template <typename scalar_t, typename S>
__global__ void __launch_bounds__(kThreads, (kMinBlocks<S::kMode, S::kDims> + 1) / 2)
    double_backward_kernel(const SampleArgs<scalar_t, S::kDims> args, int lanes) {
  for_each_lane(args, lanes, [&](Lane lane) {
    opmath_t<scalar_t> d_grid[S::kDims] = {};
    if (lane.active) {
      double_backward_point<scalar_t, S::kMode, S::kPadding, S::kDims>(args, lane.point, lane.span, d_grid);
    }
    if (args.d_grid != nullptr) {
      sum_over_lanes(d_grid, lanes);
      if (lane.active && lane.first()) store_grid_values(args.d_grid, lane.point, d_grid);
    }
  });
}

/// Launches kernel(args...) on `stream` with one thread per item (grid-stride beyond kMaxBlocks blocks).
template <typename Kernel, typename... Args>
void launch_items(int64_t items, cudaStream_t stream, Kernel kernel, const Args&... args) {
  if (items == 0) return;
  const int64_t blocks = std::min<int64_t>((items + kThreads - 1) / kThreads, kMaxBlocks);
  kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

/// Launches kernel(args, lanes, extra...) with lanes_per_point threads per sample, in whole warps.
template <int kTaps, typename Kernel, typename Args, typename... Extra>
void launch_lanes(cudaStream_t stream, Kernel kernel, const Args& args, const Extra&... extra) {
  const int lanes = lanes_per_point(args.channels, kTaps);
  launch_items((args.batch * args.points * lanes + 31) / 32 * 32, stream, kernel, args, lanes, extra...);
}

// ---------------------------------------------------------------------------------------------
// Binned scatter. Adding into the input gradient with atomics costs one L2 operation per tap and channel (a
// float4 atomic counts as four): on scattered points that operation rate, not memory bandwidth, bounds the
// backward pass. So the scatter runs as a gather instead, over chunks of batch items (phases_cuda.cpp):
//   (1) one pass over the samples counts the pairs (tap of a sample) of each input position (tap_position);
//   (2) a scan of the counts gives each position its range in a list of pairs (three short launches over tiles of
//       kScanTile positions: each tile's sum, the tiles' offsets, each position's end);
//   (3) a second pass over the samples recomputes the taps and files each pair, its sample and its tap's
//       coefficient (scatter_coefficients), into its position's range;
//   (4) one thread per (position, channel block) sums coefficient * grad_output over its range and stores the
//       total: every element of the target is written once, without atomics.
// Step (3) files with integer atomics, in whatever order the threads arrive. Under
// torch.use_deterministic_algorithms(True) step (1) keeps each pair's position and coefficient, and a stable sort
// of the positions orders the pairs for step (3), in sample order, so that every sum adds its terms in the same
// order on every run.

/// Step (1): count each sample's taps per position (and, for the deterministic filing, keep each pair's position
/// and coefficient).
template <typename scalar_t, typename S>
__global__ void __launch_bounds__(kThreads)
    count_pairs_kernel(const SampleArgs<scalar_t, S::kDims> args, Coefficients coefficients,
                       const BinnedBuffers<scalar_t> buffers) {
  constexpr int kDims = S::kDims;
  using Taps = PointTaps<opmath_t<scalar_t>, S::kMode, S::kPadding, kDims>;
  for_each_item(args.batch * args.points, [&](int64_t point) {
    const Taps taps = point_taps<scalar_t, S::kMode, S::kPadding, kDims>(args, point);
    opmath_t<scalar_t> coef[Taps::kTaps];
    if (buffers.position != nullptr) scatter_coefficients<kDims>(args, point, taps, coefficients, coef);
#pragma unroll(unroll_taps(Taps::kTaps))
    for (int k = 0; k < Taps::kTaps; ++k) {
      const int64_t q = tap_position<kDims>(args, point, taps, k);
      if (buffers.position != nullptr) {
        const int64_t pair = point * Taps::kTaps + k;
        buffers.position[pair] = q;
        buffers.coefficient[pair] = coef[k];
      }
      if (q != kNoPosition) atomicAdd(buffers.count + q, 1);
    }
  });
}

/// The inclusive prefix sum of `value` over the block's threads, in thread order (every thread of the block must
/// call it); *block_sum: the sum over all of them.
__device__ inline int64_t block_inclusive_sum(int64_t value, int64_t* block_sum) {
  constexpr int kWarps = kThreads / 32;
  __shared__ int64_t warp_sums[kWarps];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int offset = 1; offset < 32; offset *= 2) {
    const int64_t below = __shfl_up_sync(0xffffffffu, value, offset);
    if (lane >= offset) value += below;
  }
  if (lane == 31) warp_sums[warp] = value;
  __syncthreads();
  int64_t before = 0, sum = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    before += w < warp ? warp_sums[w] : 0;
    sum += warp_sums[w];
  }
  __syncthreads();  // every thread has read warp_sums before a next call writes it
  *block_sum = sum;
  return before + value;
}

constexpr int kScanPerThread = static_cast<int>(kScanTile / kThreads);  // a tile's positions per thread
static_assert(kScanTile % kThreads == 0, "a tile of the scan is whole threads' positions");

/// Step (2a), a block per tile: tile_sums[t] = the pairs counted for the positions of tile t.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) scan_tile_sums_kernel(const BinnedBuffers<scalar_t> buffers) {
  for (int64_t tile = blockIdx.x; tile < scan_tiles(buffers.positions); tile += gridDim.x) {
    int64_t sum = 0;
#pragma unroll
    for (int i = 0; i < kScanPerThread; ++i) {
      const int64_t q = tile * kScanTile + i * kThreads + threadIdx.x;  // coalesced
      sum += q < buffers.positions ? buffers.count[q] : 0;
    }
    int64_t tile_sum;
    block_inclusive_sum(sum, &tile_sum);
    if (threadIdx.x == 0) buffers.tile_sums[tile] = tile_sum;
  }
}

/// Step (2b), one block: tile_sums[t] = the sum over the tiles before t (each thread takes a run of tiles).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) scan_tile_offsets_kernel(const BinnedBuffers<scalar_t> buffers) {
  const int64_t tiles = scan_tiles(buffers.positions), per_thread = (tiles + kThreads - 1) / kThreads;
  const int64_t begin = std::min<int64_t>(threadIdx.x * per_thread, tiles);
  const int64_t stop = std::min<int64_t>(begin + per_thread, tiles);
  int64_t sum = 0;
  for (int64_t t = begin; t < stop; ++t) sum += buffers.tile_sums[t];
  int64_t unused;
  int64_t offset = block_inclusive_sum(sum, &unused) - sum;
  for (int64_t t = begin; t < stop; ++t) {
    const int64_t tile_sum = buffers.tile_sums[t];
    buffers.tile_sums[t] = offset;
    offset += tile_sum;
  }
}

/// Step (2c), a block per tile: end[q] = the tile's offset + the counts of its positions up to q (each thread takes
/// kScanPerThread consecutive positions).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) scan_ends_kernel(const BinnedBuffers<scalar_t> buffers) {
  for (int64_t tile = blockIdx.x; tile < scan_tiles(buffers.positions); tile += gridDim.x) {
    const int64_t first = tile * kScanTile + int64_t(threadIdx.x) * kScanPerThread;
    int64_t running[kScanPerThread];
    int64_t sum = 0;
#pragma unroll
    for (int i = 0; i < kScanPerThread; ++i) {
      sum += first + i < buffers.positions ? buffers.count[first + i] : 0;
      running[i] = sum;
    }
    int64_t unused;
    const int64_t before = buffers.tile_sums[tile] + block_inclusive_sum(sum, &unused) - sum;
#pragma unroll
    for (int i = 0; i < kScanPerThread; ++i) {
      if (first + i < buffers.positions) buffers.end[first + i] = before + running[i];
    }
  }
}

/// Step (3): list[the next free slot of its position's range] = (sample, coefficient) for every tap inside; one
/// thread per sample (one per pair, recomputing the sample's taps each, measured 1.6x slower). end[q]: one past the
/// range of position q; count[q] (the number of pairs of q) counts down to 0 as they are filed.
template <typename scalar_t, typename S>
__global__ void __launch_bounds__(kThreads)
    file_pairs_kernel(const SampleArgs<scalar_t, S::kDims> args, Coefficients coefficients,
                      const BinnedBuffers<scalar_t> buffers) {
  constexpr int kDims = S::kDims;
  using Taps = PointTaps<opmath_t<scalar_t>, S::kMode, S::kPadding, kDims>;
  for_each_item(args.batch * args.points, [&](int64_t point) {
    const Taps taps = point_taps<scalar_t, S::kMode, S::kPadding, kDims>(args, point);
    opmath_t<scalar_t> coef[Taps::kTaps];
    scatter_coefficients<kDims>(args, point, taps, coefficients, coef);
#pragma unroll(unroll_taps(Taps::kTaps))
    for (int k = 0; k < Taps::kTaps; ++k) {
      const int64_t q = tap_position<kDims>(args, point, taps, k);
      if (q == kNoPosition) continue;
      const int64_t slot = buffers.end[q] - atomicSub(buffers.count + q, 1);
      buffers.list[slot] = {static_cast<int32_t>(point), coef[k]};
    }
  });
}

/// Step (3) of the deterministic filing: list[i] = the sample and coefficient of the i-th pair in position order
/// (pairs outside the input sort last, past every range).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    file_sorted_pairs_kernel(int64_t pairs, const BinnedBuffers<scalar_t> buffers) {
  for_each_item(pairs, [&](int64_t i) {
    const int64_t pair = buffers.order[i];
    buffers.list[i] = {static_cast<int32_t>(pair / buffers.taps), buffers.coefficient[pair]};
  });
}

/// Step (4). Thread (q, lane) of `lanes` per position q = n * (pixels per plane) + pixel: for the lane's channel
/// blocks, target[n, c, pixel] = the sum over the pairs filed for q of coefficient * grad_output[n, c, p], where
/// the pair's sample is n * P + p; grad_output's channels of a sample are contiguous (operators.cpp copies it
/// point-major otherwise).
template <typename scalar_t, int kDims>
__global__ void __launch_bounds__(kThreads)
    binned_sums_kernel(const SampleArgs<scalar_t, kDims> args, ImageView<scalar_t, kDims> target, int lanes,
                       const BinnedBuffers<scalar_t> buffers) {
  using acc_t = opmath_t<scalar_t>;
  for_each_item(buffers.positions * lanes, [&](int64_t item) {
    const int64_t q = item / lanes;
    const int lane = static_cast<int>(item % lanes);
    const int64_t first = q == 0 ? 0 : buffers.end[q - 1], stop = buffers.end[q];
    int64_t rest = q, offset = 0;
#pragma unroll
    for (int e = 0; e < kDims; ++e) {
      offset += (rest % args.size[e]) * target.stride[e];
      rest /= args.size[e];
    }
    const int64_t n = rest, first_sample = n * args.points;
    const auto& grad_output = args.grad_output;
    for_each_block(ChannelSpan{lane * kChannelBlock, args.channels, lanes * kChannelBlock}, [&](ChannelBlock b) {
      acc_t sum[kChannelBlock] = {};
      for (int64_t i = first; i < stop; ++i) {
        const FiledPair<acc_t> pair = buffers.list[i];
        acc_t go[kChannelBlock];
        load_points_block(grad_output, n, pair.sample - first_sample, b, go);  // the sample is in batch item n
#pragma unroll
        for (int j = 0; j < kChannelBlock; ++j) sum[j] += pair.coefficient * go[j];
      }
      store_block(target.plane(n, b.first) + offset, target.stride_c, b.count, target.channel_words, sum);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Atomic scatter, for small problems: the binned scatter's half-dozen launches and its buffers cost more than
// the atomics it avoids when there are few terms (the seed example: 26 520). One launch adds every term into a
// zeroed target with float atomics, as torch's own backward does.

/// target[n, c, tap k] += coefficient_k * grad_output[n, c, p] by atomics, `lanes` threads per sample splitting
/// its channel blocks (target: args.grad_input or args.d_input, zeroed).
template <typename scalar_t, typename S>
__global__ void __launch_bounds__(kThreads)
    atomic_scatter_kernel(const SampleArgs<scalar_t, S::kDims> args, int lanes, Coefficients coefficients) {
  constexpr int kDims = S::kDims;
  using T = opmath_t<scalar_t>;
  using Taps = PointTaps<T, S::kMode, S::kPadding, kDims>;
  const ImageView<scalar_t, kDims>& target = coefficients == Coefficients::Weights ? args.grad_input : args.d_input;
  for_each_lane(args, lanes, [&](Lane lane) {
    if (!lane.active) return;
    const int64_t n = lane.point / args.points, p = lane.point % args.points;
    const Taps taps = point_taps<scalar_t, S::kMode, S::kPadding, kDims>(args, lane.point);
    const TapOffsets<Taps::kTaps> offsets = taps.offsets(target.stride);
    T coefficient[Taps::kTaps];
    scatter_coefficients<kDims>(args, lane.point, taps, coefficients, coefficient);
    for_each_block(lane.span, [&](ChannelBlock b) {
      T go[kChannelBlock];
      load_points_block(args.grad_output, n, p, b, go);
      scalar_t* plane = target.plane(n, b.first);
#pragma unroll(unroll_taps(Taps::kTaps))
      for (int k = 0; k < Taps::kTaps; ++k) {
        if (!offsets.inside[k]) continue;
        for (int j = 0; j < b.count; ++j) {
          gpuAtomicAddNoReturn(plane + offsets.offset[k] + j * target.stride_c,
                               static_cast<scalar_t>(coefficient[k] * go[j]));
        }
      }
    });
  });
}

}  // namespace

// The launchers of kernels_cuda.h. A sampler-templated kernel is chosen by the launch's mode and padding.

/// Launches the kernel that pick(sampler) names for the launch's sampler, lanes_per_point threads per sample.
template <int kDims, typename Pick, typename... Args>
void launch_sampler_lanes(CudaLaunch launch, const Pick& pick, const Args&... args) {
  dispatch_sampler<kDims>(launch.mode, launch.padding, [&](auto s) {
    launch_lanes<decltype(s)::kTaps>(launch.stream, pick(s), args...);
  });
}

template <typename scalar_t, int kDims>
void launch_sample_output(const SampleArgs<scalar_t, kDims>& args, CudaLaunch launch) {
  if (args.group > 1) {
    launch_sampler_lanes<kDims>(launch, [](auto s) { return forward_kernel<scalar_t, decltype(s), true>; }, args);
  } else {
    launch_sampler_lanes<kDims>(launch, [](auto s) { return forward_kernel<scalar_t, decltype(s), false>; }, args);
  }
}

template <typename scalar_t, int kDims>
void launch_grad_grid(const SampleArgs<scalar_t, kDims>& args, CudaLaunch launch) {
  launch_sampler_lanes<kDims>(launch, [](auto s) { return grad_grid_kernel<scalar_t, decltype(s)>; }, args);
}

template <typename scalar_t, int kDims>
void launch_double_backward_points(const SampleArgs<scalar_t, kDims>& args, CudaLaunch launch) {
  launch_sampler_lanes<kDims>(launch, [](auto s) { return double_backward_kernel<scalar_t, decltype(s)>; }, args);
}

template <typename scalar_t, int kDims>
void launch_atomic_scatter(const SampleArgs<scalar_t, kDims>& args, Coefficients coefficients, CudaLaunch launch) {
  launch_sampler_lanes<kDims>(launch, [](auto s) { return atomic_scatter_kernel<scalar_t, decltype(s)>; }, args,
                              coefficients);
}

template <typename scalar_t, int kDims>
void launch_count_pairs(const SampleArgs<scalar_t, kDims>& args, Coefficients coefficients,
                        const BinnedBuffers<scalar_t>& buffers, CudaLaunch launch) {
  dispatch_sampler<kDims>(launch.mode, launch.padding, [&](auto s) {
    launch_items(args.batch * args.points, launch.stream, count_pairs_kernel<scalar_t, decltype(s)>, args,
                 coefficients, buffers);
  });
  const int64_t tiles = scan_tiles(buffers.positions);
  if (tiles == 0) return;
  const auto blocks = static_cast<unsigned>(std::min(tiles, kMaxBlocks));
  scan_tile_sums_kernel<<<blocks, kThreads, 0, launch.stream>>>(buffers);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  scan_tile_offsets_kernel<<<1, kThreads, 0, launch.stream>>>(buffers);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  scan_ends_kernel<<<blocks, kThreads, 0, launch.stream>>>(buffers);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, int kDims>
void launch_file_pairs(const SampleArgs<scalar_t, kDims>& args, Coefficients coefficients,
                       const BinnedBuffers<scalar_t>& buffers, CudaLaunch launch) {
  if (buffers.order != nullptr) {
    launch_items(args.batch * args.points * buffers.taps, launch.stream, file_sorted_pairs_kernel<scalar_t>,
                 args.batch * args.points * buffers.taps, buffers);
    return;
  }
  dispatch_sampler<kDims>(launch.mode, launch.padding, [&](auto s) {
    launch_items(args.batch * args.points, launch.stream, file_pairs_kernel<scalar_t, decltype(s)>, args,
                 coefficients, buffers);
  });
}

template <typename scalar_t, int kDims>
void launch_binned_sums(const SampleArgs<scalar_t, kDims>& args, Coefficients coefficients,
                        const BinnedBuffers<scalar_t>& buffers, CudaLaunch launch) {
  const int lanes = lanes_per_point(args.channels, 1);
  launch_items(buffers.positions * lanes, launch.stream, binned_sums_kernel<scalar_t, kDims>, args,
               coefficients == Coefficients::Weights ? args.grad_input : args.d_input, lanes, buffers);
}

}  // namespace grid_encoder
