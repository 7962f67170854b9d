// CPU loops around the per-point math of sample_math.h.
//
// Point-wise outputs (output, grad_grid, d grad_output, d grid) are split over points. Scatter
// targets (grad_input, d input) are split over (batch, channel) pairs instead: each thread owns the
// channels it writes, so accumulation needs no atomics and the result does not depend on timing.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "kernels.h"

namespace grid_encoder {
namespace {

/// Work items of about this many multiply-adds per thread task.
constexpr int64_t kGrainWork = 1 << 12;

/// Calls body(point) for every (n, p) pair, in parallel.
template <typename F>
void for_each_point(const Problem& pb, int64_t work_per_point, const F& body) {
  const int64_t grain = std::max<int64_t>(1, kGrainWork / std::max<int64_t>(1, work_per_point));
  at::parallel_for(0, pb.sample_count(), grain, [&](int64_t begin, int64_t end) {
    for (int64_t point = begin; point < end; ++point) body(point);
  });
}

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

/// Calls body(point, owned channels) so that every (n, c) pair belongs to exactly one thread.
template <typename F>
void for_each_channel_owner(const Problem& pb, const F& body) {
  const int64_t channels = pb.channels(), points = pb.points();
  if (channels == 0 || points == 0) return;
  at::parallel_for(0, pb.batch() * channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin / channels; n * channels < end; ++n) {
      const int64_t c_begin = std::max<int64_t>(begin - n * channels, 0);
      const int64_t c_end = std::min<int64_t>(end - n * channels, channels);
      for (int64_t p = 0; p < points; ++p) body(n * points + p, channel_range(c_begin, c_end));
    }
  });
}

/// Points the CPU forward takes at a time (see forward_run).
constexpr int kForwardRun = 16;

/// output[n, c, p] = sum_k W_k V_k[n, c] (forward_point's math) for the points [first, first + count) of one batch
/// item: their taps first, then channel by channel. A point's channels lie a plane apart, so that point by point
/// the output lines of all channels compete for one cache set; run by run, each channel's stores are contiguous.
/// A tap outside the input reads offset 0 and adds a selected zero, so that the channel loop has no branches (a
/// product with zero would turn an infinite value at offset 0 into NaN).
template <typename scalar_t, Interp I, Padding P, int kDims>
void forward_run(const SampleArgs<scalar_t, kDims>& a, int64_t first, int count) {
  using T = opmath_t<scalar_t>;
  using Taps = PointTaps<T, I, P, kDims>;
  int64_t offset[kForwardRun][Taps::kTaps];
  T weight[kForwardRun][Taps::kTaps];
  bool inside[kForwardRun][Taps::kTaps];
  for (int i = 0; i < count; ++i) {
    const Taps taps = point_taps<scalar_t, I, P, kDims>(a, first + i);
    const TapOffsets<Taps::kTaps> at = taps.offsets(a.input.stride);
    taps.weights(weight[i]);
    for (int k = 0; k < Taps::kTaps; ++k) {
      inside[i][k] = at.inside[k];
      offset[i][k] = at.inside[k] ? at.offset[k] : 0;
    }
  }
  const int64_t n = first / a.points;
  const scalar_t* plane = a.input.plane(n, 0);
  scalar_t* out = a.output.at(n, 0, first % a.points, a.channels, a.points);
  for (int64_t c = 0; c < a.channels; ++c, plane += a.input.stride_c, out += a.points) {
    for (int i = 0; i < count; ++i) {
      T value = 0;
      for (int k = 0; k < Taps::kTaps; ++k) {
        const T tap = static_cast<T>(plane[offset[i][k]]);
        value += inside[i][k] ? weight[i][k] * tap : T(0);
      }
      out[i] = static_cast<scalar_t>(value);
    }
  }
}

/// Runs body<scalar_t, I, P, kDims>(args) for the call's dtype and settings.
#define GRID_ENCODER_CPU_DISPATCH(pb, NAME, ...)                                                      \
  AT_DISPATCH_FLOATING_TYPES(pb.input.scalar_type(), NAME, [&] {                                      \
    dispatch_sampler(pb, [&](auto interp_tag, auto padding_tag, auto dims_tag) {                     \
      constexpr Interp I = decltype(interp_tag)::value;                                               \
      constexpr Padding P = decltype(padding_tag)::value;                                             \
      constexpr int kDims = decltype(dims_tag)::value;                                                \
      constexpr int64_t kTaps = PointTaps<double, I, P, kDims>::kTaps;                                \
      const auto args = make_args<scalar_t, kDims>(pb);                                               \
      (void)kTaps;                                                                                    \
      __VA_ARGS__                                                                                     \
    });                                                                                               \
  })

}  // namespace

void forward_cpu(const Problem& pb) {
  GRID_ENCODER_CPU_DISPATCH(pb, "grid_sample_forward_cpu", {
    for_each_run(pb, pb.channels() * kTaps, kForwardRun, [&](int64_t first, int count) {
      forward_run<scalar_t, I, P, kDims>(args, first, count);
    });
  });
}

void backward_cpu(const Problem& pb) {
  GRID_ENCODER_CPU_DISPATCH(pb, "grid_sample_backward_cpu", {
    if (pb.grad_grid.defined()) {
      const ChannelSpan all = channel_range(0, pb.channels());
      for_each_point(pb, pb.channels() * kTaps * kDims, [&](int64_t point) {
        opmath_t<scalar_t> dgrid[kDims] = {};
        backward_grid_point<scalar_t, I, P, kDims>(args, point, all, dgrid);
        store_grid_values(args.grad_grid, point, dgrid);
      });
    }
    if (pb.grad_input.defined()) {
      for_each_channel_owner(pb, [&](int64_t point, ChannelSpan owned) {
        scatter_point<scalar_t, I, P, kDims>(args, point, owned, /*along_grid=*/false);
      });
    }
  });
}

void double_backward_cpu(const Problem& pb) {
  GRID_ENCODER_CPU_DISPATCH(pb, "grid_sample_double_backward_cpu", {
    if (pb.grad_grad_output_out.defined() || pb.grid_grad_out.defined()) {
      const ChannelSpan all = channel_range(0, pb.channels());
      for_each_point(pb, pb.channels() * kTaps * (kDims + 1) * 2, [&](int64_t point) {
        opmath_t<scalar_t> dgrid[kDims] = {};
        double_backward_point<scalar_t, I, P, kDims>(args, point, all, dgrid);
        if (args.grid_grad_out != nullptr) store_grid_values(args.grid_grad_out, point, dgrid);
      });
    }
    if (pb.input_grad_out.defined()) {
      for_each_channel_owner(pb, [&](int64_t point, ChannelSpan owned) {
        scatter_point<scalar_t, I, P, kDims>(args, point, owned, /*along_grid=*/true);
      });
    }
  });
}

}  // namespace grid_encoder
