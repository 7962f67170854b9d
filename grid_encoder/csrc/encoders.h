// The encoders' plane coordinates (sample_planes in encoders.py), per item, for the CPU loop (operators.cpp) and the
// CUDA kernels (plane_coords.cu): K planes read points [N, P, D] at the column pairs (a_k, b_k), so their grids are
// coords[n, k, p] = (points[n, p, a_k], points[n, p, b_k]); the gradient of points sums, for each column, the
// gradients of the coordinates picked from it. Both are linear, each the other's derivative.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

#ifdef GRID_ENCODER_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace grid_encoder {

/// The most planes one operator call takes: their columns travel in the kernels' arguments.
constexpr int kMaxCoordPlanes = 128;

/// The column each coordinate is picked from: x of plane k at column[2k], its y at column[2k + 1].
struct PlaneColumns {
  int32_t column[2 * kMaxCoordPlanes];
  int32_t planes;
};

/// coords ([N, K, P, 2], contiguous) from points ([N, P, D], any strides).
template <typename scalar_t>
struct PickArgs {
  const scalar_t* points;
  int64_t stride_n, stride_p, stride_d;
  scalar_t* coords;
  int64_t points_per_item;
  PlaneColumns columns;
};

/// Item (n * K + k) * P + p: plane k's two coordinates of point p of batch item n.
template <typename scalar_t>
C10_HOST_DEVICE inline void pick_plane_coords(const PickArgs<scalar_t>& a, int64_t item) {
  const int64_t p = item % a.points_per_item, nk = item / a.points_per_item;
  const int64_t k = nk % a.columns.planes, n = nk / a.columns.planes;
  const scalar_t* point = a.points + n * a.stride_n + p * a.stride_p;
  a.coords[2 * item] = point[a.columns.column[2 * k] * a.stride_d];
  a.coords[2 * item + 1] = point[a.columns.column[2 * k + 1] * a.stride_d];
}

/// sums ([N, P, D], contiguous) from grad ([N, K, P, 2], any strides).
template <typename scalar_t>
struct ColumnSumArgs {
  const scalar_t* grad;
  int64_t stride_n, stride_k, stride_p, stride_j;
  scalar_t* sums;
  int64_t points_per_item, width;
  PlaneColumns columns;
};

/// Sample n * P + p: for each column of point p of batch item n, the sum of the gradients of its picks, added in
/// the order of the planes and then x before y, each addition rounded to scalar_t (as a chain of tensor additions
/// rounds it); zero for a column no plane reads.
template <typename scalar_t>
C10_HOST_DEVICE inline void sum_plane_columns(const ColumnSumArgs<scalar_t>& a, int64_t sample) {
  const int64_t n = sample / a.points_per_item, p = sample % a.points_per_item;
  const scalar_t* grad = a.grad + n * a.stride_n + p * a.stride_p;
  for (int64_t c = 0; c < a.width; ++c) {
    scalar_t sum = scalar_t(0);
    bool first = true;
    for (int32_t pick = 0; pick < 2 * a.columns.planes; ++pick) {
      if (a.columns.column[pick] != c) continue;
      const scalar_t g = grad[(pick / 2) * a.stride_k + (pick % 2) * a.stride_j];
      sum = first ? g : static_cast<scalar_t>(sum + g);
      first = false;
    }
    a.sums[sample * a.width + c] = sum;
  }
}

#ifdef GRID_ENCODER_WITH_CUDA
/// One thread per item (plane_coords.cu).
template <typename scalar_t>
void launch_pick_plane_coords(const PickArgs<scalar_t>& a, int64_t items, cudaStream_t stream);
/// One thread per sample (plane_coords.cu).
template <typename scalar_t>
void launch_sum_plane_columns(const ColumnSumArgs<scalar_t>& a, int64_t samples, cudaStream_t stream);
#endif

}  // namespace grid_encoder
