// The CPU kernels of the phases in problem.h, per dtype (CpuPhases<scalar_t>). kernels_cpu.cpp dispatches to them
// and instantiates float's; kernels_cpu_f64.cpp instantiates double's in a library of their own.
//
// Each kernel takes runs of up to kRunPoints points of one batch item: their taps first (taps.h, and point_work.h's
// point_taps, scatter_coefficients and add_grid_terms, shared with CUDA), then channel by channel, which reads and
// writes each channel plane's values back to back (CUDA's per-point functions in point_work.h walk a point's
// channels instead, in blocks, over neighbouring threads). Point-wise outputs (output, grad_grid, d_grad_output,
// d_grid) are split over points. Scatter targets (grad_input, d_input) are split over (batch, channel) pairs
// instead: each thread owns the channels it writes (and zeroes them first), so accumulation needs no atomics and the
// result does not depend on timing; into channels-first targets they take blocks of runs, a plane at a time.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>

#include "kernels_cpu_avx2.h"
#include "problem.h"

namespace grid_encoder {

/// Work items of about this many multiply-adds per thread task.
constexpr int64_t kGrainWork = 1 << 12;

/// Calls body(first, count) for runs of at most max_count points [first, first + count) of one batch item each,
/// covering every (n, p) pair, in parallel.
template <typename F>
void for_each_run(const Problem& pb, int64_t work_per_point, int max_count, const F& body) {
  const int64_t points = pb.points();
  const int64_t grain = std::max<int64_t>(max_count, kGrainWork / std::max<int64_t>(1, work_per_point));
  at::parallel_for(0, pb.sample_count(), grain, [&](int64_t begin, int64_t end) {
    for (int64_t first = begin; first < end;) {
      const int64_t batch_end = (first / points + 1) * points;
      const int count = static_cast<int>(std::min<int64_t>({end, batch_end, first + max_count}) - first);
      body(first, count);
      first += count;
    }
  });
}

/// Calls body(n, begin, end) for the channels [begin, end) of batch item n that this thread owns, in parallel, so
/// that every (n, c) pair belongs to exactly one thread. work_per_channel: operations per (n, c) pair, so that small
/// problems stay on the calling thread.
template <typename F>
void for_each_channel_owner(const Problem& pb, int64_t work_per_channel, const F& body) {
  const int64_t channels = pb.channels();
  if (channels == 0) return;
  const int64_t grain = std::max<int64_t>(1, kGrainWork / std::max<int64_t>(1, work_per_channel));
  at::parallel_for(0, pb.batch() * channels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin / channels; n * channels < end; ++n) {
      body(n, std::max<int64_t>(begin - n * channels, 0), std::min<int64_t>(end - n * channels, channels));
    }
  });
}

/// Zeroes the plane (n, c) of an input-shaped tensor of the given extents.
template <typename scalar_t, int kDims>
void zero_plane(const ImageView<scalar_t, kDims>& t, const int64_t (&size)[kDims], int64_t n, int64_t c) {
  const int64_t depth = kDims == 3 ? size[kDims - 1] : 1, depth_stride = kDims == 3 ? t.stride[kDims - 1] : 0;
  for (int64_t z = 0; z < depth; ++z) {
    for (int64_t y = 0; y < size[1]; ++y) {
      scalar_t* row = t.plane(n, c) + z * depth_stride + y * t.stride[1];
      if (t.stride[0] == 1) {
        std::fill_n(row, size[0], scalar_t(0));
      } else {
        for (int64_t x = 0; x < size[0]; ++x) row[x * t.stride[0]] = scalar_t(0);
      }
    }
  }
}

/// Points the CPU kernels take at a time (see forward_run).
constexpr int kRunPoints = 16;
/// Runs the CPU scatter into a channels-first target adds into one channel's plane before the next (see
/// scatter_into_input): 32 768 points, about 1.7 MB of taps and coefficients in 2-D (blocks of 64 to 4096 runs
/// measured, performance log version 44).
constexpr int kScatterBlockRuns = 2048;
static_assert(kRunPoints <= 8 * kAvx2Groups, "the AVX2 runs take a run at a time");

/// Where the taps of a run's points lie in an image with the given strides: offset[i][k] for tap k of point i, and
/// whether it lies inside. A tap outside gets offset 0, so that a kernel may read it and add a selected zero (see
/// forward_run); scatters must test `inside` before they write.
template <int kTaps>
struct RunOffsets {
  int64_t offset[kRunPoints][kTaps];
  bool inside[kRunPoints][kTaps];

  template <typename Taps>
  void set(int i, const Taps& taps, const int64_t* stride) {
    const TapOffsets<kTaps> offsets = taps.offsets(stride);
    for (int k = 0; k < kTaps; ++k) {
      inside[i][k] = offsets.inside[k];
      offset[i][k] = offsets.inside[k] ? offsets.offset[k] : 0;
    }
  }
};

/// output[n, c, p] = sum_k W_k V_k[n, c] (forward_point's math) for the points [first, first + count) of one batch
/// item: their taps first, then channel by channel. A point's channels lie a plane apart, so that point by point
/// the output lines of all channels compete for one cache set; run by run, each channel's stores are contiguous.
/// A tap outside the input reads offset 0 and adds a selected zero, so that the channel loop has no branches (a
/// product with zero would turn an infinite value at offset 0 into NaN).
template <typename scalar_t, Mode M, Padding P, int kDims>
void forward_run(const SampleArgs<scalar_t, kDims>& a, int64_t first, int count) {
  using T = opmath_t<scalar_t>;
  using Taps = PointTaps<T, M, P, kDims>;
  RunOffsets<Taps::kTaps> at;
  T weight[kRunPoints][Taps::kTaps];
  for (int i = 0; i < count; ++i) {
    const Taps taps = point_taps<scalar_t, M, P, kDims>(a, first + i);
    at.set(i, taps, a.input.stride);
    taps.weights(weight[i]);
  }
  const int64_t n = first / a.points;
  const scalar_t* plane = a.input.plane(n, 0);
  scalar_t* out = a.output.element(n, 0, first % a.points);
  for (int64_t c = 0; c < a.channels; ++c, plane += a.input.stride_c, out += a.output.stride_c) {
    for (int i = 0; i < count; ++i) {
      T value = 0;
      for (int k = 0; k < Taps::kTaps; ++k) {
        const T tap = static_cast<T>(plane[at.offset[i][k]]);
        value += at.inside[i][k] ? weight[i][k] * tap : T(0);
      }
      out[i * a.output.stride_p] = static_cast<scalar_t>(value);
    }
  }
}

/// grad_grid_point for the points [first, first + count) of one batch item, by runs as forward_run: their taps
/// first, then channel by channel the per-tap sums sum_c gO V_k (a channel's grad_output values read contiguously,
/// its plane's taps back to back), then each point's grid terms (add_grid_terms), stored to grid_result.
template <typename scalar_t, Mode M, Padding P, int kDims>
void grad_grid_run(const SampleArgs<scalar_t, kDims>& a, int64_t first, int count) {
  using T = opmath_t<scalar_t>;
  using Taps = PointTaps<T, M, P, kDims>;
  Taps taps[kRunPoints];
  RunOffsets<Taps::kTaps> at;
  T go_dot_v[kRunPoints][Taps::kTaps] = {};
  for (int i = 0; i < count; ++i) {
    taps[i] = point_taps<scalar_t, M, P, kDims>(a, first + i);
    at.set(i, taps[i], a.input.stride);
  }
  const int64_t n = first / a.points;
  const scalar_t* plane = a.input.plane(n, 0);
  const scalar_t* go = a.grad_output.element(n, 0, first % a.points);
  for (int64_t c = 0; c < a.channels; ++c, plane += a.input.stride_c, go += a.grad_output.stride_c) {
    for (int i = 0; i < count; ++i) {
      const T g = static_cast<T>(go[i * a.grad_output.stride_p]);
      for (int k = 0; k < Taps::kTaps; ++k) {
        const T tap = static_cast<T>(plane[at.offset[i][k]]);
        go_dot_v[i][k] += at.inside[i][k] ? g * tap : T(0);
      }
    }
  }
  for (int i = 0; i < count; ++i) {
    T grid_share[kDims] = {};
    add_grid_terms<kDims>(a, first + i, taps[i], go_dot_v[i], grid_share);
    store_grid_values(grid_result(a), first + i, grid_share);
  }
}

/// double_backward_point for the points [first, first + count) of one batch item, by runs as forward_run: their taps
/// first, then channel by channel d_grad_output (the grad_grad_input terms, then the grad_grad_grid terms, in
/// double_backward_point's order) and the per-tap sums of d_grid, then each point's grid terms.
template <typename scalar_t, Mode M, Padding P, int kDims>
void double_backward_run(const SampleArgs<scalar_t, kDims>& a, int64_t first, int count) {
  using T = opmath_t<scalar_t>;
  using Taps = PointTaps<T, M, P, kDims>;
  constexpr int kTaps = Taps::kTaps;
  const bool has_ggi = a.grad_grad_input.data != nullptr;
  const bool has_ggg = Taps::kSmooth && a.grad_grad_grid != nullptr;
  const bool wants_d_grad_output = a.d_grad_output.data != nullptr;
  const bool wants_d_grid = Taps::kSmooth && a.d_grid != nullptr;
  Taps taps[kRunPoints];
  RunOffsets<kTaps> input_at, ggi_at;  // the same taps, inside the same way, at each image's strides
  T weight[kRunPoints][kTaps], along[kRunPoints][kTaps];
  T ggg[kRunPoints][kDims];
  T go_dot_ggi[kRunPoints][kTaps] = {}, go_dot_v[kRunPoints][kTaps] = {};  // sum_c gO ggI_k, sum_c gO V_k
  for (int i = 0; i < count; ++i) {
    taps[i] = point_taps<scalar_t, M, P, kDims>(a, first + i);
    input_at.set(i, taps[i], a.input.stride);
    ggi_at.set(i, taps[i], a.grad_grad_input.stride);
    if (has_ggi) taps[i].weights(weight[i]);
    if (has_ggg) {
      load_grid_values(a.grad_grad_grid, first + i, ggg[i]);
      taps[i].directional(ggg[i], along[i]);
    }
  }
  const int64_t n = first / a.points, p = first % a.points;
  for (int64_t c = 0; c < a.channels; ++c) {
    const scalar_t* v = a.input.plane(n, c);
    const scalar_t* ggi = has_ggi ? a.grad_grad_input.plane(n, c) : nullptr;
    if (wants_d_grad_output) {
      scalar_t* dgo = a.d_grad_output.element(n, c, p);
      for (int i = 0; i < count; ++i) {
        T value = 0;
        for (int k = 0; has_ggi && k < kTaps; ++k) {
          value += ggi_at.inside[i][k] ? weight[i][k] * static_cast<T>(ggi[ggi_at.offset[i][k]]) : T(0);
        }
        for (int k = 0; has_ggg && k < kTaps; ++k) {
          value += input_at.inside[i][k] ? along[i][k] * static_cast<T>(v[input_at.offset[i][k]]) : T(0);
        }
        dgo[i * a.d_grad_output.stride_p] = static_cast<scalar_t>(value);
      }
    }
    if (wants_d_grid) {
      const scalar_t* go = a.grad_output.element(n, c, p);
      for (int i = 0; i < count; ++i) {
        const T g = static_cast<T>(go[i * a.grad_output.stride_p]);
        for (int k = 0; k < kTaps; ++k) {
          if (has_ggi) go_dot_ggi[i][k] += ggi_at.inside[i][k] ? g * static_cast<T>(ggi[ggi_at.offset[i][k]]) : T(0);
          if (has_ggg) go_dot_v[i][k] += input_at.inside[i][k] ? g * static_cast<T>(v[input_at.offset[i][k]]) : T(0);
        }
      }
    }
  }
  if (!wants_d_grid) return;
  for (int i = 0; i < count; ++i) {
    T weight_grad[kDims][kTaps], along_grad[kDims][kTaps];
    if (has_ggi) taps[i].weight_grads(weight_grad);
    if (has_ggg) taps[i].directional_grads(ggg[i], along_grad);
    T d_grid[kDims] = {};
    for (int e = 0; e < kDims; ++e) {
      if (has_ggi) d_grid[e] += dot(weight_grad[e], go_dot_ggi[i]);
      if (has_ggg) d_grid[e] += dot(along_grad[e], go_dot_v[i]);
    }
    store_grid_values(a.d_grid, first + i, d_grid);
  }
}

/// The taps of a run's points in an input-shaped target (their offsets in its strides) and the coefficients the
/// scatter adds there: ScatterIntoInput's per-point work, before the adds.
template <typename T, int kTapCount>
struct ScatterRun {
  static constexpr int kTaps = kTapCount;
  RunOffsets<kTaps> at;
  T coefficient[kRunPoints][kTaps];
  int count = 0;
};

/// The taps and coefficients of the points [first, first + count) of one batch item (see ScatterRun; the
/// coefficients: scatter_coefficients, as coefficients says).
template <typename scalar_t, Mode M, Padding P, int kDims, typename Run>
void scatter_run_taps(const SampleArgs<scalar_t, kDims>& a, const ImageView<scalar_t, kDims>& target, int64_t first,
                      int count, Coefficients coefficients, Run& run) {
  using Taps = PointTaps<opmath_t<scalar_t>, M, P, kDims>;
  run.count = count;
  int vectorized = 0;  // points whose taps and coefficients kernels_cpu_avx2.h computed
  if constexpr (kAvx2Runs<scalar_t, M, P, kDims>) {
    const bool served = coefficients == Coefficients::Weights || M == Mode::Bilinear;
    if (served && avx2_runs_available() && offsets_fit_int32(target.stride, a.size)) {
      vectorized = count / 8 * 8;
      if (vectorized > 0) {
        scatter_taps_avx2<M, P>(a, target.stride, first, vectorized, coefficients, run.at.offset, run.at.inside,
                                run.coefficient);
      }
    }
  }
  for (int i = vectorized; i < count; ++i) {
    const Taps taps = point_taps<scalar_t, M, P, kDims>(a, first + i);
    run.at.set(i, taps, target.stride);
    scatter_coefficients<kDims>(a, first + i, taps, coefficients, run.coefficient[i]);
  }
}

/// target[n, c, tap k] += coefficient[k] * grad_output[n, c, p] for one channel c of a run's points (first: the
/// run's first point, n * P + p), in point order.
template <typename scalar_t, int kDims, typename Run>
void scatter_run_channel(const SampleArgs<scalar_t, kDims>& a, const ImageView<scalar_t, kDims>& target,
                         int64_t first, int64_t c, const Run& run) {
  using T = opmath_t<scalar_t>;
  const int64_t n = first / a.points, p = first % a.points;
  scalar_t* plane = target.plane(n, c);
  const scalar_t* go = a.grad_output.element(n, c, p);
  for (int i = 0; i < run.count; ++i) {
    const T g = static_cast<T>(go[i * a.grad_output.stride_p]);
    for (int k = 0; k < Run::kTaps; ++k) {
      if (run.at.inside[i][k]) plane[run.at.offset[i][k]] += static_cast<scalar_t>(run.coefficient[i][k] * g);
    }
  }
}

/// The same for the channels [begin, end) of one point.
template <typename scalar_t, Mode M, Padding P, int kDims>
void scatter_point(const SampleArgs<scalar_t, kDims>& a, const ImageView<scalar_t, kDims>& target, int64_t point,
                   int64_t begin, int64_t end, Coefficients coefficients) {
  using T = opmath_t<scalar_t>;
  using Taps = PointTaps<T, M, P, kDims>;
  const int64_t n = point / a.points, p = point % a.points;
  const Taps taps = point_taps<scalar_t, M, P, kDims>(a, point);
  const TapOffsets<Taps::kTaps> offsets = taps.offsets(target.stride);
  T coefficient[Taps::kTaps];
  scatter_coefficients<kDims>(a, point, taps, coefficients, coefficient);
  for (int64_t c = begin; c < end; ++c) {
    const T go = static_cast<T>(*a.grad_output.element(n, c, p));
    scalar_t* plane = target.plane(n, c);
    for (int k = 0; k < Taps::kTaps; ++k) {
      if (offsets.inside[k]) plane[offsets.offset[k]] += static_cast<scalar_t>(coefficient[k] * go);
    }
  }
}

/// Calls body(Sampler<...>()) for the problem's dimensionality, mode and padding.
template <typename F>
void dispatch_cpu_sampler(const Problem& pb, const F& body) {
  pb.dims() == 3 ? dispatch_sampler<3>(pb.mode, pb.padding, body) : dispatch_sampler<2>(pb.mode, pb.padding, body);
}

/// The phases' CPU kernels for one dtype (float or double; the operators compute half in float). The members are
/// defined outside the class, so not inline: a file that calls them for a dtype instantiated elsewhere (extern
/// template below) compiles only the call, not another copy of the kernels.
template <typename scalar_t>
struct CpuPhases {
  static void sample_output(const Problem& pb);
  static void grad_grid(const Problem& pb);
  static void double_backward_points(const Problem& pb);
  static void scatter_into_input(const Problem& pb, Coefficients coefficients);
};

/// Calls scalar(first, count) for runs of points as for_each_run does, or where kernels_cpu_avx2.h serves the
/// problem vector(first, whole) for a run's whole groups of eight points and scalar for the rest. vector is a generic
/// lambda: instantiated only where called.
template <typename scalar_t, typename S, typename Vector, typename Scalar>
void for_each_run_vectorized(const Problem& pb, const SampleArgs<scalar_t, S::kDims>& args, int64_t work_per_point,
                             const Vector& vector, const Scalar& scalar) {
  if constexpr (kAvx2Runs<scalar_t, S::kMode, S::kPadding, S::kDims>) {
    if (avx2_runs_available() && offsets_fit_int32(args.input.stride, args.size)) {
      for_each_run(pb, work_per_point, kRunPoints, [&](int64_t first, int count) {
        const int whole = count / 8 * 8;
        if (whole > 0) vector(first, whole);
        if (whole < count) scalar(first + whole, count - whole);
      });
      return;
    }
  }
  for_each_run(pb, work_per_point, kRunPoints, scalar);
}

template <typename scalar_t>
void CpuPhases<scalar_t>::sample_output(const Problem& pb) {
  dispatch_cpu_sampler(pb, [&](auto sampler) {
    using S = decltype(sampler);
    const auto args = make_args<scalar_t, S::kDims>(pb);
    for_each_run_vectorized<scalar_t, S>(
        pb, args, pb.channels() * S::kTaps,
        [&](auto first, int count) { forward_run_avx2<S::kMode, S::kPadding>(args, first, count); },
        [&](int64_t first, int count) { forward_run<scalar_t, S::kMode, S::kPadding, S::kDims>(args, first, count); });
  });
}

template <typename scalar_t>
void CpuPhases<scalar_t>::grad_grid(const Problem& pb) {
  dispatch_cpu_sampler(pb, [&](auto sampler) {
    using S = decltype(sampler);
    const auto args = make_args<scalar_t, S::kDims>(pb);
    for_each_run_vectorized<scalar_t, S>(
        pb, args, pb.channels() * S::kTaps * S::kDims,
        [&](auto first, int count) { grad_grid_run_avx2<S::kMode, S::kPadding>(args, first, count); },
        [&](int64_t first, int count) {
          grad_grid_run<scalar_t, S::kMode, S::kPadding, S::kDims>(args, first, count);
        });
  });
}

template <typename scalar_t>
void CpuPhases<scalar_t>::double_backward_points(const Problem& pb) {
  dispatch_cpu_sampler(pb, [&](auto sampler) {
    using S = decltype(sampler);
    const auto args = make_args<scalar_t, S::kDims>(pb);
    for_each_run(pb, pb.channels() * S::kTaps * (S::kDims + 1) * 2, kRunPoints, [&](int64_t first, int count) {
      double_backward_run<scalar_t, S::kMode, S::kPadding, S::kDims>(args, first, count);
    });
  });
}

template <typename scalar_t>
void CpuPhases<scalar_t>::scatter_into_input(const Problem& pb, Coefficients coefficients) {
  dispatch_cpu_sampler(pb, [&](auto sampler) {
    using S = decltype(sampler);
    const auto args = make_args<scalar_t, S::kDims>(pb);
    const auto& target = coefficients == Coefficients::Weights ? args.grad_input : args.d_input;
    const int64_t points = pb.points();
    int64_t positions = 1;  // per plane
    for (int e = 0; e < S::kDims; ++e) positions *= args.size[e];
    // Each thread zeroes the planes it owns before adding into them: the target is zeroed in parallel, by the threads
    // that then write it, not by one thread in a pass of its own.
    for_each_channel_owner(pb, points * S::kTaps + positions, [&](int64_t n, int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) zero_plane(target, args.size, n, c);
      if constexpr (S::kTaps <= 8) {
        // By blocks of runs: the taps of a block's points, then channel by channel, so that a channels-first
        // target's plane receives a whole block's adds while it is in the caches (run by run, the adds visit every
        // plane in turn). Where a target's channels share cache lines (channels-last), a block is one run.
        const int64_t block_runs = target.stride_c == 1 ? 1
                                   : std::min<int64_t>(kScatterBlockRuns, (points + kRunPoints - 1) / kRunPoints);
        // default-initialized (a vector would zero every run's arrays, up to 3.4 MB, before each block fills them)
        std::unique_ptr<ScatterRun<opmath_t<scalar_t>, S::kTaps>[]> runs(
            new ScatterRun<opmath_t<scalar_t>, S::kTaps>[block_runs]);
        for (int64_t block = 0; block < points; block += block_runs * kRunPoints) {
          int count = 0;
          for (int64_t p = block; p < points && count < block_runs; p += kRunPoints, ++count) {
            scatter_run_taps<scalar_t, S::kMode, S::kPadding, S::kDims>(
                args, target, n * points + p, static_cast<int>(std::min<int64_t>(kRunPoints, points - p)),
                coefficients, runs[count]);
          }
          for (int64_t c = begin; c < end; ++c) {
            for (int r = 0; r < count; ++r) {
              scatter_run_channel(args, target, n * points + block + int64_t(r) * kRunPoints, c, runs[r]);
            }
          }
        }
      } else {  // bicubic's 16 or 64 taps: point by point (by runs measured 10-15% slower)
        for (int64_t p = 0; p < points; ++p) {
          scatter_point<scalar_t, S::kMode, S::kPadding, S::kDims>(args, target, n * points + p, begin, end,
                                                                   coefficients);
        }
      }
    });
  });
}

/// The phases of one dtype, as problem.h's pointers.
template <typename scalar_t>
constexpr Phases kCpuPhases{CpuPhases<scalar_t>::sample_output, CpuPhases<scalar_t>::grad_grid,
                            CpuPhases<scalar_t>::double_backward_points, CpuPhases<scalar_t>::scatter_into_input};

extern template struct CpuPhases<float>;
extern template struct CpuPhases<double>;

}  // namespace grid_encoder
