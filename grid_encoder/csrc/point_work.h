// Per-point work of every derivative order: the views of the tensors of one call (SampleArgs), channel blocks, one
// function per point-wise result (forward_point, grad_grid_point, double_backward_point: the CUDA kernels call
// these), and what the CPU's runs of points (kernels_cpu.h) share with them: a point's taps (point_taps), the grid
// terms of grad_grid and of the eikonal step's d_grid (add_grid_terms), and the tap positions and coefficients of
// the scatters into input-shaped gradients. The scatters themselves differ by device (kernels_cpu.h adds in place,
// kernels_cuda.cuh bins).
#pragma once

#include <c10/macros/Macros.h>

#include <climits>
#include <cstdint>
#include <type_traits>

#include "taps.h"

namespace grid_encoder {

// ---------------------------------------------------------------------------------------------
// Channel blocks. The per-point functions walk the channels in blocks of kChannelBlock, tap by tap. On the
// GPU, which reads channels-last working copies (operators.cpp), a block's values at one tap share a
// cache sector and are loaded back to back. The CPU reads tensors as they come, mostly channels-first,
// where one channel at a time measured fastest.
constexpr int kDeviceChannelBlock = 8;
#ifdef __CUDA_ARCH__
constexpr int kChannelBlock = kDeviceChannelBlock;
#else
constexpr int kChannelBlock = 1;
#endif

template <typename scalar_t, int kDims>
struct ImageView {
  scalar_t* data = nullptr;  // nullptr: tensor absent
  int64_t stride_n = 0, stride_c = 0;
  int64_t stride[kDims] = {};  // stride[e]: along grid axis e
  bool channel_words = false;  // channels contiguous, every tap's block 16-byte aligned (see load_block)
  C10_HOST_DEVICE scalar_t* plane(int64_t n, int64_t c) const { return data + n * stride_n + c * stride_c; }
  ImageView from_item(int64_t first) const {  // the view of batch items first, first + 1, ...
    ImageView view = *this;
    if (data != nullptr) view.data += first * stride_n;
    return view;
  }
};

/// A block of up to kChannelBlock channels starting at `first`; `count` of them are real.
struct ChannelBlock {
  int64_t first;
  int count;
};

/// A whole block of kWidth channels as one unit of words (16 bytes each, or the whole block where it is smaller; see
/// load_block).
template <typename scalar_t, int kWidth>
struct alignas(kWidth * sizeof(scalar_t) < 16 ? kWidth * sizeof(scalar_t) : 16) ChannelWords {
  scalar_t value[kWidth];
};

/// out[j] = tap[j * stride_c] for the block's channels, zero past `count`. On the GPU a whole block of
/// contiguous, 16-byte aligned channels (ImageView::channel_words) loads as 16-byte words: one load
/// instruction per 16 bytes instead of one per channel, each touching as many cache lines as a warp has points.
template <typename T, typename scalar_t, int kWidth>
C10_HOST_DEVICE inline void load_block(const scalar_t* tap, int64_t stride_c, int count, bool channel_words,
                                       T (&out)[kWidth]) {
#ifdef __CUDA_ARCH__
  if (channel_words && count == kWidth) {
    const ChannelWords<scalar_t, kWidth> block = *reinterpret_cast<const ChannelWords<scalar_t, kWidth>*>(tap);
#pragma unroll
    for (int j = 0; j < kWidth; ++j) out[j] = static_cast<T>(block.value[j]);
    return;
  }
#endif
  (void)channel_words;
#pragma unroll
  for (int j = 0; j < kWidth; ++j) out[j] = j < count ? static_cast<T>(tap[j * stride_c]) : T(0);
}

/// target[j * stride_c] = values[j] for the block's channels: load_block's counterpart (16-byte words on the GPU
/// where channel_words allows).
template <typename scalar_t, typename T, int kWidth>
C10_HOST_DEVICE inline void store_block(scalar_t* target, int64_t stride_c, int count, bool channel_words,
                                        const T (&values)[kWidth]) {
#ifdef __CUDA_ARCH__
  if (channel_words && count == kWidth) {
    ChannelWords<scalar_t, kWidth> block;
#pragma unroll
    for (int j = 0; j < kWidth; ++j) block.value[j] = static_cast<scalar_t>(values[j]);
    *reinterpret_cast<ChannelWords<scalar_t, kWidth>*>(target) = block;
    return;
  }
#endif
  (void)channel_words;
#pragma unroll
  for (int j = 0; j < kWidth; ++j) {
    if (j < count) target[j * stride_c] = static_cast<scalar_t>(values[j]);
  }
}

/// value[j] += sum_k coef[k] * plane[tap k + j * stride_c] for the block's channels (plane: its first).
template <typename T, int kTaps, typename Image, typename scalar_t>
C10_HOST_DEVICE inline void gather_block(const T (&coef)[kTaps], const TapOffsets<kTaps>& offsets, const Image& image,
                                         const scalar_t* plane, int count,
                                         T (&value)[kChannelBlock]) {
#pragma unroll(unroll_taps(kTaps))
  for (int k = 0; k < kTaps; ++k) {
    if (!offsets.inside[k]) continue;
    T tap[kChannelBlock];
    load_block(plane + offsets.offset[k], image.stride_c, count, image.channel_words, tap);
#pragma unroll
    for (int j = 0; j < kChannelBlock; ++j) value[j] += coef[k] * tap[j];
  }
}

/// sums[k] += sum_j weight[j] * plane[tap k + j * stride_c]: per-tap channel sums of the block.
template <typename T, int kTaps, typename Image, typename scalar_t>
C10_HOST_DEVICE inline void tap_sums_block(const T (&weight)[kChannelBlock], const TapOffsets<kTaps>& offsets,
                                           const Image& image, const scalar_t* plane, int count,
                                           T (&sums)[kTaps]) {
#pragma unroll(unroll_taps(kTaps))
  for (int k = 0; k < kTaps; ++k) {
    if (!offsets.inside[k]) continue;
    T tap[kChannelBlock];
    load_block(plane + offsets.offset[k], image.stride_c, count, image.channel_words, tap);
    T sum = 0;
#pragma unroll
    for (int j = 0; j < kChannelBlock; ++j) sum += weight[j] * tap[j];
    sums[k] += sum;
  }
}

/// sum_k coef[k] * sums[k]
template <typename T, int kTaps>
C10_HOST_DEVICE inline T dot(const T (&coef)[kTaps], const T (&sums)[kTaps]) {
  T total = 0;
#pragma unroll(unroll_taps(kTaps))
  for (int k = 0; k < kTaps; ++k) total += coef[k] * sums[k];
  return total;
}

// ---------------------------------------------------------------------------------------------
// Tensor views handed to the per-point functions. Images ([N, C, spatial...]) and point tensors ([N, C, P]: outputs
// and their gradients, the output's spatial dimensions flattened) keep their own strides; grids ([N, P, kDims]) are
// contiguous.

template <typename scalar_t>
struct PointsView {  // [N, C, P]
  scalar_t* data = nullptr;  // nullptr: tensor absent
  int64_t stride_n = 0, stride_c = 0, stride_p = 0;
  bool channel_words = false;  // channels contiguous, every point's blocks 16-byte aligned (point-major tensors)
  C10_HOST_DEVICE scalar_t* element(int64_t n, int64_t c, int64_t p) const {
    return data + n * stride_n + c * stride_c + p * stride_p;
  }
  PointsView from_item(int64_t first) const {  // the view of batch items first, first + 1, ...
    PointsView view = *this;
    if (data != nullptr) view.data += first * stride_n;
    return view;
  }
};

/// Everything the kernels of one call share.
template <typename scalar_t, int kDims>
struct SampleArgs {
  using scalar_type = scalar_t;
  static constexpr int dims = kDims;
  int64_t batch = 0, channels = 0, points = 0;  // batch: the output's items (see group)
  int64_t group = 1;     // forward: input and grid items per output item, reduced (forward_reduced_point); else 1
  bool product = false;  // the reduction of a group: the items' product, else their sum
  int64_t size[kDims] = {};  // input extent along grid axis e
  bool align_corners = false;
  const scalar_t* grid = nullptr;  // [N, P, kDims]
  ImageView<const scalar_t, kDims> input;
  PointsView<scalar_t> output;                         // forward
  PointsView<const scalar_t> grad_output;              // backward and double backward
  ImageView<scalar_t, kDims> grad_input;               // backward (scatter)
  scalar_t* grad_grid = nullptr;                       // backward, [N, P, kDims]
  ImageView<const scalar_t, kDims> grad_grad_input;    // double backward input, may be absent
  const scalar_t* grad_grad_grid = nullptr;            // double backward input, may be absent
  PointsView<scalar_t> d_grad_output;           // d/d grad_output
  ImageView<scalar_t, kDims> d_input;           // d/d input (scatter)
  scalar_t* d_grid = nullptr;                   // d/d grid, [N, P, kDims]

  /// These views restricted to batch items [first, first + count) (the CUDA binned scatter's chunks).
  SampleArgs items(int64_t first, int64_t count) const {
    SampleArgs part = *this;
    part.batch = count;
    const auto grid_from = [&](auto* g) { return g == nullptr ? g : g + first * points * kDims; };
    part.grid = grid_from(grid);
    part.grad_grid = grid_from(grad_grid);
    part.grad_grad_grid = grid_from(grad_grad_grid);
    part.d_grid = grid_from(d_grid);
    part.input = input.from_item(first);
    part.grad_input = grad_input.from_item(first);
    part.grad_grad_input = grad_grad_input.from_item(first);
    part.d_input = d_input.from_item(first);
    part.output = output.from_item(first);
    part.grad_output = grad_output.from_item(first);
    part.d_grad_output = d_grad_output.from_item(first);
    return part;
  }
};

template <typename scalar_t>
using opmath_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;

template <typename scalar_t, Mode M, Padding P, int kDims, typename Args>
C10_HOST_DEVICE inline PointTaps<opmath_t<scalar_t>, M, P, kDims> point_taps(const Args& a, int64_t point) {
  using T = opmath_t<scalar_t>;
  T g[kDims];
#pragma unroll
  for (int e = 0; e < kDims; ++e) g[e] = static_cast<T>(a.grid[point * kDims + e]);
  return PointTaps<T, M, P, kDims>(g, a.size, a.align_corners);
}

// ---------------------------------------------------------------------------------------------
// Per-point work. `point` runs over N * P; n = point / P, p = point % P. A function handles the channels of
// its ChannelSpan; grid derivatives sum over all channels, so the functions add this span's share into
// `grid_share`, and the caller sums the shares of a point (CPU: one span holds every channel; GPU: the lanes of a
// point hold a span each, see kernels_cuda.cuh) and stores the total with store_grid_values.

/// value[j] = t[n, b.first + j, p] for the block's channels, zero past its end (as 16-byte words on the GPU where
/// the tensor is point-major: see load_block).
template <typename T, typename scalar_t>
C10_HOST_DEVICE inline void load_points_block(const PointsView<scalar_t>& t, int64_t n, int64_t p,
                                              ChannelBlock b, T (&value)[kChannelBlock]) {
  load_block(t.element(n, b.first, p), t.stride_c, b.count, t.channel_words, value);
}

/// t[n, b.first + j, p] = value[j] for the block's channels (see load_points_block).
template <typename scalar_t, typename T>
C10_HOST_DEVICE inline void store_points_block(const PointsView<scalar_t>& t, int64_t n, int64_t p,
                                               ChannelBlock b, const T (&value)[kChannelBlock]) {
  store_block(t.element(n, b.first, p), t.stride_c, b.count, t.channel_words, value);
}

/// The channels of a point that one thread handles: the blocks starting at begin, begin + step, ... below end.
struct ChannelSpan {
  int64_t begin, end, step;
};

/// Every channel in [begin, end), one block after another.
C10_HOST_DEVICE inline ChannelSpan channel_range(int64_t begin, int64_t end) {
  return {begin, end, kChannelBlock};
}

/// Calls body(ChannelBlock) for the channel blocks of the span.
template <typename F>
C10_HOST_DEVICE inline void for_each_block(ChannelSpan span, const F& body) {
#pragma unroll 1  // unrolled, the blocks' loads multiply the registers and starve the GPU of threads
  for (int64_t c = span.begin; c < span.end; c += span.step) {
    const int64_t left = span.end - c;
    body(ChannelBlock{c, left < kChannelBlock ? static_cast<int>(left) : kChannelBlock});
  }
}

/// value[e] = t[point, e] for a [N, P, kDims] tensor.
template <typename scalar_t, typename T, int kDims>
C10_HOST_DEVICE inline void load_grid_values(const scalar_t* t, int64_t point, T (&value)[kDims]) {
#pragma unroll
  for (int e = 0; e < kDims; ++e) value[e] = static_cast<T>(t[point * kDims + e]);
}

/// t[point, e] = value[e] for a [N, P, kDims] tensor.
template <typename scalar_t, typename T, int kDims>
C10_HOST_DEVICE inline void store_grid_values(scalar_t* t, int64_t point, const T (&value)[kDims]) {
#pragma unroll
  for (int e = 0; e < kDims; ++e) t[point * kDims + e] = static_cast<scalar_t>(value[e]);
}

/// output[n, c, p] = sum_k W_k V_k[n, c]
template <typename scalar_t, Mode M, Padding P, int kDims, typename Args>
C10_HOST_DEVICE inline void forward_point(const Args& a, int64_t point, ChannelSpan span) {
  using T = opmath_t<scalar_t>;
  using Taps = PointTaps<T, M, P, kDims>;
  const int64_t n = point / a.points, p = point % a.points;
  const Taps taps = point_taps<scalar_t, M, P, kDims>(a, point);
  const auto offsets = taps.offsets(a.input.stride);
  T weight[Taps::kTaps];
  taps.weights(weight);
  for_each_block(span, [&](ChannelBlock b) {
    T value[kChannelBlock] = {};
    gather_block(weight, offsets, a.input, a.input.plane(n, b.first), b.count, value);
    store_points_block(a.output, n, p, b, value);
  });
}

/// With groups of items (a.group > 1): output[n, c, p] reduces the values of input items n * group, ...,
/// n * group + group - 1 at their own grid points p, their sum or product (a.product) in item order, each value and
/// each partial result rounded to scalar_t, as the same operations on the items' outputs round them.
template <typename scalar_t, Mode M, Padding P, int kDims, typename Args>
C10_HOST_DEVICE inline void forward_reduced_point(const Args& a, int64_t point, ChannelSpan span) {
  using T = opmath_t<scalar_t>;
  using Taps = PointTaps<T, M, P, kDims>;
  const int64_t n = point / a.points, p = point % a.points;
  for_each_block(span, [&](ChannelBlock b) {
    scalar_t reduced[kChannelBlock];
#pragma unroll 1
    for (int64_t k = 0; k < a.group; ++k) {
      const int64_t item = n * a.group + k;
      const Taps taps = point_taps<scalar_t, M, P, kDims>(a, item * a.points + p);
      T weight[Taps::kTaps];
      taps.weights(weight);
      T value[kChannelBlock] = {};
      gather_block(weight, taps.offsets(a.input.stride), a.input, a.input.plane(item, b.first), b.count, value);
#pragma unroll
      for (int j = 0; j < kChannelBlock; ++j) {
        const scalar_t v = static_cast<scalar_t>(value[j]);
        reduced[j] = k == 0 ? v : static_cast<scalar_t>(a.product ? reduced[j] * v : reduced[j] + v);
      }
    }
    store_points_block(a.output, n, p, b, reduced);
  });
}

/// grid_share[e] += sum_k C_ek go_dot_v[k], where go_dot_v[k] = sum_c gO V_k and C_ek = dW_k/dg_e, or, where
/// grad_grad_grid (ggG) is given, sum_f d2W_k/dg_e dg_f ggG_f (see grad_grid_point).
template <int kDims, typename Args, typename Taps, typename T>
C10_HOST_DEVICE inline void add_grid_terms(const Args& a, int64_t point, const Taps& taps,
                                           const T (&go_dot_v)[Taps::kTaps], T (&grid_share)[kDims]) {
  T coefficient[kDims][Taps::kTaps];
  if (a.grad_grad_grid != nullptr) {
    T ggg[kDims];
    load_grid_values(a.grad_grad_grid, point, ggg);
    taps.directional_grads(ggg, coefficient);
  } else {
    taps.weight_grads(coefficient);
  }
#pragma unroll
  for (int e = 0; e < kDims; ++e) grid_share[e] += dot(coefficient[e], go_dot_v);
}

/// grid_share[e] += the span's share of grad_grid[n, p, e] = sum_k dW_k/dg_e sum_c gO[n, c, p] V_k[n, c]; or, where
/// grad_grad_grid (ggG) is given, of the double backward's d_grid when ggG is its only input, the eikonal step's:
/// sum_k (sum_f d2W_k/dg_e dg_f ggG_f) sum_c gO V_k (double_backward_point's second term alone, with this
/// function's fewer registers). The result goes to grid_result(a).
template <typename scalar_t, Mode M, Padding P, int kDims, typename Args>
C10_HOST_DEVICE inline void grad_grid_point(const Args& a, int64_t point, ChannelSpan span,
                                                opmath_t<scalar_t> (&grid_share)[kDims]) {
  using T = opmath_t<scalar_t>;
  using Taps = PointTaps<T, M, P, kDims>;
  const int64_t n = point / a.points, p = point % a.points;
  const Taps taps = point_taps<scalar_t, M, P, kDims>(a, point);
  const auto offsets = taps.offsets(a.input.stride);
  T go_dot_v[Taps::kTaps] = {};  // sum_c gO[c] V_k[c]
  for_each_block(span, [&](ChannelBlock b) {
    T go[kChannelBlock];
    load_points_block(a.grad_output, n, p, b, go);
    tap_sums_block(go, offsets, a.input, a.input.plane(n, b.first), b.count, go_dot_v);
  });
  add_grid_terms<kDims>(a, point, taps, go_dot_v, grid_share);
}

/// Where grad_grid_point's result goes: grad_grid, or d_grid when it computes the double backward's.
template <typename Args>
C10_HOST_DEVICE inline auto* grid_result(const Args& a) {
  return a.grad_grad_grid != nullptr ? a.d_grid : a.grad_grid;
}

/// The per-point terms of the double backward, given ggI = grad_grad_input and ggG = grad_grad_grid
/// (either may be absent), for whichever of these outputs is requested (d G: the span's share into grid_share):
///   d gO[n, c, p] = sum_k W_k ggI_k + sum_k (sum_e dW_k/dg_e ggG_e) V_k
///   d G[n, p, e]  = sum_k dW_k/dg_e (sum_c gO ggI_k) + sum_k (sum_f d2W_k/dg_e dg_f ggG_f) (sum_c gO V_k)
template <typename scalar_t, Mode M, Padding P, int kDims, typename Args>
C10_HOST_DEVICE inline void double_backward_point(const Args& a, int64_t point, ChannelSpan span,
                                                  opmath_t<scalar_t> (&grid_share)[kDims]) {
  using T = opmath_t<scalar_t>;
  using Taps = PointTaps<T, M, P, kDims>;
  constexpr int kTaps = Taps::kTaps;
  const int64_t n = point / a.points, p = point % a.points;
  const Taps taps = point_taps<scalar_t, M, P, kDims>(a, point);
  const bool has_ggi = a.grad_grad_input.data != nullptr;
  const bool has_ggg = Taps::kSmooth && a.grad_grad_grid != nullptr;
  const bool wants_d_grad_output = a.d_grad_output.data != nullptr;
  const bool wants_d_grid = Taps::kSmooth && a.d_grid != nullptr;

  const auto input_offsets = taps.offsets(a.input.stride);
  const auto ggi_offsets = taps.offsets(a.grad_grad_input.stride);
  T weight[kTaps], along[kTaps];
  T ggg[kDims] = {};
  if (has_ggi) taps.weights(weight);
  if (has_ggg) {
    load_grid_values(a.grad_grad_grid, point, ggg);
    taps.directional(ggg, along);
  }

  T go_dot_ggi[kTaps] = {}, go_dot_v[kTaps] = {};  // sum_c gO[c] ggI_k[c], sum_c gO[c] V_k[c]
  for_each_block(span, [&](ChannelBlock b) {
    const scalar_t* v = a.input.plane(n, b.first);
    const scalar_t* ggi = has_ggi ? a.grad_grad_input.plane(n, b.first) : nullptr;
    if (wants_d_grad_output) {
      T dgo[kChannelBlock] = {};
      if (has_ggi) gather_block(weight, ggi_offsets, a.grad_grad_input, ggi, b.count, dgo);
      if (has_ggg) gather_block(along, input_offsets, a.input, v, b.count, dgo);
      store_points_block(a.d_grad_output, n, p, b, dgo);
    }
    if (wants_d_grid) {
      T go[kChannelBlock];
      load_points_block(a.grad_output, n, p, b, go);
      if (has_ggi) tap_sums_block(go, ggi_offsets, a.grad_grad_input, ggi, b.count, go_dot_ggi);
      if (has_ggg) tap_sums_block(go, input_offsets, a.input, v, b.count, go_dot_v);
    }
  });
  if (!wants_d_grid) return;
  T weight_grad[kDims][kTaps], along_grad[kDims][kTaps];
  if (has_ggi) taps.weight_grads(weight_grad);
  if (has_ggg) taps.directional_grads(ggg, along_grad);
#pragma unroll
  for (int e = 0; e < kDims; ++e) {
    if (has_ggi) grid_share[e] += dot(weight_grad[e], go_dot_ggi);
    if (has_ggg) grid_share[e] += dot(along_grad[e], go_dot_v);
  }
}

/// Position of a tap outside the input (see tap_position).
constexpr int64_t kNoPosition = INT64_MAX;

/// n * (pixels per plane) + the index of tap k in a contiguous plane: where tap k of the point lands in an
/// input-shaped target, numbered across the batch; kNoPosition for a tap outside.
template <int kDims, typename Args, typename Taps>
C10_HOST_DEVICE inline int64_t tap_position(const Args& a, int64_t point, const Taps& taps, int k) {
  int64_t plane_stride[kDims];
  int64_t plane = 1;
#pragma unroll
  for (int e = 0; e < kDims; ++e) {
    plane_stride[e] = plane;
    plane *= a.size[e];
  }
  bool inside;
  const int64_t offset = taps.offset(k, plane_stride, inside);
  return inside ? point / a.points * plane + offset : kNoPosition;
}

/// What the scatter into an input-shaped gradient adds at tap k of a point, times grad_output there: the
/// backward's weight W_k (into grad_input), or the double backward's sum_e dW_k/dg_e grad_grad_grid_e (into d_input).
enum class Coefficients { Weights, AlongGradGradGrid };

/// coefficient[k] for each tap of a point (see Coefficients).
template <int kDims, typename Args, typename Taps, typename T>
C10_HOST_DEVICE inline void scatter_coefficients(const Args& a, int64_t point, const Taps& taps,
                                                 Coefficients coefficients, T (&coefficient)[Taps::kTaps]) {
  if (coefficients == Coefficients::AlongGradGradGrid) {
    T ggg[kDims];
    load_grid_values(a.grad_grad_grid, point, ggg);
    taps.directional(ggg, coefficient);
  } else {
    taps.weights(coefficient);
  }
}

}  // namespace grid_encoder
