// The encoders' glue around the samplers (encoders.py), per item, for the CPU loops (operators.cpp) and the CUDA
// kernels (encoders.cu):
// - plane coordinates: K planes read points [N, P, D] at the column pairs (a_k, b_k), so their grids are
//   coords[n, k, p] = (points[n, p, a_k], points[n, p, b_k]); the gradient of points sums, for each column, the
//   gradients of the coordinates picked from it. Both are linear, each the other's derivative.
// - the planes' product (K-Planes' Hadamard product of the K planes' features) and its first and second derivatives.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

#ifdef GRID_ENCODER_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#include "point_work.h"  // load_block, store_block, opmath_t

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

/// The most planes one product operator call takes: each thread keeps their features in registers, its loops
/// unrolled to this many planes.
constexpr int kMaxProductPlanes = 8;

/// The channels of one product element: a thread's share of a point's row. Where every tensor of a call has
/// contiguous, aligned channels (ProductArgs::channel_words), the GPU loads and stores them as words (load_block).
constexpr int kProductChannels = 4;

/// A tensor [N, K, P, C] of the planes' features, or [N, P, C] with stride_k unused.
template <typename T>
struct FeatureView {
  T* data = nullptr;
  int64_t stride_n = 0, stride_k = 0, stride_p = 0, stride_c = 0;
  C10_HOST_DEVICE T* at(int64_t n, int64_t k, int64_t p, int64_t c) const {
    return data + n * stride_n + k * stride_k + p * stride_p + c * stride_c;
  }
};

/// The product's tensors, each present only where its operator uses it.
template <typename scalar_t>
struct ProductArgs {
  FeatureView<const scalar_t> features;   // [N, K, P, C]
  FeatureView<const scalar_t> grad;       // [N, P, C]: the product's gradient
  FeatureView<const scalar_t> grad_grad;  // [N, K, P, C]: the gradient of the backward's result
  FeatureView<scalar_t> product;          // [N, P, C]
  FeatureView<scalar_t> d_features;       // [N, K, P, C]
  FeatureView<scalar_t> d_grad;           // [N, P, C]
  int64_t batch = 0, points = 0, channels = 0;
  int planes = 0;
  bool channel_words = false;  // every tensor's channels contiguous, its blocks aligned (see load_block)
};

/// Which of the product's element functions below a loop runs.
enum class ProductStep { Forward, Backward, DoubleBackward };

/// An element of [N, P, C]: point p of batch item n, channels [c, c + count), count <= kProductChannels.
struct FeatureElement {
  int64_t n, p, c;
  int count;
};

template <typename T>
using ProductValues = T[kProductChannels];

/// values = the element's channels of plane k of `view` ([N, P, C] views ignore k).
template <typename T, typename scalar_t>
C10_HOST_DEVICE inline void load_element(const ProductArgs<scalar_t>& a, const FeatureView<const scalar_t>& view,
                                         int k, FeatureElement x, ProductValues<T>& values) {
  load_block(view.at(x.n, k, x.p, x.c), view.stride_c, x.count, a.channel_words, values);
}

/// The element's channels of plane k of `view` = values.
template <typename T, typename scalar_t>
C10_HOST_DEVICE inline void store_element(const ProductArgs<scalar_t>& a, const FeatureView<scalar_t>& view, int k,
                                          FeatureElement x, const ProductValues<T>& values) {
  store_block(view.at(x.n, k, x.p, x.c), view.stride_c, x.count, a.channel_words, values);
}

/// product = f_0 * f_1 * ... * f_{K-1}, multiplied left to right, each product rounded to scalar_t (as a chain of
/// tensor multiplications rounds it).
template <typename scalar_t>
C10_HOST_DEVICE inline void product_element(const ProductArgs<scalar_t>& a, FeatureElement x) {
  ProductValues<scalar_t> product;
  load_element(a, a.features, 0, x, product);
#pragma unroll
  for (int k = 1; k < kMaxProductPlanes; ++k) {
    if (k >= a.planes) continue;
    ProductValues<scalar_t> factor;
    load_element(a, a.features, k, x, factor);
#pragma unroll
    for (int j = 0; j < kProductChannels; ++j) product[j] = static_cast<scalar_t>(product[j] * factor[j]);
  }
  store_element(a, a.product, 0, x, product);
}

/// d_features_k = grad * prod_{j != k} f_j, with the chain's own multiplications: walking back from grad, plane k's
/// gradient is the running gradient times the product of the planes before it, and the running gradient takes
/// plane k's factor (so the results have the chain's bits). The products of the planes before each k are multiplied
/// again rather than kept: kept, they took 32 more registers and half the blocks an SM can hold, and the kernel
/// moved less than its forward does (performance log, version 53).
template <typename scalar_t>
C10_HOST_DEVICE inline void product_backward_element(const ProductArgs<scalar_t>& a, FeatureElement x) {
  ProductValues<scalar_t> factor[kMaxProductPlanes];
#pragma unroll
  for (int k = 0; k < kMaxProductPlanes; ++k) {
    if (k < a.planes) load_element(a, a.features, k, x, factor[k]);
  }
  ProductValues<scalar_t> running, d_feature;
  load_element(a, a.grad, 0, x, running);
#pragma unroll
  for (int k = kMaxProductPlanes - 1; k >= 1; --k) {
    if (k >= a.planes) continue;
#pragma unroll
    for (int j = 0; j < kProductChannels; ++j) {
      scalar_t before = factor[0][j];  // f_0 * ... * f_{k-1}
#pragma unroll
      for (int i = 1; i < k; ++i) before = static_cast<scalar_t>(before * factor[i][j]);
      d_feature[j] = static_cast<scalar_t>(running[j] * before);
      running[j] = static_cast<scalar_t>(running[j] * factor[k][j]);
    }
    store_element(a, a.d_features, k, x, d_feature);
  }
  store_element(a, a.d_features, 0, x, running);
}

/// The backward's vector-Jacobian product with grad_grad (gg), whichever of d_grad and d_features is present:
/// d_grad = sum_k gg_k prod_{j != k} f_j and d_features_j = grad sum_{k != j} gg_k prod_{i != j, k} f_i. For each j,
/// one pass over the other planes carries prod_{i != j} f_i and its derivative along gg (computed in float for the
/// 16-bit dtypes).
template <typename scalar_t>
C10_HOST_DEVICE inline void product_double_backward_element(const ProductArgs<scalar_t>& a, FeatureElement x) {
  using T = opmath_t<scalar_t>;
  ProductValues<T> f[kMaxProductPlanes], gg[kMaxProductPlanes], grad, d_grad = {}, d_feature;
#pragma unroll
  for (int k = 0; k < kMaxProductPlanes; ++k) {
    if (k >= a.planes) continue;
    load_element(a, a.features, k, x, f[k]);
    load_element(a, a.grad_grad, k, x, gg[k]);
  }
  load_element(a, a.grad, 0, x, grad);
#pragma unroll
  for (int j = 0; j < kMaxProductPlanes; ++j) {
    if (j >= a.planes) continue;
#pragma unroll
    for (int c = 0; c < kProductChannels; ++c) {
      T others = 1, along_gg = 0;  // prod_{i != j} f_i and sum_{k != j} gg_k prod_{i != j, k} f_i
#pragma unroll
      for (int i = 0; i < kMaxProductPlanes; ++i) {
        if (i == j || i >= a.planes) continue;
        along_gg = along_gg * f[i][c] + others * gg[i][c];
        others *= f[i][c];
      }
      d_grad[c] += gg[j][c] * others;
      d_feature[c] = grad[c] * along_gg;
    }
    if (a.d_features.data != nullptr) store_element(a, a.d_features, j, x, d_feature);
  }
  if (a.d_grad.data != nullptr) store_element(a, a.d_grad, 0, x, d_grad);
}

/// Runs the step's element function on element x.
template <typename scalar_t>
C10_HOST_DEVICE inline void product_step_element(const ProductArgs<scalar_t>& a, ProductStep step, FeatureElement x) {
  if (step == ProductStep::Forward) {
    product_element(a, x);
  } else if (step == ProductStep::Backward) {
    product_backward_element(a, x);
  } else {
    product_double_backward_element(a, x);
  }
}

#ifdef GRID_ENCODER_WITH_CUDA
/// The launchers of encoders.cu: one thread per item, sample or element.
template <typename scalar_t>
void launch_pick_plane_coords(const PickArgs<scalar_t>& a, int64_t items, cudaStream_t stream);
template <typename scalar_t>
void launch_sum_plane_columns(const ColumnSumArgs<scalar_t>& a, int64_t samples, cudaStream_t stream);
template <typename scalar_t>
void launch_product(const ProductArgs<scalar_t>& a, ProductStep step, cudaStream_t stream);
#endif

}  // namespace grid_encoder
