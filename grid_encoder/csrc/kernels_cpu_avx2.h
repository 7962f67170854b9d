// The CPU kernels of the common cases, eight points per instruction: the forward, grad_grid and the taps of the
// grad_input scatter for 2-D sampling of float tensors (every mode and padding), on x86-64 processors with AVX2
// (chosen at run time; the library itself is compiled for the baseline instruction set). Per point the scalar runs
// of kernels_cpu.h spend most of their time on the tap arithmetic (unnormalize, floor, weights, offsets, one branch
// per tap), not on the loads; here eight points take each step together, and each channel's taps load by masked
// gathers. Every operation is the scalar path's, in the same order (no fused multiply-adds), so that both give the
// same bits: taps.h stays the definition.
#pragma once

#include <climits>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "point_work.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define GRID_ENCODER_AVX2_RUNS 1
#include <immintrin.h>
#endif

namespace grid_encoder {

#ifdef GRID_ENCODER_AVX2_RUNS
constexpr bool kAvx2Compiled = true;
#else
constexpr bool kAvx2Compiled = false;  // other processors and compilers: the scalar runs only
#endif

/// Whether the runs of this file serve these settings, dtype and dimensionality.
template <typename scalar_t, Mode M, Padding P, int kDims>
constexpr bool kAvx2Runs =
    kAvx2Compiled && std::is_same<scalar_t, float>::value && kDims == 2;

/// Whether every tap offset of an image plane with these strides fits the gathers' 32-bit indices.
template <int kDims>
bool offsets_fit_int32(const int64_t (&stride)[kDims], const int64_t (&size)[kDims]) {
  int64_t last = 0;
  for (int e = 0; e < kDims; ++e) last += (size[e] - 1) * stride[e];
  return last < INT_MAX;
}

/// Groups of eight points that a run takes at most.
constexpr int kAvx2Groups = 2;

// forward_run_avx2 and grad_grid_run_avx2 (below): forward_run and grad_grid_run of kernels_cpu.h for the points
// [first, first + count) of one batch item, count a multiple of 8 and at most 8 * kAvx2Groups, where kAvx2Runs,
// avx2_runs_available and offsets_fit_int32 allow; scatter_taps_avx2: scatter_run's taps and coefficients for such
// points (the weights, or for bilinear sampling the derivatives along grad_grad_grid).

#ifndef GRID_ENCODER_AVX2_RUNS
inline bool avx2_runs_available() { return false; }
// Declared only, for the calls that kAvx2Runs discards.
template <Mode M, Padding P>
void forward_run_avx2(const SampleArgs<float, 2>& a, int64_t first, int count);
template <Mode M, Padding P>
void grad_grid_run_avx2(const SampleArgs<float, 2>& a, int64_t first, int count);
template <Mode M, Padding P, int kTaps>
void scatter_taps_avx2(const SampleArgs<float, 2>& a, const int64_t (&stride)[2], int64_t first, int count,
                       Coefficients coefficients, int64_t (*offset)[kTaps], bool (*inside)[kTaps],
                       float (*coefficient)[kTaps]);
#else
/// Whether the processor runs AVX2 instructions (asked once).
inline bool avx2_runs_available() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}

/// The taps of eight points along one axis (AxisTaps' arithmetic, lane by lane): each tap's pixel index and weight.
template <Mode M>
struct AxisTaps8 {
  __m256i index[kTapsPerAxis<M>];
  __m256 weight[kTapsPerAxis<M>];
  __m256 slope;  // d(pixel coordinate)/d(grid value), as taps.h tracks it (bilinear's d1 is -slope, +slope)
};

/// -v, as unary minus (the sign bit flipped: -0 for +0).
__attribute__((target("avx2"))) inline __m256 negate8(__m256 v) {
  return _mm256_xor_ps(v, _mm256_set1_ps(-0.0f));
}

/// clip: x clamped to [0, size - 1], NaN passing through; *slope set to 0 where the clamp bites.
__attribute__((target("avx2"))) inline __m256 clip8(__m256 x, int64_t size, __m256* slope) {
  const __m256 high = _mm256_set1_ps(float(size - 1));
  const __m256 low_bites = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LE_OQ);
  x = _mm256_blendv_ps(x, _mm256_setzero_ps(), low_bites);
  const __m256 high_bites = _mm256_cmp_ps(x, high, _CMP_GE_OQ);
  *slope = _mm256_blendv_ps(*slope, _mm256_setzero_ps(), _mm256_or_ps(low_bites, high_bites));
  return _mm256_blendv_ps(x, high, high_bites);
}

/// sanitize: NaN, inf and coordinates beyond the int32 range become -100.
__attribute__((target("avx2"))) inline __m256 sanitize8(__m256 x) {
  const __m256 in_range = _mm256_and_ps(_mm256_cmp_ps(x, _mm256_set1_ps(float(INT_MIN)), _CMP_GE_OQ),
                                        _mm256_cmp_ps(x, _mm256_set1_ps(float(INT_MAX - 1)), _CMP_LE_OQ));
  return _mm256_blendv_ps(_mm256_set1_ps(-100.0f), x, in_range);
}

/// The index of an integral coordinate (sanitized: the range's top, 2^31, turns into INT_MIN, outside as it was).
__attribute__((target("avx2"))) inline __m256i index8(__m256 x) { return _mm256_cvttps_epi32(x); }

/// cubic_k1 and cubic_k2 of taps.h, the same operations in the same order.
__attribute__((target("avx2"))) inline __m256 cubic_k1_8(__m256 s) {
  const __m256 a2 = _mm256_set1_ps(float(kCubicA + 2)), a3 = _mm256_set1_ps(float(kCubicA + 3));
  return _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_mul_ps(a2, s), a3), s), s),
                       _mm256_set1_ps(1.0f));
}
__attribute__((target("avx2"))) inline __m256 cubic_k2_8(__m256 s) {
  const __m256 a = _mm256_set1_ps(float(kCubicA)), a5 = _mm256_set1_ps(float(5 * kCubicA));
  const __m256 a8 = _mm256_set1_ps(float(8 * kCubicA)), a4 = _mm256_set1_ps(float(4 * kCubicA));
  return _mm256_sub_ps(_mm256_mul_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_mul_ps(a, s), a5), s), a8), s),
                       a4);
}

/// distance - quotient * span for four lanes, in double: exact for integral quotients below 2^22 (the product then
/// fits a double's 53 bits, and the difference is exact where it is a float again); plus span where that is negative.
__attribute__((target("avx2"))) inline __m128 remainder4(__m128 distance, __m128 quotient, __m256d span) {
  __m256d r = _mm256_sub_pd(_mm256_cvtps_pd(distance), _mm256_mul_pd(_mm256_cvtps_pd(quotient), span));
  r = _mm256_blendv_pd(r, _mm256_add_pd(r, span), _mm256_cmp_pd(r, _mm256_setzero_pd(), _CMP_LT_OQ));
  return _mm256_cvtpd_ps(r);
}

/// reflect of taps.h for eight coordinates, with the same bits (and *slope as it tracks it). fmod(distance, span) is
/// the exact remainder of the true integral quotient, which the floored float quotient (the scalar's `flips`) is, or
/// exceeds by one where the division rounded up to an integer: remainder4 gives it exactly. Lanes where this cannot
/// be vouched for (quotients from 2^22, NaN, infinities) take taps.h's own function, all eight then.
__attribute__((target("avx2"))) inline __m256 reflect8(__m256 x, float low, float high, __m256* slope) {
  if (low == high) {
    *slope = _mm256_setzero_ps();
    return _mm256_setzero_ps();
  }
  const float span = high - low;
  const __m256 spans = _mm256_set1_ps(span), zero = _mm256_setzero_ps();
  __m256 distance = _mm256_sub_ps(x, _mm256_set1_ps(low));
  const __m256 below = _mm256_cmp_ps(distance, zero, _CMP_LT_OQ);
  distance = _mm256_blendv_ps(distance, _mm256_sub_ps(zero, distance), below);
  const __m256 flips = _mm256_floor_ps(_mm256_div_ps(distance, spans));
  const __m256d spans_pd = _mm256_set1_pd(span);
  const __m256 extra = _mm256_set_m128(
      remainder4(_mm256_extractf128_ps(distance, 1), _mm256_extractf128_ps(flips, 1), spans_pd),
      remainder4(_mm256_castps256_ps128(distance), _mm256_castps256_ps128(flips), spans_pd));
  const __m256 vouched = _mm256_and_ps(_mm256_cmp_ps(flips, _mm256_set1_ps(float(1 << 22)), _CMP_LT_OQ),
                                       _mm256_and_ps(_mm256_cmp_ps(extra, zero, _CMP_GE_OQ),
                                                     _mm256_cmp_ps(extra, spans, _CMP_LT_OQ)));
  if (_mm256_movemask_ps(vouched) != 0xFF) {
    alignas(32) float lanes[8], slopes[8];
    _mm256_store_ps(lanes, x);
    _mm256_store_ps(slopes, *slope);
    for (int i = 0; i < 8; ++i) lanes[i] = reflect(lanes[i], low, high, slopes[i]);
    *slope = _mm256_load_ps(slopes);
    return _mm256_load_ps(lanes);
  }
  // odd flips (the scalar's fmod(flips, 2) != 0) mirror the remainder; the slope turns with each mirroring
  const __m256 odd = _mm256_castsi256_ps(_mm256_cmpeq_epi32(
      _mm256_and_si256(_mm256_cvttps_epi32(flips), _mm256_set1_epi32(1)), _mm256_set1_epi32(1)));
  *slope = _mm256_blendv_ps(*slope, negate8(*slope), below);
  *slope = _mm256_blendv_ps(*slope, negate8(*slope), odd);
  const __m256 lows = _mm256_set1_ps(low);
  return _mm256_blendv_ps(_mm256_add_ps(lows, extra), _mm256_sub_ps(_mm256_add_ps(lows, spans), extra), odd);
}

/// pad_coordinate of taps.h for eight coordinates (and *slope).
template <Padding P>
__attribute__((target("avx2"))) inline __m256 pad8(__m256 x, int64_t size, bool align_corners, __m256* slope) {
  if constexpr (P == Padding::Border) {
    return clip8(x, size, slope);
  } else if constexpr (P == Padding::Reflection) {
    x = align_corners ? reflect8(x, 0.0f, float(size - 1), slope) : reflect8(x, -0.5f, float(size) - 0.5f, slope);
    return clip8(x, size, slope);
  } else {
    return x;
  }
}

template <Mode M, Padding P>
__attribute__((target("avx2"))) inline AxisTaps8<M> axis_taps8(__m256 g, int64_t size, bool align_corners) {
  const __m256 one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
  __m256 x;  // unnormalize
  if (align_corners) {
    x = _mm256_mul_ps(_mm256_mul_ps(_mm256_add_ps(g, one), half), _mm256_set1_ps(float(size - 1)));
  } else {
    x = _mm256_mul_ps(_mm256_sub_ps(_mm256_mul_ps(_mm256_add_ps(g, one), _mm256_set1_ps(float(size))), one), half);
  }
  AxisTaps8<M> taps;
  taps.slope = _mm256_set1_ps(align_corners ? float(size - 1) / 2 : float(size) / 2);
  if constexpr (M == Mode::Bicubic) {  // weights of the unpadded coordinate; each tap's index padded on its own
    const __m256 finite = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), x),
                                        _mm256_set1_ps(std::numeric_limits<float>::infinity()), _CMP_LT_OQ);
    x = _mm256_blendv_ps(_mm256_set1_ps(-100.0f), x, finite);
    const __m256 x0 = _mm256_floor_ps(x);
    const __m256 t = _mm256_sub_ps(x, x0);
    taps.weight[0] = cubic_k2_8(_mm256_add_ps(t, one));
    taps.weight[1] = cubic_k1_8(t);
    taps.weight[2] = cubic_k1_8(_mm256_sub_ps(one, t));
    taps.weight[3] = cubic_k2_8(_mm256_sub_ps(_mm256_set1_ps(2.0f), t));
    for (int k = 0; k < 4; ++k) {
      __m256 unused_slope = taps.slope;
      const __m256 at = pad8<P>(_mm256_add_ps(x0, _mm256_set1_ps(float(k - 1))), size, align_corners, &unused_slope);
      taps.index[k] = index8(_mm256_blendv_ps(_mm256_set1_ps(-100.0f), sanitize8(at), finite));
    }
    return taps;
  }
  x = sanitize8(pad8<P>(x, size, align_corners, &taps.slope));
  if constexpr (M == Mode::Bilinear) {
    const __m256 x0 = _mm256_floor_ps(x);
    const __m256 t = _mm256_sub_ps(x, x0);
    taps.index[0] = index8(x0);
    taps.index[1] = _mm256_add_epi32(taps.index[0], _mm256_set1_epi32(1));
    taps.weight[0] = _mm256_sub_ps(one, t);
    taps.weight[1] = t;
  } else {  // nearest: round half to even
    taps.index[0] = index8(_mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    taps.weight[0] = one;
  }
  return taps;
}

/// All lanes' bits where 0 <= index < size.
__attribute__((target("avx2"))) inline __m256i inside8(__m256i index, int64_t size) {
  const __m256i below = _mm256_cmpgt_epi32(_mm256_setzero_si256(), index);
  const __m256i beyond = _mm256_cmpgt_epi32(index, _mm256_set1_epi32(static_cast<int>(size - 1)));
  return _mm256_andnot_si256(_mm256_or_si256(below, beyond), _mm256_set1_epi32(-1));
}

/// v's 64-bit quarters in the order 0, 2, 1, 3.
__attribute__((target("avx2"))) inline __m256 pairs_in_order(__m256 v) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xD8));
}

/// The x and y of eight points stored as pairs (x0 y0 x1 y1 ...: grids and their gradients), de-interleaved.
__attribute__((target("avx2"))) inline void load_pairs8(const float* pairs, __m256 (&xy)[2]) {
  const __m256 low = _mm256_loadu_ps(pairs), high = _mm256_loadu_ps(pairs + 8);
  // x0 x1 x4 x5 | x2 x3 x6 x7, then in order (y likewise)
  xy[0] = pairs_in_order(_mm256_shuffle_ps(low, high, 0x88));
  xy[1] = pairs_in_order(_mm256_shuffle_ps(low, high, 0xDD));
}

/// Bilinear's d1 along each axis: -slope for the lower tap, +slope for the upper.
__attribute__((target("avx2"))) inline void bilinear_d1(const AxisTaps8<Mode::Bilinear> (&axis)[2],
                                                        __m256 (&d1)[2][2]) {
  for (int e = 0; e < 2; ++e) {
    d1[e][0] = negate8(axis[e].slope);
    d1[e][1] = axis[e].slope;
  }
}

/// weight_grads of taps.h for eight bilinear points: grad[e][k] = dW_k/dg_e, (1 * d1_x) * W_y and (1 * W_x) * d1_y.
__attribute__((target("avx2"))) inline void bilinear_weight_grads8(const AxisTaps8<Mode::Bilinear> (&axis)[2],
                                                                   __m256 (&grad)[2][4]) {
  __m256 d1[2][2];
  bilinear_d1(axis, d1);
  for (int k = 0; k < 4; ++k) {
    grad[0][k] = _mm256_mul_ps(d1[0][k % 2], axis[1].weight[k / 2]);
    grad[1][k] = _mm256_mul_ps(axis[0].weight[k % 2], d1[1][k / 2]);
  }
}

/// The taps of a run's groups of eight points: for tap k of group g (PointTaps' order: x tap k % axis taps, y tap
/// k / axis taps), the offsets in an image plane, the gather masks (taps inside) and the weights.
template <Mode M>
struct RunTaps8 {
  static constexpr int kAxisTaps = kTapsPerAxis<M>, kTaps = kAxisTaps * kAxisTaps;
  __m256i offset[kAvx2Groups][kTaps];
  __m256 inside[kAvx2Groups][kTaps];
  __m256 weight[kAvx2Groups][kTaps];
  AxisTaps8<M> axis[kAvx2Groups][2];  // x, y
};

/// The taps of the points [first, first + 8 * groups) of one batch item; offsets in an image plane of these strides.
template <Mode M, Padding P>
__attribute__((target("avx2"))) inline void run_taps8(const SampleArgs<float, 2>& a, const int64_t (&stride)[2],
                                                     int64_t first, int groups, RunTaps8<M>& taps) {
  constexpr int kAxisTaps = RunTaps8<M>::kAxisTaps;
  for (int group = 0; group < groups; ++group) {
    __m256 g[2];
    load_pairs8(a.grid + (first + group * 8) * 2, g);
    const AxisTaps8<M>& x = taps.axis[group][0] = axis_taps8<M, P>(g[0], a.size[0], a.align_corners);
    const AxisTaps8<M>& y = taps.axis[group][1] = axis_taps8<M, P>(g[1], a.size[1], a.align_corners);
    for (int k = 0; k < RunTaps8<M>::kTaps; ++k) {
      const __m256i ix = x.index[k % kAxisTaps], iy = y.index[k / kAxisTaps];
      taps.inside[group][k] = _mm256_castsi256_ps(_mm256_and_si256(inside8(ix, a.size[0]), inside8(iy, a.size[1])));
      taps.offset[group][k] =
          _mm256_add_epi32(_mm256_mullo_epi32(ix, _mm256_set1_epi32(static_cast<int>(stride[0]))),
                           _mm256_mullo_epi32(iy, _mm256_set1_epi32(static_cast<int>(stride[1]))));
      // (1 * W_x) * W_y, as PointTaps::weights
      taps.weight[group][k] = _mm256_mul_ps(x.weight[k % kAxisTaps], y.weight[k / kAxisTaps]);
    }
  }
}

/// coefficient * the plane's value at tap k of the group, or +0 for a tap outside (not read): what the scalar runs
/// add, a product or a selected zero.
template <Mode M>
__attribute__((target("avx2"))) inline __m256 tap_term8(const RunTaps8<M>& taps, int group, int k, const float* plane,
                                                       __m256 coefficient) {
  const __m256 tap = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), plane, taps.offset[group][k],
                                              taps.inside[group][k], sizeof(float));
  return _mm256_and_ps(_mm256_mul_ps(coefficient, tap), taps.inside[group][k]);
}

template <Mode M, Padding P>
__attribute__((target("avx2"))) void forward_run_avx2(const SampleArgs<float, 2>& a, int64_t first, int count) {
  RunTaps8<M> taps;
  const int groups = count / 8;
  run_taps8<M, P>(a, a.input.stride, first, groups, taps);
  const int64_t n = first / a.points;
  const float* plane = a.input.plane(n, 0);
  float* out = a.output.element(n, 0, first % a.points);
  for (int64_t c = 0; c < a.channels; ++c, plane += a.input.stride_c, out += a.output.stride_c) {
    for (int group = 0; group < groups; ++group) {
      __m256 value = _mm256_setzero_ps();
      for (int k = 0; k < RunTaps8<M>::kTaps; ++k) {
        value = _mm256_add_ps(value, tap_term8(taps, group, k, plane, taps.weight[group][k]));
      }
      float* target = out + group * 8 * a.output.stride_p;
      if (a.output.stride_p == 1) {
        _mm256_storeu_ps(target, value);
      } else {
        alignas(32) float lanes[8];
        _mm256_store_ps(lanes, value);
        for (int i = 0; i < 8; ++i) target[i * a.output.stride_p] = lanes[i];
      }
    }
  }
}

/// add_grid_terms and store_grid_values of point_work.h for eight bilinear points from their axis taps, with the
/// scalar's operations in its order: dW_k/dg_e (weight_grads) or, with grad_grad_grid, sum_f d2W_k/dg_e dg_f ggG_f
/// (directional_grads: only the mixed term, bilinear weights being straight along each axis), dotted with the sums.
__attribute__((target("avx2"))) inline void bilinear_grid_terms8(const SampleArgs<float, 2>& a, int64_t first,
                                                                 const AxisTaps8<Mode::Bilinear> (&axis)[2],
                                                                 const __m256 (&go_dot_v)[4]) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 coefficient[2][4];
  if (a.grad_grad_grid != nullptr) {
    __m256 along[2], d1[2][2];
    load_pairs8(a.grad_grad_grid + first * 2, along);
    bilinear_d1(axis, d1);
    for (int k = 0; k < 4; ++k) {
      const __m256 mixed = _mm256_mul_ps(d1[0][k % 2], d1[1][k / 2]);  // (1 * d1_x) * d1_y
      coefficient[0][k] = _mm256_add_ps(zero, _mm256_mul_ps(mixed, along[1]));
      coefficient[1][k] = _mm256_add_ps(zero, _mm256_mul_ps(mixed, along[0]));
    }
  } else {
    bilinear_weight_grads8(axis, coefficient);
  }
  __m256 share[2];
  for (int e = 0; e < 2; ++e) {
    __m256 total = zero;  // dot
    for (int k = 0; k < 4; ++k) total = _mm256_add_ps(total, _mm256_mul_ps(coefficient[e][k], go_dot_v[k]));
    share[e] = _mm256_add_ps(zero, total);  // grid_share[e] = {} += total
  }
  // interleaved back: x0 y0 x1 y1 ...
  const __m256 low = _mm256_unpacklo_ps(share[0], share[1]), high = _mm256_unpackhi_ps(share[0], share[1]);
  float* result = grid_result(a) + first * 2;
  _mm256_storeu_ps(result, _mm256_permute2f128_ps(low, high, 0x20));
  _mm256_storeu_ps(result + 8, _mm256_permute2f128_ps(low, high, 0x31));
}

// grad_grid_run's per-tap sums sum_c gO V_k eight points at a time, then the grid terms: bilinear's as vectors, the
// other modes' from each point's scalar taps (add_grid_terms, which needs the weights' derivatives).
template <Mode M, Padding P>
__attribute__((target("avx2"))) void grad_grid_run_avx2(const SampleArgs<float, 2>& a, int64_t first, int count) {
  constexpr int kTaps = RunTaps8<M>::kTaps;
  RunTaps8<M> taps;
  const int groups = count / 8;
  run_taps8<M, P>(a, a.input.stride, first, groups, taps);
  __m256 go_dot_v[kAvx2Groups][kTaps];
  for (int group = 0; group < groups; ++group)
    for (int k = 0; k < kTaps; ++k) go_dot_v[group][k] = _mm256_setzero_ps();
  const int64_t n = first / a.points;
  const float* plane = a.input.plane(n, 0);
  const float* go = a.grad_output.element(n, 0, first % a.points);
  for (int64_t c = 0; c < a.channels; ++c, plane += a.input.stride_c, go += a.grad_output.stride_c) {
    for (int group = 0; group < groups; ++group) {
      const int64_t s = a.grad_output.stride_p;
      const float* g = go + group * 8 * s;
      const __m256 grad = s == 1 ? _mm256_loadu_ps(g)
                                 : _mm256_setr_ps(g[0], g[s], g[2 * s], g[3 * s], g[4 * s], g[5 * s], g[6 * s], g[7 * s]);
      for (int k = 0; k < kTaps; ++k) {
        go_dot_v[group][k] = _mm256_add_ps(go_dot_v[group][k], tap_term8(taps, group, k, plane, grad));
      }
    }
  }
  for (int group = 0; group < groups; ++group) {
    if constexpr (M == Mode::Bilinear) {
      bilinear_grid_terms8(a, first + group * 8, taps.axis[group], go_dot_v[group]);
      continue;
    }
    alignas(32) float sums[kTaps][8];
    for (int k = 0; k < kTaps; ++k) _mm256_store_ps(sums[k], go_dot_v[group][k]);
    for (int i = 0; i < 8; ++i) {
      const int64_t point = first + group * 8 + i;
      float point_sums[kTaps];
      for (int k = 0; k < kTaps; ++k) point_sums[k] = sums[k][i];
      float grid_share[2] = {};
      add_grid_terms<2>(a, point, point_taps<float, M, P, 2>(a, point), point_sums, grid_share);
      store_grid_values(grid_result(a), point, grid_share);
    }
  }
}

/// directional of taps.h for eight bilinear points: the derivative of W_k along grad_grad_grid, the scalar's
/// operations in its order.
__attribute__((target("avx2"))) inline void bilinear_directional8(const SampleArgs<float, 2>& a, int64_t first,
                                                                  const AxisTaps8<Mode::Bilinear> (&axis)[2],
                                                                  __m256 (&along)[4]) {
  __m256 v[2], grad[2][4];
  load_pairs8(a.grad_grad_grid + first * 2, v);
  bilinear_weight_grads8(axis, grad);
  for (int k = 0; k < 4; ++k) {  // 0 + dW_k/dg_x v_x + dW_k/dg_y v_y
    along[k] = _mm256_add_ps(_mm256_add_ps(_mm256_setzero_ps(), _mm256_mul_ps(grad[0][k], v[0])),
                             _mm256_mul_ps(grad[1][k], v[1]));
  }
}

template <Mode M, Padding P, int kTaps>
__attribute__((target("avx2"))) void scatter_taps_avx2(const SampleArgs<float, 2>& a, const int64_t (&stride)[2],
                                                       int64_t first, int count, Coefficients coefficients,
                                                       int64_t (*offset)[kTaps], bool (*inside)[kTaps],
                                                       float (*coefficient)[kTaps]) {
  static_assert(kTaps == RunTaps8<M>::kTaps);
  RunTaps8<M> taps;
  const int groups = count / 8;
  run_taps8<M, P>(a, stride, first, groups, taps);
  for (int group = 0; group < groups; ++group) {
    __m256 coefficients8[kTaps];
    if constexpr (M == Mode::Bilinear) {
      if (coefficients == Coefficients::AlongGradGradGrid) {
        bilinear_directional8(a, first + group * 8, taps.axis[group], coefficients8);
      }
    }
    for (int k = 0; k < kTaps; ++k) {
      if (coefficients == Coefficients::Weights) coefficients8[k] = taps.weight[group][k];
      alignas(32) int32_t offsets[8];
      alignas(32) float lane_coefficients[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(offsets), taps.offset[group][k]);
      _mm256_store_ps(lane_coefficients, coefficients8[k]);
      const int lanes_inside = _mm256_movemask_ps(taps.inside[group][k]);
      for (int i = 0; i < 8; ++i) {
        const int point = group * 8 + i;
        inside[point][k] = (lanes_inside >> i) & 1;
        offset[point][k] = inside[point][k] ? offsets[i] : 0;
        coefficient[point][k] = lane_coefficients[i];
      }
    }
  }
}

#endif  // GRID_ENCODER_AVX2_RUNS

}  // namespace grid_encoder
