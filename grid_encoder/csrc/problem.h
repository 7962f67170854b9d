// The hand-off from the operators (operators.cpp) to the kernels: the tensors of one call (Problem), the phases
// the operators run on them, each a CPU and a CUDA launcher called by name (launch<Phase>), and the conversion of
// run-time settings and tensors into the template parameters and raw views of point_work.h.
#pragma once

#include <ATen/TensorUtils.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstdint>
#include <type_traits>

#include "point_work.h"

namespace grid_encoder {

/// The tensors of one operator call. Undefined tensors are absent (not given, or not requested). The scatter
/// targets (grad_input, d_input) are shaped, typed and laid out like at::empty_like(input): zero-filled on the
/// CPU, whose kernels add into them; uninitialized on CUDA, whose launcher writes every element (binned scatter)
/// or zeroes the target first (atomic scatter).
struct Problem {
  Mode mode = Mode::Bilinear;
  Padding padding = Padding::Zeros;
  bool align_corners = true;
  at::Tensor input;            // [N, C, (D,) H, W], any strides (CUDA: the working copy the kernels read)
  at::Tensor grid;             // [N, (Do,) Ho, Wo, dims], contiguous; dims = 2 or 3
  at::Tensor output;           // [N, C, (Do,) Ho, Wo], contiguous (forward)
  at::Tensor grad_output;      // like output, any strides that flatten its points into one (backward, double
                               // backward; a point-major gradient of a permuted output does)
  at::Tensor grad_input;       // like input (backward)
  at::Tensor grad_grid;        // like grid (backward)
  at::Tensor grad_grad_input;  // like input, any strides (double backward; the tangent: input_tangent)
  at::Tensor grad_grad_grid;   // like grid, contiguous (double backward; the tangent: grid_tangent)
  at::Tensor d_grad_output;    // like grad_output (double backward; the tangent: the output's tangent)
  at::Tensor d_input;          // like input (double backward)
  at::Tensor d_grid;           // like grid (double backward)
  int64_t group = 1;           // forward on CUDA: input items per output item, reduced (forward_reduced_point)
  bool product = false;        // the reduction of a group: the items' product, else their sum

  int64_t dims() const { return grid.size(-1); }
  int64_t batch() const { return input.size(0); }
  int64_t channels() const { return input.size(1); }
  int64_t points() const {  // output points per batch item: (Do *) Ho * Wo
    int64_t count = 1;
    for (int64_t d = 1; d < grid.dim() - 1; ++d) count *= grid.size(d);
    return count;
  }
  int64_t sample_count() const { return batch() * points(); }  // number of (n, p) pairs
  int taps_per_sample() const {  // the sampler's kTaps (taps.h): 1, 2^dims (bilinear) or 4^dims (bicubic)
    const auto taps = [](auto sampler) { return decltype(sampler)::kTaps; };
    return dims() == 3 ? dispatch_sampler<3>(mode, padding, taps) : dispatch_sampler<2>(mode, padding, taps);
  }
  int64_t tap_count() const { return sample_count() * taps_per_sample(); }  // number of (sample, tap) pairs
};

// The phases of the operators. Each has a CPU launcher (kernels_cpu.cpp) and a CUDA launcher (phases_cuda.cpp, which
// runs the kernels of kernels_cuda.cuh); launch<Phase>(problem) runs the one for the problem's device.

/// output = sum_k W_k V_k.
struct SampleOutput {
  static void cpu(const Problem& pb);
  static void cuda(const Problem& pb);
};

/// grad_grid = sum_k dW_k/dg sum_c grad_output V_k; with grad_grad_grid given, the double backward's d_grid when
/// grad_grad_grid is its only input (see grad_grid_point).
struct GradGrid {
  static void cpu(const Problem& pb);
  static void cuda(const Problem& pb);
};

/// The double backward's point-wise results, whichever of d_grad_output and d_grid is defined (see
/// double_backward_point). With only d_grad_output, it is the output's tangent along (grad_grad_input,
/// grad_grad_grid).
struct DoubleBackwardPoints {
  static void cpu(const Problem& pb);
  static void cuda(const Problem& pb);
};

/// grad_input (Coefficients::Weights) or d_input (Coefficients::AlongGradGradGrid): for every tap k of every
/// point, target[n, c, tap k] += coefficient_k * grad_output[n, c, p].
struct ScatterIntoInput {
  static void cpu(const Problem& pb, Coefficients coefficients);
  static void cuda(const Problem& pb, Coefficients coefficients);
};

/// The four phases for the dtypes of one library, as pointers. The libraries built on first use (_build.py: the CPU
/// kernels for double, the CUDA kernels for float16 and bfloat16) export theirs as grid_encoder_phases(); _build.py
/// hands them to the main library's launchers through grid_encoder_set_phases (operators.cpp).
struct Phases {
  void (*sample_output)(const Problem&);
  void (*grad_grid)(const Problem&);
  void (*double_backward_points)(const Problem&);
  void (*scatter_into_input)(const Problem&, Coefficients);
};

extern const Phases* cpu_double_phases;    // null until the CPU double library is loaded
extern const Phases* cuda_reduced_phases;  // null until the CUDA float16/bfloat16 library is loaded

/// *phases, or an error saying that the kernels for `dtypes` (a library built on first use) are not loaded.
inline const Phases& loaded(const Phases* phases, const char* dtypes) {
  TORCH_CHECK(phases != nullptr, "grid_encoder: the ", dtypes, " kernels are not loaded. grid_encoder.grid_sample() "
              "builds and loads them on its first call with such tensors (and torch.compile when it traces one); "
              "call it once before calling the operators directly");
  return *phases;
}

#ifdef GRID_ENCODER_WITH_CUDA
/// t in `format` (channels-last): t itself if it is already laid out so, else a copy (phases_cuda.cpp).
at::Tensor channels_last_copy_cuda(const at::Tensor& t, at::MemoryFormat format);

/// Problems with at most this many (sample, tap, channel) terms scatter into input-shaped gradients on CUDA with
/// atomics: about 10 us of L2 atomic throughput on an H100 or H200, where the binned scatter of kernels_cuda.cuh runs
/// six kernels (chosen when its launches cost 30-50 us; its own scan has cut that since, and the threshold was not
/// measured again).
constexpr int64_t kMaxAtomicScatterTerms = int64_t(1) << 20;

/// Whether a CUDA scatter of pb is binned: beyond kMaxAtomicScatterTerms, and always under deterministic
/// algorithms. It numbers a batch item's samples in 32 bits, so items of 2^31 points or more take the atomics
/// (which deterministic algorithms refuse: phases_cuda.cpp).
inline bool scatters_binned(const Problem& pb, bool deterministic) {
  const int64_t terms = pb.tap_count() * pb.channels();
  return pb.points() <= INT32_MAX && (deterministic || terms > kMaxAtomicScatterTerms);
}
#endif

/// Runs Phase::cpu(pb, extra...), or Phase::cuda(pb, extra...) for a CUDA problem (operators.cpp rejects CUDA
/// tensors in a build without CUDA kernels).
template <typename Phase, typename... Extra>
void launch(const Problem& pb, Extra... extra) {
#ifdef GRID_ENCODER_WITH_CUDA
  if (pb.input.is_cuda()) return Phase::cuda(pb, extra...);
#endif
  Phase::cpu(pb, extra...);
}

// ---------------------------------------------------------------------------------------------
// From tensors to the raw views of point_work.h.

/// Whether t, with these strides (in elements), loads and stores whole channel blocks as words (see load_block):
/// its channels contiguous, its data pointer and every other stride on 16-byte boundaries. Channel blocks start at
/// multiples of their width (kChannelBlock, or the product's kProductChannels), so every block is then aligned.
inline bool channel_blocks_are_words(const at::Tensor& t, int64_t stride_c, at::IntArrayRef other_strides) {
  const int64_t element = static_cast<int64_t>(t.element_size());
  if (stride_c != 1 || reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 != 0) return false;
  for (const int64_t stride : other_strides) {
    if ((stride * element) % 16 != 0) return false;
  }
  return true;
}

template <typename scalar_t, int kDims>
ImageView<scalar_t, kDims> image_view(const at::Tensor& t) {
  ImageView<scalar_t, kDims> view;
  if (!t.defined()) return view;
  view.data = static_cast<scalar_t*>(t.data_ptr());
  view.stride_n = t.stride(0);
  view.stride_c = t.stride(1);
  for (int e = 0; e < kDims; ++e) view.stride[e] = t.stride(t.dim() - 1 - e);
  std::array<int64_t, kDims + 1> others{view.stride_n};
  for (int e = 0; e < kDims; ++e) others[e + 1] = view.stride[e];
  view.channel_words = channel_blocks_are_words(t, view.stride_c, others);
  return view;
}

/// The strides of t ([N, C, spatial...]) viewed as [N, C, P], if its spatial dimensions (P points in all)
/// flatten into one stride; else none.
inline auto point_strides(const at::Tensor& t, int64_t points) {
  const std::array<int64_t, 3> shape{t.size(0), t.size(1), points};
  return at::detail::computeStride(t.sizes(), t.strides(), at::IntArrayRef(shape));
}

/// t ([N, C, spatial...]) as [N, C, P]: its spatial dimensions must flatten into one stride (see as_points in
/// operators.cpp).
template <typename scalar_t>
PointsView<scalar_t> points_view(const at::Tensor& t, int64_t points) {
  PointsView<scalar_t> view;
  if (!t.defined()) return view;
  const auto strides = point_strides(t, points);
  TORCH_INTERNAL_ASSERT(strides.has_value(), "grid_encoder: a point tensor's points do not share one stride");
  view.data = static_cast<scalar_t*>(t.data_ptr());
  view.stride_n = (*strides)[0];
  view.stride_c = (*strides)[1];
  view.stride_p = (*strides)[2];
  view.channel_words = channel_blocks_are_words(t, view.stride_c, {view.stride_n, view.stride_p});
  return view;
}

template <typename scalar_t>
scalar_t* data_or_null(const at::Tensor& t) {
  return t.defined() ? static_cast<scalar_t*>(t.data_ptr()) : nullptr;
}

template <typename scalar_t, int kDims>
SampleArgs<scalar_t, kDims> make_args(const Problem& pb) {
  SampleArgs<scalar_t, kDims> a;
  a.batch = pb.batch() / pb.group;
  a.group = pb.group;
  a.product = pb.product;
  a.channels = pb.channels();
  a.points = pb.points();
  for (int e = 0; e < kDims; ++e) a.size[e] = pb.input.size(pb.input.dim() - 1 - e);
  a.align_corners = pb.align_corners;
  a.grid = data_or_null<const scalar_t>(pb.grid);
  a.input = image_view<const scalar_t, kDims>(pb.input);
  a.output = points_view<scalar_t>(pb.output, a.points);
  a.grad_output = points_view<const scalar_t>(pb.grad_output, a.points);
  a.grad_input = image_view<scalar_t, kDims>(pb.grad_input);
  a.grad_grid = data_or_null<scalar_t>(pb.grad_grid);
  a.grad_grad_input = image_view<const scalar_t, kDims>(pb.grad_grad_input);
  a.grad_grad_grid = data_or_null<const scalar_t>(pb.grad_grad_grid);
  a.d_grad_output = points_view<scalar_t>(pb.d_grad_output, a.points);
  a.d_input = image_view<scalar_t, kDims>(pb.d_input);
  a.d_grid = data_or_null<scalar_t>(pb.d_grid);
  return a;
}

}  // namespace grid_encoder
