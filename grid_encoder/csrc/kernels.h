// Host-side glue shared by the CPU and CUDA launchers: the tensors of one call, their conversion to
// the raw views of sample_math.h, and the dispatch from run-time settings to template parameters.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <type_traits>

#include "sample_math.h"

namespace grid_encoder {

/// The tensors of one forward, backward or double-backward call. Undefined tensors are absent
/// (not given, or not requested). Scatter targets (grad_input, input_grad_out) are shaped, typed and laid out
/// like at::empty_like(input): zero-filled on the CPU, whose kernels add into them; uninitialized on CUDA,
/// where the binned scatter writes every element.
struct Problem {
  Interp interp = Interp::Bilinear;
  Padding padding = Padding::Zeros;
  bool align_corners = true;
  at::Tensor input;        // [N, C, (D,) H, W], any strides (CUDA: the working copy where kernels read it)
  at::Tensor grid;         // [N, (Do,) Ho, Wo, dims], contiguous; dims = 2 or 3
  at::Tensor output;       // [N, C, (Do,) Ho, Wo], contiguous (forward)
  at::Tensor grad_output;  // like output, contiguous (backward, double backward)
  at::Tensor grad_input;   // like input (backward)
  at::Tensor grad_grid;    // like grid (backward)
  at::Tensor grad_grad_input;        // like input, any strides (double backward)
  at::Tensor grad_grad_grid;         // like grid, contiguous (double backward)
  at::Tensor grad_grad_output_out;   // like grad_output (double backward)
  at::Tensor input_grad_out;         // like input (double backward)
  at::Tensor grid_grad_out;          // like grid (double backward)

  int64_t dims() const { return grid.size(-1); }
  int64_t batch() const { return input.size(0); }
  int64_t channels() const { return input.size(1); }
  int64_t points() const {  // output points per batch item: (Do *) Ho * Wo
    int64_t count = 1;
    for (int64_t d = 1; d < grid.dim() - 1; ++d) count *= grid.size(d);
    return count;
  }
  int64_t sample_count() const { return batch() * points(); }  // number of (n, p) pairs
};

void forward_cpu(const Problem& problem);
void backward_cpu(const Problem& problem);
void double_backward_cpu(const Problem& problem);
#ifdef GRID_ENCODER_WITH_CUDA
// Defined in kernels_cuda.cuh, instantiated in cuda/*.cu for each dtype and kDims = 2 and 3.
template <typename scalar_t, int kDims>
void forward_cuda(const Problem& problem);
template <typename scalar_t, int kDims>
void backward_cuda(const Problem& problem);
template <typename scalar_t, int kDims>
void double_backward_cuda(const Problem& problem);
// t in `format` (channels-last): t itself if it is already laid out so, else a copy (cuda/channels_last.cu).
at::Tensor channels_last_copy_cuda(const at::Tensor& t, at::MemoryFormat format);
#endif

template <typename scalar_t, int kDims>
ImageView<scalar_t, kDims> image_view(const at::Tensor& t) {
  ImageView<scalar_t, kDims> view;
  if (!t.defined()) return view;
  view.data = static_cast<scalar_t*>(t.data_ptr());
  view.stride_n = t.stride(0);
  view.stride_c = t.stride(1);
  for (int e = 0; e < kDims; ++e) view.stride[e] = t.stride(t.dim() - 1 - e);
  // Channel blocks start at multiples of kChannelBlock; with contiguous channels, every tap's block is then
  // 16-byte aligned when the data pointer and the other strides are.
  const int64_t element = static_cast<int64_t>(t.element_size());
  bool aligned = reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && (view.stride_n * element) % 16 == 0;
  for (int e = 0; e < kDims; ++e) aligned = aligned && (view.stride[e] * element) % 16 == 0;
  view.channel_words = view.stride_c == 1 && aligned;
  return view;
}

template <typename scalar_t>
PointsView<scalar_t> points_view(const at::Tensor& t) {
  return {t.defined() ? static_cast<scalar_t*>(t.data_ptr()) : nullptr};
}

template <typename scalar_t>
scalar_t* data_or_null(const at::Tensor& t) {
  return t.defined() ? static_cast<scalar_t*>(t.data_ptr()) : nullptr;
}

template <typename scalar_t, int kDims>
SampleArgs<scalar_t, kDims> make_args(const Problem& pb) {
  SampleArgs<scalar_t, kDims> a;
  a.batch = pb.batch();
  a.channels = pb.channels();
  a.points = pb.points();
  for (int e = 0; e < kDims; ++e) a.size[e] = pb.input.size(pb.input.dim() - 1 - e);
  a.align_corners = pb.align_corners;
  a.grid = data_or_null<const scalar_t>(pb.grid);
  a.input = image_view<const scalar_t, kDims>(pb.input);
  a.output = points_view<scalar_t>(pb.output);
  a.grad_output = points_view<const scalar_t>(pb.grad_output);
  a.grad_input = image_view<scalar_t, kDims>(pb.grad_input);
  a.grad_grid = data_or_null<scalar_t>(pb.grad_grid);
  a.grad_grad_input = image_view<const scalar_t, kDims>(pb.grad_grad_input);
  a.grad_grad_grid = data_or_null<const scalar_t>(pb.grad_grad_grid);
  a.grad_grad_output_out = points_view<scalar_t>(pb.grad_grad_output_out);
  a.input_grad_out = image_view<scalar_t, kDims>(pb.input_grad_out);
  a.grid_grad_out = data_or_null<scalar_t>(pb.grid_grad_out);
  return a;
}

template <Interp I>
using InterpTag = std::integral_constant<Interp, I>;
template <Padding P>
using PaddingTag = std::integral_constant<Padding, P>;
template <int D>
using DimsTag = std::integral_constant<int, D>;

template <int D, Interp I, typename F>
void dispatch_padding(const Problem& pb, const F& body) {
  switch (pb.padding) {
    case Padding::Zeros: return body(InterpTag<I>{}, PaddingTag<Padding::Zeros>{}, DimsTag<D>{});
    case Padding::Border: return body(InterpTag<I>{}, PaddingTag<Padding::Border>{}, DimsTag<D>{});
    case Padding::Reflection: return body(InterpTag<I>{}, PaddingTag<Padding::Reflection>{}, DimsTag<D>{});
  }
  TORCH_CHECK(false, "grid_encoder: unknown padding mode ", static_cast<int64_t>(pb.padding));
}

template <int D, typename F>
void dispatch_interp(const Problem& pb, const F& body) {
  switch (pb.interp) {
    case Interp::Bilinear: return dispatch_padding<D, Interp::Bilinear>(pb, body);
    case Interp::Nearest: return dispatch_padding<D, Interp::Nearest>(pb, body);
    case Interp::Bicubic: return dispatch_padding<D, Interp::Bicubic>(pb, body);
  }
  TORCH_CHECK(false, "grid_encoder: unknown interpolation mode ", static_cast<int64_t>(pb.interp));
}

/// Calls body(InterpTag, PaddingTag, DimsTag) with the call's settings as compile-time constants.
template <typename F>
void dispatch_sampler(const Problem& pb, const F& body) {
  if (pb.dims() == 3) return dispatch_interp<3>(pb, body);
  TORCH_CHECK(pb.dims() == 2, "grid_encoder: expected a 2-D or 3-D grid, got last dimension ", pb.dims());
  dispatch_interp<2>(pb, body);
}

}  // namespace grid_encoder
