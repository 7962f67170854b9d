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
#include <ATen/ops/empty.h>
#include <ATen/ops/sort.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "kernels_cuda.h"
#include "problem.h"

namespace grid_encoder {
namespace {

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

/// The binned scatter's chunks of batch items hold at most this many pairs (or one item with more): its buffers,
/// 8 bytes a pair and 12 a position, stay near one tri-plane's at 262 144 points, where all of a batch's at once
/// set the peak memory of an encoder's eikonal step.
constexpr int64_t kChunkPairs = int64_t(1) << 20;

/// Byte offsets of consecutive arrays in one buffer, each on a 16-byte boundary.
struct BufferLayout {
  int64_t bytes = 0;
  template <typename T>
  int64_t add(int64_t count) {
    const int64_t offset = bytes;
    bytes += (count * static_cast<int64_t>(sizeof(T)) + 15) / 16 * 16;
    return offset;
  }
};

/// The binned scatter (see kernels_cuda.cuh), chunk by chunk of batch items (at most kChunkPairs pairs, or one item):
/// the counting pass and the scan of the counts, the filing (by integer atomics, or under
/// torch.use_deterministic_algorithms(True) in the order of a stable sort of the pairs' positions, which is sample
/// order), then the sums. The chunks run in order on one stream and share one allocation, sized for the largest;
/// each numbers its samples in 32 bits (items of 2^31 points or more take the atomic scatter: scatter_into_input).
template <typename scalar_t, int kDims>
void binned_scatter(const Problem& pb, Coefficients coefficients, CudaLaunch launch, int taps) {
  using acc_t = opmath_t<scalar_t>;
  const SampleArgs<scalar_t, kDims> args = make_args<scalar_t, kDims>(pb);
  TORCH_INTERNAL_ASSERT(args.grad_output.stride_c == 1 || args.channels == 1);  // point-major (operators.cpp)
  int64_t item_positions = 1;
  for (int e = 0; e < kDims; ++e) item_positions *= args.size[e];
  const int64_t item_pairs = args.points * taps;
  const int64_t chunk_items =
      std::min(std::max<int64_t>(kChunkPairs / std::max<int64_t>(item_pairs, 1), 1), args.batch);

  BufferLayout layout;
  const int64_t count_at = layout.add<int>(chunk_items * item_positions);
  const int64_t tile_sums_at = layout.add<int64_t>(scan_tiles(chunk_items * item_positions));
  const int64_t end_at = layout.add<int64_t>(chunk_items * item_positions);
  const int64_t list_at = layout.add<FiledPair<acc_t>>(chunk_items * item_pairs);
  const at::Tensor buffer = at::empty({layout.bytes}, pb.input.options().dtype(at::kByte));
  auto* const bytes = static_cast<char*>(buffer.data_ptr());
  BinnedBuffers<scalar_t> buffers;
  buffers.taps = taps;
  buffers.count = reinterpret_cast<int*>(bytes + count_at);
  buffers.tile_sums = reinterpret_cast<int64_t*>(bytes + tile_sums_at);
  buffers.end = reinterpret_cast<int64_t*>(bytes + end_at);
  buffers.list = reinterpret_cast<FiledPair<acc_t>*>(bytes + list_at);

  const bool deterministic = at::globalContext().deterministicAlgorithms();
  for (int64_t first = 0; first < args.batch; first += chunk_items) {
    const SampleArgs<scalar_t, kDims> chunk = args.items(first, std::min(chunk_items, args.batch - first));
    const int64_t pairs = chunk.batch * item_pairs;
    buffers.positions = chunk.batch * item_positions;
    C10_CUDA_CHECK(cudaMemsetAsync(buffers.count, 0, buffers.positions * sizeof(int), launch.stream));
    at::Tensor position, coefficient, order;
    if (deterministic) {
      position = at::empty({pairs}, buffer.options().dtype(at::kLong));
      coefficient = at::empty({pairs}, buffer.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
      buffers.position = position.data_ptr<int64_t>();
      buffers.coefficient = coefficient.data_ptr<acc_t>();
    }
    launch_count_pairs(chunk, coefficients, buffers, launch);
    if (deterministic) {
      order = std::get<1>(at::sort(position, /*stable=*/true, /*dim=*/0, /*descending=*/false));
      position.reset();  // not needed by the filing
      buffers.position = nullptr;
      buffers.order = order.const_data_ptr<int64_t>();
    }
    launch_file_pairs(chunk, coefficients, buffers, launch);
    launch_binned_sums(chunk, coefficients, buffers, launch);
  }
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
    using Args = std::decay_t<decltype(args)>;
    constexpr int kDims = Args::dims;
    const int taps = pb.taps_per_sample();
    const bool deterministic = at::globalContext().deterministicAlgorithms();
    TORCH_CHECK(pb.points() <= INT32_MAX || !deterministic, "grid_encoder: deterministic input gradients on CUDA "
                "take at most 2^31 - 1 points per batch item, got ", pb.points());
    if (scatters_binned(pb, deterministic)) {
      binned_scatter<typename Args::scalar_type, kDims>(pb, coefficients, launch, taps);
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
