// The CUDA launchers, one per kernel, as the host code (phases_cuda.cpp) sees them: raw views in, one kernel run on
// the given stream. kernels_cuda.cuh defines them with their kernels; instantiations/*.cu instantiate them per dtype
// and dimensionality. Neither this file nor kernels_cuda.cuh includes ATen's tensor headers: parsing those took
// most of each instantiation file's compile time.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "point_work.h"

namespace grid_encoder {

/// The sampler's settings and the stream a launcher runs on.
struct CudaLaunch {
  Mode mode;
  Padding padding;
  cudaStream_t stream;
};

/// Whether rows of `channels` elements of scalar_t, in a buffer of their own, all start on 16-byte boundaries: then
/// whole channel blocks of a row load and store as 16-byte words.
template <typename scalar_t>
bool rows_are_whole_words(int64_t channels) {
  return (channels * static_cast<int64_t>(sizeof(scalar_t))) % 16 == 0;
}

/// One pair as the binned sums read it, filed under its position: the sample (numbered n * P + p within the
/// scatter's chunk of batch items, which holds fewer than 2^31 samples) and its tap's coefficient, loaded together.
template <typename T>
struct alignas(2 * sizeof(T)) FiledPair {
  int32_t sample;
  T coefficient;
};

/// The binned scatter's scan of the counts per position takes tiles of this many positions.
constexpr int64_t kScanTile = 4096;

/// The scan's tiles for `positions` positions.
C10_HOST_DEVICE inline int64_t scan_tiles(int64_t positions) { return (positions + kScanTile - 1) / kScanTile; }

/// The binned scatter's buffers for one chunk of batch items (see binned_scatter in phases_cuda.cpp and the kernels
/// in kernels_cuda.cuh); a pair is one tap of one sample, numbered sample * taps + tap.
template <typename scalar_t>
struct BinnedBuffers {
  using acc_t = opmath_t<scalar_t>;
  int64_t positions = 0;                         // the chunk's items * the input's spatial size: target positions
  int taps = 0;                                  // taps per sample
  int* count = nullptr;                          // [positions] pairs per position (zeroed before the first pass)
  int64_t* tile_sums = nullptr;                  // [tiles of kScanTile positions] the scan's own
  int64_t* end = nullptr;                        // [positions] one past each position's range of the list
  int64_t* position = nullptr;                   // [pairs] deterministic filing only: each pair's position and
  acc_t* coefficient = nullptr;                  // [pairs] coefficient, and
  const int64_t* order = nullptr;                // [pairs] the pairs sorted by position (stable)
  FiledPair<acc_t>* list = nullptr;              // [pairs] the pairs, filed by position
};

// Point-wise outputs: output; grad_grid; the double backward's d_grad_output and d_grid.
template <typename scalar_t, int kDims>
void launch_sample_output(const SampleArgs<scalar_t, kDims>& args, CudaLaunch launch);
template <typename scalar_t, int kDims>
void launch_grad_grid(const SampleArgs<scalar_t, kDims>& args, CudaLaunch launch);
template <typename scalar_t, int kDims>
void launch_double_backward_points(const SampleArgs<scalar_t, kDims>& args, CudaLaunch launch);

// Scatters into grad_input or d_input (coefficients says which): by float atomics into a zeroed target, or binned
// in three launchers (counting and the scan of the counts, filing, sums; see kernels_cuda.cuh).
template <typename scalar_t, int kDims>
void launch_atomic_scatter(const SampleArgs<scalar_t, kDims>& args, Coefficients coefficients, CudaLaunch launch);
template <typename scalar_t, int kDims>
void launch_count_pairs(const SampleArgs<scalar_t, kDims>& args, Coefficients coefficients,
                        const BinnedBuffers<scalar_t>& buffers, CudaLaunch launch);
template <typename scalar_t, int kDims>
void launch_file_pairs(const SampleArgs<scalar_t, kDims>& args, Coefficients coefficients,
                       const BinnedBuffers<scalar_t>& buffers, CudaLaunch launch);
template <typename scalar_t, int kDims>
void launch_binned_sums(const SampleArgs<scalar_t, kDims>& args, Coefficients coefficients,
                        const BinnedBuffers<scalar_t>& buffers, CudaLaunch launch);

/// out[n, s, c] = in[n, c, s] for `items` = N * spatial (n, s) pairs (channels_last.cu).
template <typename scalar_t>
void launch_channels_last_copy(const scalar_t* in, scalar_t* out, int64_t channels, int64_t spatial, int64_t items,
                               cudaStream_t stream);

}  // namespace grid_encoder
