// Per-sample math of grid_sample, shared by the CPU and CUDA kernels.
//
// One output point reads a small set of input taps. Along each grid axis the point has 1 (nearest),
// 2 (linear) or 4 (cubic) taps; the taps of a 2-D or 3-D point are the tensor product of its axes.
// AxisTaps holds one axis: tap indices and the tap weights with their first and second derivatives
// with respect to the grid coordinate (unnormalize and padding slopes already folded in).
// PointTaps combines the axes, and the *_point functions below are the whole per-point work of
// every derivative order; the device files only loop over points.
//
// Axis e of a point is grid component e: e = 0 is x (the last input dimension), e = 1 is y, e = 2 is z.
#pragma once

#include <c10/macros/Macros.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <math.h>
#include <type_traits>

namespace grid_encoder {

// Same numbering as torch's GridSamplerInterpolation and GridSamplerPadding.
enum class Interp : int64_t { Bilinear = 0, Nearest = 1, Bicubic = 2 };
enum class Padding : int64_t { Zeros = 0, Border = 1, Reflection = 2 };

// ---------------------------------------------------------------------------------------------
// Coordinates along one axis of `size` pixels. Each map returns the new coordinate and multiplies
// `slope` by its derivative, so that the chain of maps leaves d(pixel coordinate)/d(grid value).

/// Grid value in [-1, 1] -> pixel coordinate.
template <typename T>
C10_HOST_DEVICE inline T unnormalize(T g, int64_t size, bool align_corners, T& slope) {
  if (align_corners) {
    slope = T(size - 1) / 2;
    return ((g + 1) / 2) * T(size - 1);
  }
  slope = T(size) / 2;
  return ((g + 1) * T(size) - 1) / 2;
}

/// Clamp to [0, size - 1]; the slope is 0 where the clamp bites. NaN passes through unchanged.
template <typename T>
C10_HOST_DEVICE inline T clip(T x, int64_t size, T& slope) {
  if (x <= 0) {
    slope = 0;
    return 0;
  }
  const T high = T(size - 1);
  if (x >= high) {
    slope = 0;
    return high;
  }
  return x;
}

/// Reflect into [low, high] (mirror images of the input repeat with period 2 * (high - low)).
/// A zero-width range (size 1 with align_corners) maps everything to 0. NaN and inf become NaN.
template <typename T>
C10_HOST_DEVICE inline T reflect(T x, T low, T high, T& slope) {
  if (low == high) {
    slope = 0;
    return 0;
  }
  const T span = high - low;
  T distance = x - low;
  if (distance < 0) {
    distance = -distance;
    slope = -slope;
  }
  const T extra = ::fmod(distance, span);
  const T flips = ::floor(distance / span);
  if (::fmod(flips, T(2)) == 0) {
    return low + extra;
  }
  slope = -slope;
  return low + span - extra;
}

/// The padding map of bilinear and nearest sampling (bicubic applies it to each tap instead).
template <Padding P, typename T>
C10_HOST_DEVICE inline T pad_coordinate(T x, int64_t size, bool align_corners, T& slope) {
  if constexpr (P == Padding::Border) {
    return clip(x, size, slope);
  } else if constexpr (P == Padding::Reflection) {
    x = align_corners ? reflect(x, T(0), T(size - 1), slope)
                      : reflect(x, T(-0.5), T(size) - T(0.5), slope);
    return clip(x, size, slope);
  } else {
    return x;
  }
}

/// NaN, inf and coordinates beyond the int32 range become -100: outside the input, so every tap
/// of such a sample reads nothing, and no index computed from it can overflow.
template <typename T>
C10_HOST_DEVICE inline T sanitize(T x) {
  const bool in_range = x >= T(INT_MIN) && x <= T(INT_MAX - 1);  // false for NaN
  return in_range ? x : T(-100);
}

// ---------------------------------------------------------------------------------------------
// Bicubic convolution kernel (Keys, A = -0.75, as torch), as functions of the fractional offset t
// in [0, 1) of the 4 taps at floor(x) - 1 .. floor(x) + 2:
//   c0 = k2(t + 1), c1 = k1(t), c2 = k1(1 - t), c3 = k2(2 - t), with
//   k1(s) = ((A + 2) s - (A + 3)) s^2 + 1  for |s| <= 1,
//   k2(s) = ((A s - 5 A) s + 8 A) s - 4 A  for 1 < |s| < 2.

constexpr double kCubicA = -0.75;

template <typename T>
C10_HOST_DEVICE inline T cubic_k1(T s) { return ((T(kCubicA + 2) * s - T(kCubicA + 3)) * s) * s + 1; }
template <typename T>
C10_HOST_DEVICE inline T cubic_k1_d1(T s) { return (T(3 * (kCubicA + 2)) * s - T(2 * (kCubicA + 3))) * s; }
template <typename T>
C10_HOST_DEVICE inline T cubic_k1_d2(T s) { return T(6 * (kCubicA + 2)) * s - T(2 * (kCubicA + 3)); }
template <typename T>
C10_HOST_DEVICE inline T cubic_k2(T s) {
  return ((T(kCubicA) * s - T(5 * kCubicA)) * s + T(8 * kCubicA)) * s - T(4 * kCubicA);
}
template <typename T>
C10_HOST_DEVICE inline T cubic_k2_d1(T s) { return (T(3 * kCubicA) * s - T(10 * kCubicA)) * s + T(8 * kCubicA); }
template <typename T>
C10_HOST_DEVICE inline T cubic_k2_d2(T s) { return T(6 * kCubicA) * s - T(10 * kCubicA); }

// ---------------------------------------------------------------------------------------------

template <Interp I>
constexpr int kTapsPerAxis = I == Interp::Nearest ? 1 : (I == Interp::Bilinear ? 2 : 4);

/// How far loops over the taps of a point unroll: fully up to 16 taps. The 64 taps of 3-D bicubic stay a
/// loop; unrolled, they multiply the CUDA compile time and spill registers anyway.
constexpr int unroll_taps(int taps) { return taps <= 16 ? taps : 1; }

/// The taps of one sample along one axis.
template <typename T, Interp I, Padding P>
struct AxisTaps {
  static constexpr int kTaps = kTapsPerAxis<I>;
  int64_t index[kTaps];  // pixel index of each tap (may lie outside [0, size))
  T weight[kTaps];       // interpolation weight
  T d1[kTaps];           // d weight / d grid value
  T d2[kTaps];           // d^2 weight / d grid value^2 (non-zero for bicubic only)

  AxisTaps() = default;
  C10_HOST_DEVICE AxisTaps(T grid_value, int64_t size, bool align_corners) {
    T slope = 1;
    T x = unnormalize(grid_value, size, align_corners, slope);
    if constexpr (I == Interp::Bicubic) {
      // Weights follow the unpadded coordinate; each tap's integer position is padded on its own.
      // A NaN or infinite coordinate reads nothing, as in the other modes, whatever the padding.
      const bool finite = ::isfinite(x);
      if (!finite) x = T(-100);
      const T x0 = ::floor(x);
      const T t = x - x0;
      const T s[4] = {t + 1, t, 1 - t, 2 - t};
      weight[0] = cubic_k2(s[0]);
      weight[1] = cubic_k1(s[1]);
      weight[2] = cubic_k1(s[2]);
      weight[3] = cubic_k2(s[3]);
      // ds/dt is +1 for the first two taps and -1 for the last two: it flips d1, not d2.
      d1[0] = slope * cubic_k2_d1(s[0]);
      d1[1] = slope * cubic_k1_d1(s[1]);
      d1[2] = -slope * cubic_k1_d1(s[2]);
      d1[3] = -slope * cubic_k2_d1(s[3]);
      d2[0] = slope * slope * cubic_k2_d2(s[0]);
      d2[1] = slope * slope * cubic_k1_d2(s[1]);
      d2[2] = slope * slope * cubic_k1_d2(s[2]);
      d2[3] = slope * slope * cubic_k2_d2(s[3]);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        T unused_slope = 1;
        index[k] = finite ? static_cast<int64_t>(
                                sanitize(pad_coordinate<P>(x0 + T(k - 1), size, align_corners, unused_slope)))
                          : int64_t(-100);
      }
    } else {
      x = sanitize(pad_coordinate<P>(x, size, align_corners, slope));
      if constexpr (I == Interp::Bilinear) {
        const T x0 = ::floor(x);
        const T t = x - x0;
        index[0] = static_cast<int64_t>(x0);
        index[1] = index[0] + 1;
        weight[0] = 1 - t;
        weight[1] = t;
        d1[0] = -slope;
        d1[1] = slope;
        d2[0] = d2[1] = 0;
      } else {  // nearest: round half to even; piecewise constant in the grid
        index[0] = static_cast<int64_t>(::nearbyint(x));
        weight[0] = 1;
        d1[0] = d2[0] = 0;
      }
    }
  }
};

/// Where the taps of one point sit in one image plane with the given strides.
template <int kTaps>
struct TapOffsets {
  int64_t offset[kTaps];  // element offset from the plane's origin
  bool inside[kTaps];     // whether the tap lies in the input; taps outside read and receive nothing
};

/// The taps of one sample in kDims dimensions: the tensor product of its axes.
/// Tap k has axis digits digit(k, e) in base kTapsPerAxis, axis 0 fastest.
template <typename T, Interp I, Padding P, int kDims>
struct PointTaps {
  using Axis = AxisTaps<T, I, P>;
  static constexpr int kAxisTaps = Axis::kTaps;
  static constexpr int kTaps = kDims == 1 ? kAxisTaps
                             : kDims == 2 ? kAxisTaps * kAxisTaps
                                          : kAxisTaps * kAxisTaps * kAxisTaps;
  // Only bicubic weights have a non-zero second derivative along one axis.
  static constexpr bool kCurved = I == Interp::Bicubic;
  // Nearest weights are piecewise constant: every grid derivative is zero.
  static constexpr bool kSmooth = I != Interp::Nearest;

  Axis axis[kDims];
  int64_t size[kDims];

  /// grid: the point's kDims grid values; sizes[e]: input extent along grid axis e.
  C10_HOST_DEVICE PointTaps(const T* grid, const int64_t* sizes, bool align_corners) {
#pragma unroll
    for (int e = 0; e < kDims; ++e) {
      axis[e] = Axis(grid[e], sizes[e], align_corners);
      size[e] = sizes[e];
    }
  }

  static constexpr C10_HOST_DEVICE int digit(int k, int e) {
    return e == 0 ? k % kAxisTaps : digit(k / kAxisTaps, e - 1);
  }

  /// stride[e]: element stride of the image plane along grid axis e.
  C10_HOST_DEVICE TapOffsets<kTaps> offsets(const int64_t* stride) const {
    TapOffsets<kTaps> at;
#pragma unroll(unroll_taps(kTaps))
    for (int k = 0; k < kTaps; ++k) at.offset[k] = offset(k, stride, at.inside[k]);
    return at;
  }

  /// The offset of tap k alone; `inside`: whether it lies in the input.
  C10_HOST_DEVICE int64_t offset(int k, const int64_t* stride, bool& inside) const {
    int64_t offset = 0;
    inside = true;
#pragma unroll
    for (int e = 0; e < kDims; ++e) {
      const int64_t i = axis[e].index[digit(k, e)];
      inside = inside && i >= 0 && i < size[e];
      offset += i * stride[e];
    }
    return offset;
  }

  /// weight[k] = W_k, the product of the axis weights.
  C10_HOST_DEVICE void weights(T (&weight)[kTaps]) const {
#pragma unroll(unroll_taps(kTaps))
    for (int k = 0; k < kTaps; ++k) {
      weight[k] = 1;
#pragma unroll
      for (int e = 0; e < kDims; ++e) weight[k] *= axis[e].weight[digit(k, e)];
    }
  }

  /// grad[e][k] = d W_k / d g_e.
  C10_HOST_DEVICE void weight_grads(T (&grad)[kDims][kTaps]) const {
#pragma unroll
    for (int e = 0; e < kDims; ++e)
#pragma unroll(unroll_taps(kTaps))
      for (int k = 0; k < kTaps; ++k) grad[e][k] = derivative(k, e, -1);
  }

  /// along[k] = sum_e d W_k / d g_e * v_e: the derivative of W_k in grid direction v.
  C10_HOST_DEVICE void directional(const T* v, T (&along)[kTaps]) const {
#pragma unroll(unroll_taps(kTaps))
    for (int k = 0; k < kTaps; ++k) {
      along[k] = 0;
#pragma unroll
      for (int e = 0; e < kDims; ++e) along[k] += derivative(k, e, -1) * v[e];
    }
  }

  /// grad[e][k] = sum_f d^2 W_k / (d g_e d g_f) * v_f: the gradient of `directional`.
  C10_HOST_DEVICE void directional_grads(const T* v, T (&grad)[kDims][kTaps]) const {
#pragma unroll
    for (int e = 0; e < kDims; ++e)
#pragma unroll(unroll_taps(kTaps))
      for (int k = 0; k < kTaps; ++k) {
        grad[e][k] = 0;
#pragma unroll
        for (int f = 0; f < kDims; ++f) {
          if (f != e || kCurved) grad[e][k] += derivative(k, e, f) * v[f];
        }
      }
  }

 private:
  /// d W_k / d g_e when f < 0, else d^2 W_k / (d g_e d g_f).
  C10_HOST_DEVICE T derivative(int k, int e, int f) const {
    T product = 1;
#pragma unroll
    for (int a = 0; a < kDims; ++a) {
      const int j = digit(k, a);
      const int order = (a == e) + (a == f);
      product *= order == 0 ? axis[a].weight[j] : (order == 1 ? axis[a].d1[j] : axis[a].d2[j]);
    }
    return product;
  }
};

// ---------------------------------------------------------------------------------------------
// Channel blocks. The per-point functions walk the channels in blocks of kChannelBlock, tap by tap. On the
// GPU, which reads channels-last working copies (grid_sample.cpp), a block's values at one tap share a
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
};

/// A block of up to kChannelBlock channels starting at `first`; `count` of them are real.
struct ChannelBlock {
  int64_t first;
  int count;
};

/// A whole channel block at one tap as one unit of 16-byte words (see load_block).
template <typename scalar_t>
struct alignas(16) ChannelWords {
  scalar_t value[kChannelBlock];
};

/// out[j] = tap[j * stride_c] for the block's channels, zero past `count`. On the GPU a whole block of
/// contiguous, 16-byte aligned channels (ImageView::channel_words) loads as 16-byte words: one load
/// instruction per 16 bytes instead of one per channel, each touching as many cache lines as a warp has points.
template <typename T, typename scalar_t>
C10_HOST_DEVICE inline void load_block(const scalar_t* tap, int64_t stride_c, int count, bool channel_words,
                                       T (&out)[kChannelBlock]) {
#ifdef __CUDA_ARCH__
  if (channel_words && count == kChannelBlock) {
    const ChannelWords<scalar_t> block = *reinterpret_cast<const ChannelWords<scalar_t>*>(tap);
#pragma unroll
    for (int j = 0; j < kChannelBlock; ++j) out[j] = static_cast<T>(block.value[j]);
    return;
  }
#endif
  (void)channel_words;
#pragma unroll
  for (int j = 0; j < kChannelBlock; ++j) out[j] = j < count ? static_cast<T>(tap[j * stride_c]) : T(0);
}

/// value[j] += sum_k coef[k] * plane[tap k + j * stride_c] for the block's channels (plane: its first).
template <typename T, int kTaps, typename Image, typename scalar_t>
C10_HOST_DEVICE inline void gather_block(const T (&coef)[kTaps], const TapOffsets<kTaps>& at, const Image& image,
                                         const scalar_t* plane, int count,
                                         T (&value)[kChannelBlock]) {
#pragma unroll(unroll_taps(kTaps))
  for (int k = 0; k < kTaps; ++k) {
    if (!at.inside[k]) continue;
    T tap[kChannelBlock];
    load_block(plane + at.offset[k], image.stride_c, count, image.channel_words, tap);
#pragma unroll
    for (int j = 0; j < kChannelBlock; ++j) value[j] += coef[k] * tap[j];
  }
}

/// sums[k] += sum_j weight[j] * plane[tap k + j * stride_c]: per-tap channel sums of the block.
template <typename T, int kTaps, typename Image, typename scalar_t>
C10_HOST_DEVICE inline void tap_sums_block(const T (&weight)[kChannelBlock], const TapOffsets<kTaps>& at,
                                           const Image& image, const scalar_t* plane, int count,
                                           T (&sums)[kTaps]) {
#pragma unroll(unroll_taps(kTaps))
  for (int k = 0; k < kTaps; ++k) {
    if (!at.inside[k]) continue;
    T tap[kChannelBlock];
    load_block(plane + at.offset[k], image.stride_c, count, image.channel_words, tap);
    T sum = 0;
#pragma unroll
    for (int j = 0; j < kChannelBlock; ++j) sum += weight[j] * tap[j];
    sums[k] += sum;
  }
}

/// plane[tap k + j * stride_c] += coef[k] * value[j] for the taps inside (see scatter_point).
template <typename T, int kTaps, typename Image, typename scalar_t>
C10_HOST_DEVICE inline void scatter_block(const T (&coef)[kTaps], const TapOffsets<kTaps>& at,
                                          const T (&value)[kChannelBlock], const Image& image, scalar_t* plane,
                                          int count) {
#pragma unroll(unroll_taps(kTaps))
  for (int k = 0; k < kTaps; ++k) {
    if (!at.inside[k]) continue;
    for (int j = 0; j < count; ++j) {
      plane[at.offset[k] + j * image.stride_c] += static_cast<scalar_t>(coef[k] * value[j]);
    }
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
// Tensor views handed to the per-point functions. Images ([N, C, spatial...]) keep their own strides;
// point tensors ([N, C, P] outputs) and grids ([N, P, kDims]) are contiguous.

template <typename scalar_t>
struct PointsView {  // [N, C, P], contiguous
  scalar_t* data = nullptr;  // nullptr: tensor absent
  C10_HOST_DEVICE scalar_t* at(int64_t n, int64_t c, int64_t p, int64_t channels, int64_t points) const {
    return data + (n * channels + c) * points + p;
  }
};

/// Everything the kernels of one call share.
template <typename scalar_t, int kDims>
struct SampleArgs {
  int64_t batch = 0, channels = 0, points = 0;
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
  PointsView<scalar_t> grad_grad_output_out;           // d/d grad_output
  ImageView<scalar_t, kDims> input_grad_out;           // d/d input (scatter)
  scalar_t* grid_grad_out = nullptr;                   // d/d grid, [N, P, kDims]
};

template <typename scalar_t>
using opmath_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;

template <typename scalar_t, Interp I, Padding P, int kDims, typename Args>
C10_HOST_DEVICE inline PointTaps<opmath_t<scalar_t>, I, P, kDims> point_taps(const Args& a, int64_t point) {
  using T = opmath_t<scalar_t>;
  T g[kDims];
#pragma unroll
  for (int e = 0; e < kDims; ++e) g[e] = static_cast<T>(a.grid[point * kDims + e]);
  return PointTaps<T, I, P, kDims>(g, a.size, a.align_corners);
}

// ---------------------------------------------------------------------------------------------
// Per-point work. `point` runs over N * P; n = point / P, p = point % P. A function handles the channels of
// its ChannelSpan; grid derivatives sum over all channels, so the functions add this span's share into
// `dgrid`, and the caller sums the shares of a point (CPU: one span holds every channel; GPU: the lanes of a
// point hold a span each, see kernels_cuda.cuh) and stores the total with store_grid_values.

/// Reads a block of a [N, C, P] tensor at point p into value[j] (zeros where absent or past the end).
template <typename T, typename scalar_t, typename Args>
C10_HOST_DEVICE inline void load_points_block(const PointsView<scalar_t>& t, const Args& a, int64_t n, int64_t p,
                                              ChannelBlock b, T (&value)[kChannelBlock]) {
#pragma unroll
  for (int j = 0; j < kChannelBlock; ++j) {
    value[j] = j < b.count ? static_cast<T>(*t.at(n, b.first + j, p, a.channels, a.points)) : T(0);
  }
}

template <typename scalar_t, typename T, typename Args>
C10_HOST_DEVICE inline void store_points_block(const PointsView<scalar_t>& t, const Args& a, int64_t n, int64_t p,
                                               ChannelBlock b, const T (&value)[kChannelBlock]) {
#pragma unroll
  for (int j = 0; j < kChannelBlock; ++j) {
    if (j < b.count) *t.at(n, b.first + j, p, a.channels, a.points) = static_cast<scalar_t>(value[j]);
  }
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

/// t[point, e] = value[e] for a [N, P, kDims] tensor.
template <typename scalar_t, typename T, int kDims>
C10_HOST_DEVICE inline void store_grid_values(scalar_t* t, int64_t point, const T (&value)[kDims]) {
#pragma unroll
  for (int e = 0; e < kDims; ++e) t[point * kDims + e] = static_cast<scalar_t>(value[e]);
}

/// output[n, c, p] = sum_k W_k V_k[n, c]
template <typename scalar_t, Interp I, Padding P, int kDims, typename Args>
C10_HOST_DEVICE inline void forward_point(const Args& a, int64_t point, ChannelSpan span) {
  using T = opmath_t<scalar_t>;
  using Taps = PointTaps<T, I, P, kDims>;
  const int64_t n = point / a.points, p = point % a.points;
  const Taps taps = point_taps<scalar_t, I, P, kDims>(a, point);
  const auto at = taps.offsets(a.input.stride);
  T weight[Taps::kTaps];
  taps.weights(weight);
  for_each_block(span, [&](ChannelBlock b) {
    T value[kChannelBlock] = {};
    gather_block(weight, at, a.input, a.input.plane(n, b.first), b.count, value);
    store_points_block(a.output, a, n, p, b, value);
  });
}

/// dgrid[e] += the span's share of grad_grid[n, p, e] = sum_k dW_k/dg_e sum_c gO[n, c, p] V_k[n, c]
template <typename scalar_t, Interp I, Padding P, int kDims, typename Args>
C10_HOST_DEVICE inline void backward_grid_point(const Args& a, int64_t point, ChannelSpan span,
                                                opmath_t<scalar_t> (&dgrid)[kDims]) {
  using T = opmath_t<scalar_t>;
  using Taps = PointTaps<T, I, P, kDims>;
  const int64_t n = point / a.points, p = point % a.points;
  const Taps taps = point_taps<scalar_t, I, P, kDims>(a, point);
  const auto at = taps.offsets(a.input.stride);
  T go_dot_v[Taps::kTaps] = {};  // sum_c gO[c] V_k[c]
  for_each_block(span, [&](ChannelBlock b) {
    T go[kChannelBlock];
    load_points_block(a.grad_output, a, n, p, b, go);
    tap_sums_block(go, at, a.input, a.input.plane(n, b.first), b.count, go_dot_v);
  });
  T weight_grad[kDims][Taps::kTaps];
  taps.weight_grads(weight_grad);
#pragma unroll
  for (int e = 0; e < kDims; ++e) dgrid[e] += dot(weight_grad[e], go_dot_v);
}

/// The per-point terms of the double backward, given ggI = grad_grad_input and ggG = grad_grad_grid
/// (either may be absent), for whichever of these outputs is requested (d G: the span's share into dgrid):
///   d gO[n, c, p] = sum_k W_k ggI_k + sum_k (sum_e dW_k/dg_e ggG_e) V_k
///   d G[n, p, e]  = sum_k dW_k/dg_e (sum_c gO ggI_k) + sum_k (sum_f d2W_k/dg_e dg_f ggG_f) (sum_c gO V_k)
template <typename scalar_t, Interp I, Padding P, int kDims, typename Args>
C10_HOST_DEVICE inline void double_backward_point(const Args& a, int64_t point, ChannelSpan span,
                                                  opmath_t<scalar_t> (&dgrid)[kDims]) {
  using T = opmath_t<scalar_t>;
  using Taps = PointTaps<T, I, P, kDims>;
  constexpr int kTaps = Taps::kTaps;
  const int64_t n = point / a.points, p = point % a.points;
  const Taps taps = point_taps<scalar_t, I, P, kDims>(a, point);
  const bool has_ggi = a.grad_grad_input.data != nullptr;
  const bool has_ggg = Taps::kSmooth && a.grad_grad_grid != nullptr;
  const bool want_dgo = a.grad_grad_output_out.data != nullptr;
  const bool want_dgrid = Taps::kSmooth && a.grid_grad_out != nullptr;

  const auto at_input = taps.offsets(a.input.stride);
  const auto at_ggi = taps.offsets(a.grad_grad_input.stride);
  T weight[kTaps], along[kTaps];
  T ggg[kDims] = {};
  if (has_ggi) taps.weights(weight);
  if (has_ggg) {
#pragma unroll
    for (int e = 0; e < kDims; ++e) ggg[e] = static_cast<T>(a.grad_grad_grid[point * kDims + e]);
    taps.directional(ggg, along);
  }

  T go_dot_ggi[kTaps] = {}, go_dot_v[kTaps] = {};  // sum_c gO[c] ggI_k[c], sum_c gO[c] V_k[c]
  for_each_block(span, [&](ChannelBlock b) {
    const scalar_t* v = a.input.plane(n, b.first);
    const scalar_t* ggi = has_ggi ? a.grad_grad_input.plane(n, b.first) : nullptr;
    if (want_dgo) {
      T dgo[kChannelBlock] = {};
      if (has_ggi) gather_block(weight, at_ggi, a.grad_grad_input, ggi, b.count, dgo);
      if (has_ggg) gather_block(along, at_input, a.input, v, b.count, dgo);
      store_points_block(a.grad_grad_output_out, a, n, p, b, dgo);
    }
    if (want_dgrid) {
      T go[kChannelBlock];
      load_points_block(a.grad_output, a, n, p, b, go);
      if (has_ggi) tap_sums_block(go, at_ggi, a.grad_grad_input, ggi, b.count, go_dot_ggi);
      if (has_ggg) tap_sums_block(go, at_input, a.input, v, b.count, go_dot_v);
    }
  });
  if (!want_dgrid) return;
  T weight_grad[kDims][kTaps], along_grad[kDims][kTaps];
  if (has_ggi) taps.weight_grads(weight_grad);
  if (has_ggg) taps.directional_grads(ggg, along_grad);
#pragma unroll
  for (int e = 0; e < kDims; ++e) {
    if (has_ggi) dgrid[e] += dot(weight_grad[e], go_dot_ggi);
    if (has_ggg) dgrid[e] += dot(along_grad[e], go_dot_v);
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

/// The scatter of a point, tap by tap: the target at [n, c, tap k] receives coefficient[k] * gO[n, c, p] for
/// every channel c, with coefficient[k] the backward's W_k or, with `along_grid`, the double backward's
/// sum_e dW_k/dg_e ggG_e (see scatter_point).
template <int kDims, typename Args, typename Taps, typename T>
C10_HOST_DEVICE inline void scatter_coefficients(const Args& a, int64_t point, const Taps& taps, bool along_grid,
                                                 T (&coefficient)[Taps::kTaps]) {
  if (along_grid) {
    T ggg[kDims];
#pragma unroll
    for (int e = 0; e < kDims; ++e) ggg[e] = static_cast<T>(a.grad_grad_grid[point * kDims + e]);
    taps.directional(ggg, coefficient);
  } else {
    taps.weights(coefficient);
  }
}

/// target[n, c, tap k] += coefficient[k] * gO[n, c, p] for the span's channels: the backward's scatter into
/// grad_input, or with `along_grid` the double backward's into d input (coefficients: scatter_coefficients).
/// The CPU's scatter; the GPU bins the same terms (binned_scatter in kernels_cuda.cuh).
template <typename scalar_t, Interp I, Padding P, int kDims, typename Args>
C10_HOST_DEVICE inline void scatter_point(const Args& a, int64_t point, ChannelSpan span, bool along_grid) {
  using T = opmath_t<scalar_t>;
  using Taps = PointTaps<T, I, P, kDims>;
  const auto& target = along_grid ? a.input_grad_out : a.grad_input;
  const int64_t n = point / a.points, p = point % a.points;
  const Taps taps = point_taps<scalar_t, I, P, kDims>(a, point);
  const auto at = taps.offsets(target.stride);
  T coefficient[Taps::kTaps];
  scatter_coefficients<kDims>(a, point, taps, along_grid, coefficient);
  for_each_block(span, [&](ChannelBlock b) {
    T go[kChannelBlock];
    load_points_block(a.grad_output, a, n, p, b, go);
    scatter_block(coefficient, at, go, target, target.plane(n, b.first), b.count);
  });
}

}  // namespace grid_encoder
