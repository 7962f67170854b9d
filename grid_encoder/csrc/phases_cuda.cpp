// The CUDA launchers of the phases in problem.h: the host side. Each turns its Problem into raw views for the
// problem's dtype and dimensionality, allocates what the kernels need, and runs them through the launchers of
// kernels_cuda.h on the current stream. Also the channels-last working copy.
//
// This file is compiled twice. The main library's copy serves float and double and defines Phase::cuda; with
// GRID_ENCODER_CUDA16 it is compiled into the float16/bfloat16 library, which _build.py builds on the first call in
// those dtypes (a third of the CUDA build's work that most users never need), and the main library's Phase::cuda
// reaches that library's phases once _build.py has loaded it (grid_encoder_set_phases in operators.cpp).
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "kernels_cuda.h"
#include "problem.h"

namespace grid_encoder {
namespace {

/// Problems with at most this many (sample, tap, channel) terms scatter with atomics (about 10 us of L2 atomic
/// throughput on an H100 or H200, against 30-50 us of launches for the binned scatter).
constexpr int64_t kMaxAtomicScatterTerms = int64_t(1) << 20;

cudaStream_t current_stream(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.get_device()).stream();
}

/// Calls body(args, launch) with the problem's views (SampleArgs<scalar_t, kDims> for its dtype and
/// dimensionality) and its CudaLaunch.
template <typename F>
void dispatch_cuda(const Problem& pb, const F& body) {
  const CudaLaunch launch{pb.mode, pb.padding, current_stream(pb.input)};
#ifdef GRID_ENCODER_CUDA16
  AT_DISPATCH_REDUCED_FLOATING_TYPES(pb.input.scalar_type(), "grid_encoder_cuda16", [&] {
#else
  AT_DISPATCH_FLOATING_TYPES(pb.input.scalar_type(), "grid_encoder_cuda", [&] {
#endif
    pb.dims() == 3 ? body(make_args<scalar_t, 3>(pb), launch) : body(make_args<scalar_t, 2>(pb), launch);
  });
}

/// The binned scatter (see kernels_cuda.cuh): pairs and counts, a scan of the counts, the pairs filed by position
/// (by integer atomics, or under torch.use_deterministic_algorithms(True) by a stable sort of their positions, in
/// sample order), then the sums.
template <typename scalar_t, int kDims>
void binned_scatter(const Problem& pb, const SampleArgs<scalar_t, kDims>& args, Coefficients coefficients,
                    CudaLaunch launch, int taps) {
  using acc_t = opmath_t<scalar_t>;
  const int64_t pairs = pb.sample_count() * taps;
  const auto options = pb.input.options();
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  BinnedBuffers<scalar_t> buffers;
  buffers.positions = pb.batch();
  buffers.taps = taps;
  for (int e = 0; e < kDims; ++e) buffers.positions *= args.size[e];
  at::Tensor position = deterministic ? at::empty({pairs}, options.dtype(at::kLong)) : at::Tensor();
  const at::Tensor coefficient = at::empty({pairs}, options.dtype(c10::CppTypeToScalarType<acc_t>::value));
  const at::Tensor count = at::zeros({buffers.positions}, options.dtype(at::kInt));
  buffers.position = deterministic ? position.data_ptr<int64_t>() : nullptr;
  buffers.coefficient = coefficient.data_ptr<acc_t>();
  buffers.count = count.data_ptr<int>();
  // The sums read each sample's grad_output channels as one row: in place where they are contiguous (the
  // point-major gradient of a permuted output, as the encoders' is), else from a point-major copy.
  const auto& grad_output = args.grad_output;
  at::Tensor points;
  if (grad_output.stride_c == 1) {
    buffers.rows = grad_output.data;
    buffers.row_stride_n = grad_output.stride_n;
    buffers.row_stride_p = grad_output.stride_p;
    buffers.row_words = grad_output.channel_words;
  } else {
    points = at::empty({pb.sample_count(), pb.channels()}, pb.grad_output.options());
    buffers.points = static_cast<scalar_t*>(points.data_ptr());
    buffers.rows = buffers.points;
    buffers.row_stride_n = pb.points() * pb.channels();
    buffers.row_stride_p = pb.channels();
    buffers.row_words = rows_are_whole_words<scalar_t>(pb.channels());
  }
  launch_scatter_pairs(args, coefficients, buffers, launch);
  const at::Tensor end = at::cumsum(count, 0, at::kLong);
  buffers.end = end.const_data_ptr<int64_t>();
  at::Tensor list;
  if (deterministic) {
    list = std::get<1>(at::sort(position, /*stable=*/true, /*dim=*/0, /*descending=*/false));
    position.reset();  // not needed by the sums
  } else {
    list = at::empty({pairs}, options.dtype(at::kLong));
  }
  buffers.list = list.data_ptr<int64_t>();
  if (!deterministic) launch_file_pairs(args, buffers, launch);
  launch_binned_sums(args, coefficients, buffers, launch);
}

void sample_output(const Problem& pb) {
  dispatch_cuda(pb, [](const auto& args, CudaLaunch launch) { launch_sample_output(args, launch); });
}

void grad_grid(const Problem& pb) {
  dispatch_cuda(pb, [](const auto& args, CudaLaunch launch) { launch_grad_grid(args, launch); });
}

void double_backward_points(const Problem& pb) {
  dispatch_cuda(pb, [](const auto& args, CudaLaunch launch) { launch_double_backward_points(args, launch); });
}

void scatter_into_input(const Problem& pb, Coefficients coefficients) {
  dispatch_cuda(pb, [&](const auto& args, CudaLaunch launch) {
    constexpr int kDims = std::decay_t<decltype(args)>::dims;
    const int taps = dispatch_sampler<kDims>(pb.mode, pb.padding, [](auto s) { return decltype(s)::kTaps; });
    if (pb.sample_count() * taps * pb.channels() > kMaxAtomicScatterTerms ||
        at::globalContext().deterministicAlgorithms()) {
      binned_scatter(pb, args, coefficients, launch, taps);
      return;
    }
    // The target is fresh from empty_like, so dense: its bytes are one range (a memset costs less host time than
    // zero_()'s fill kernel, which counts on small problems).
    const at::Tensor& target = coefficients == Coefficients::Weights ? pb.grad_input : pb.d_input;
    TORCH_INTERNAL_ASSERT(target.is_non_overlapping_and_dense());
    C10_CUDA_CHECK(cudaMemsetAsync(target.data_ptr(), 0, target.nbytes(), launch.stream));
    launch_atomic_scatter(args, coefficients, launch);
  });
}

constexpr Phases kPhases{sample_output, grad_grid, double_backward_points, scatter_into_input};

}  // namespace
}  // namespace grid_encoder

#ifdef GRID_ENCODER_CUDA16

/// The float16/bfloat16 library's phases.
extern "C" C10_EXPORT const void* grid_encoder_phases() {
  return &grid_encoder::kPhases;
}

#else

namespace grid_encoder {
namespace {

/// The phases for the problem's dtype.
const Phases& phases(const Problem& pb) {
  const auto dtype = pb.input.scalar_type();
  if (dtype != at::kHalf && dtype != at::kBFloat16) return kPhases;
  return loaded(cuda_reduced_phases, "float16/bfloat16 CUDA");
}

}  // namespace

void SampleOutput::cuda(const Problem& pb) { phases(pb).sample_output(pb); }
void GradGrid::cuda(const Problem& pb) { phases(pb).grad_grid(pb); }
void DoubleBackwardPoints::cuda(const Problem& pb) { phases(pb).double_backward_points(pb); }
void ScatterIntoInput::cuda(const Problem& pb, Coefficients coefficients) {
  phases(pb).scatter_into_input(pb, coefficients);
}

at::Tensor channels_last_copy_cuda(const at::Tensor& t, at::MemoryFormat format) {
  if (t.is_contiguous(format)) return t;
  if (!t.is_contiguous()) return t.contiguous(format);  // other strides: torch's generic copy
  at::Tensor out = at::empty(t.sizes(), t.options().memory_format(format));
  const int64_t channels = t.size(1), items = t.numel() / channels;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "channels_last_copy", [&] {
    launch_channels_last_copy(t.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), channels,
                              items / std::max<int64_t>(t.size(0), 1), items, current_stream(t));
  });
  return out;
}

}  // namespace grid_encoder

#endif  // GRID_ENCODER_CUDA16
