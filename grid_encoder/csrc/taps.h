// The tap math of grid_sample, shared by the CPU and CUDA kernels: where a sample's taps lie and how much each
// weighs, with the weights' first and second derivatives in the grid coordinates.
//
// One output point reads a small set of input taps. Along each grid axis the point has 1 (nearest), 2 (linear)
// or 4 (cubic) taps; the taps of a 2-D or 3-D point are the tensor product of its axes. AxisTaps holds one axis:
// tap indices and tap weights with their first and second derivatives with respect to the grid coordinate
// (unnormalize and padding slopes folded in). PointTaps combines the axes. What a point does with its taps, for
// each derivative order, is in point_work.h.
//
// Axis e of a point is grid component e: e = 0 is x (the last input dimension), e = 1 is y, e = 2 is z.
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <math.h>

namespace grid_encoder {

// Same numbering as torch's GridSamplerInterpolation and GridSamplerPadding.
enum class Mode : int64_t { Bilinear = 0, Nearest = 1, Bicubic = 2 };
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

template <Mode M>
constexpr int kTapsPerAxis = M == Mode::Nearest ? 1 : (M == Mode::Bilinear ? 2 : 4);

/// How far loops over the taps of a point unroll: fully up to 16 taps. The 64 taps of 3-D bicubic stay a
/// loop; unrolled, they multiply the CUDA compile time and spill registers anyway.
constexpr int unroll_taps(int taps) { return taps <= 16 ? taps : 1; }

/// The taps of one sample along one axis.
template <typename T, Mode M, Padding P>
struct AxisTaps {
  static constexpr int kTaps = kTapsPerAxis<M>;
  int64_t index[kTaps];  // pixel index of each tap (may lie outside [0, size))
  T weight[kTaps];       // interpolation weight
  T d1[kTaps];           // d weight / d grid value
  T d2[kTaps];           // d^2 weight / d grid value^2 (non-zero for bicubic only)

  AxisTaps() = default;
  C10_HOST_DEVICE AxisTaps(T grid_value, int64_t size, bool align_corners) {
    T slope = 1;
    T x = unnormalize(grid_value, size, align_corners, slope);
    if constexpr (M == Mode::Bicubic) {
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
      if constexpr (M == Mode::Bilinear) {
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
template <typename T, Mode M, Padding P, int kDims>
struct PointTaps {
  using Axis = AxisTaps<T, M, P>;
  static constexpr int kAxisTaps = Axis::kTaps;
  static constexpr int kTaps = kDims == 1 ? kAxisTaps
                             : kDims == 2 ? kAxisTaps * kAxisTaps
                                          : kAxisTaps * kAxisTaps * kAxisTaps;
  // Only bicubic weights have a non-zero second derivative along one axis.
  static constexpr bool kCurved = M == Mode::Bicubic;
  // Nearest weights are piecewise constant: every grid derivative is zero.
  static constexpr bool kSmooth = M != Mode::Nearest;

  Axis axis[kDims];
  int64_t size[kDims];

  PointTaps() = default;
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
    TapOffsets<kTaps> result;
#pragma unroll(unroll_taps(kTaps))
    for (int k = 0; k < kTaps; ++k) result.offset[k] = offset(k, stride, result.inside[k]);
    return result;
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
// From run-time settings to template parameters.

/// A sampler's settings as compile-time constants.
template <Mode M, Padding P, int D>
struct Sampler {
  static constexpr Mode kMode = M;
  static constexpr Padding kPadding = P;
  static constexpr int kDims = D;
  static constexpr int kTaps = PointTaps<float, M, P, D>::kTaps;  // taps per point
};

template <int D, Mode M, typename F>
decltype(auto) dispatch_padding(Padding padding, const F& body) {
  switch (padding) {
    case Padding::Zeros: return body(Sampler<M, Padding::Zeros, D>{});
    case Padding::Border: return body(Sampler<M, Padding::Border, D>{});
    case Padding::Reflection: return body(Sampler<M, Padding::Reflection, D>{});
  }
  TORCH_CHECK(false, "grid_encoder: unknown padding mode ", static_cast<int64_t>(padding));
}

/// Returns body(Sampler<mode, padding, D>{}).
template <int D, typename F>
decltype(auto) dispatch_sampler(Mode mode, Padding padding, const F& body) {
  switch (mode) {
    case Mode::Bilinear: return dispatch_padding<D, Mode::Bilinear>(padding, body);
    case Mode::Nearest: return dispatch_padding<D, Mode::Nearest>(padding, body);
    case Mode::Bicubic: return dispatch_padding<D, Mode::Bicubic>(padding, body);
  }
  TORCH_CHECK(false, "grid_encoder: unknown interpolation mode ", static_cast<int64_t>(mode));
}

}  // namespace grid_encoder
