// The grid_encoder operators: schemas, argument checks, output allocation, and the hand-off to the
// CPU or CUDA launcher. Their autograd is in autograd.cpp and grid_sample.py.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include "kernels.h"

namespace grid_encoder {
namespace {

// Runs NAME##_cpu, or NAME##_cuda<scalar_t, dims> for the problem's dtype and dimensionality, on the problem's
// device (check_sampler rejects CUDA tensors in a build without CUDA kernels).
#ifdef GRID_ENCODER_WITH_CUDA
#define GRID_ENCODER_RUN(NAME, pb)                                                                       \
  (!(pb).input.is_cuda()                                                                                 \
       ? NAME##_cpu(pb)                                                                                  \
       : AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, (pb).input.scalar_type(), #NAME, [&] { \
           (pb).dims() == 3 ? NAME##_cuda<scalar_t, 3>(pb) : NAME##_cuda<scalar_t, 2>(pb);              \
         }))
#else
#define GRID_ENCODER_RUN(NAME, pb) NAME##_cpu(pb)
#endif

// Python validates first and raises friendlier errors; these checks keep the C++ entry points safe
// on their own (the Python checks vanish under python -O, and the ops can be called directly).
void check_sampler(const char* op, const at::Tensor& input, const at::Tensor& grid, int64_t interpolation,
                   int64_t padding) {
  TORCH_CHECK(interpolation >= 0 && interpolation <= 2, op,
              ": interpolation must be 0 (bilinear), 1 (nearest) or 2 (bicubic), got ", interpolation);
  TORCH_CHECK(padding >= 0 && padding <= 2, op, ": padding must be 0 (zeros), 1 (border) or 2 (reflection), got ",
              padding);
  TORCH_CHECK(input.dim() == 4 || input.dim() == 5, op,
              ": expected input of shape (N, C, H, W) or (N, C, D, H, W), got shape ", input.sizes());
  TORCH_CHECK(grid.dim() == input.dim() && grid.size(-1) == input.dim() - 2, op, ": expected grid of shape ",
              input.dim() == 4 ? "(N, Ho, Wo, 2)" : "(N, Do, Ho, Wo, 3)", " for input of shape ", input.sizes(),
              ", got ", grid.sizes());
  TORCH_CHECK(grid.size(0) == input.size(0), op, ": expected grid and input to have the same batch size, got ",
              grid.size(0), " and ", input.size(0));
  for (int64_t d = 2; d < input.dim(); ++d) {
    TORCH_CHECK(input.size(d) > 0, op, ": expected input to have non-empty spatial dimensions, got shape ",
                input.sizes());
  }
  TORCH_CHECK(input.device() == grid.device(), op, ": expected input and grid on the same device, got ",
              input.device(), " and ", grid.device());
  TORCH_CHECK(input.scalar_type() == grid.scalar_type(), op, ": expected input and grid of the same dtype, got ",
              input.scalar_type(), " and ", grid.scalar_type());
  const auto dtype = input.scalar_type();
  const bool reduced = dtype == at::kHalf || dtype == at::kBFloat16;
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || (reduced && input.is_cuda()), op,
              ": expected float32 or float64 tensors (float16 and bfloat16 on CUDA), got ", dtype, " on ",
              input.device());
  TORCH_CHECK(input.is_cpu() || input.is_cuda(), op, ": expected CPU or CUDA tensors, got ", input.device());
#ifndef GRID_ENCODER_WITH_CUDA
  TORCH_CHECK(!input.is_cuda(), op, ": this build of grid_encoder has no CUDA kernels (it was compiled without "
              "a visible GPU); delete its build folder or set GRID_ENCODER_BUILD_CUDA=1 to rebuild with CUDA");
#endif
}

/// Checks that t (named `what`) has shape `shape` and the dtype and device of `like`.
void check_like(const char* op, const char* what, const at::Tensor& t, at::IntArrayRef shape, const at::Tensor& like) {
  TORCH_CHECK(t.sizes() == shape, op, ": expected ", what, " of shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == like.scalar_type() && t.device() == like.device(), op, ": expected ", what,
              " of dtype ", like.scalar_type(), " on ", like.device(), ", got ", t.scalar_type(), " on ", t.device());
}

std::vector<int64_t> output_shape(const at::Tensor& input, const at::Tensor& grid) {
  std::vector<int64_t> shape{input.size(0), input.size(1)};
  for (int64_t d = 1; d < grid.dim() - 1; ++d) shape.push_back(grid.size(d));
  return shape;
}

/// On CUDA with several channels, the kernels read input-like tensors channels-last: each tap
/// of a point is then a contiguous run of channels (see kChannelBlock in sample_math.h), where channels-first
/// data puts every channel in a separate cache sector. The CPU reads tensors in the layout they come in.
bool channels_last_working_copy(const at::Tensor& input) { return input.is_cuda() && input.size(1) >= 4; }

at::MemoryFormat channels_last_format(const at::Tensor& input) {
  return input.dim() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::ChannelsLast3d;
}

/// An input-like tensor in the layout the kernels read it in.
at::Tensor working_copy(const at::Tensor& t, const at::Tensor& input) {
#ifdef GRID_ENCODER_WITH_CUDA
  if (channels_last_working_copy(input)) return channels_last_copy_cuda(t, channels_last_format(input));
#endif
  return t;
}

/// The call's problem. `reads_input`: whether the kernels will read input (else it only gives shapes).
Problem make_problem(const at::Tensor& input, const at::Tensor& grid, int64_t interpolation, int64_t padding,
                     bool align_corners, bool reads_input) {
  Problem pb;
  pb.interp = static_cast<Interp>(interpolation);
  pb.padding = static_cast<Padding>(padding);
  pb.align_corners = align_corners;
  pb.input = reads_input ? working_copy(input, input) : input;
  pb.grid = grid.contiguous();
  return pb;
}

/// The tensor an input-shaped gradient is written into (see Problem): the CPU kernels add into zeros, the CUDA
/// binned scatter writes every element.
at::Tensor scatter_target(const at::Tensor& input) {
  return input.is_cuda() ? at::empty_like(input) : at::zeros_like(input);
}

/// Turns a problem whose point-wise outputs are done into its scatter part: the scatter reads neither input nor
/// grad_grad_input, so their working copies are dropped here and freed before the scatter allocates its buffers.
void keep_only_scatter(Problem& pb, const at::Tensor& input) {
  pb.input = input;
  pb.grad_grad_input = at::Tensor();
  pb.grad_grid = pb.grad_grad_output_out = pb.grid_grad_out = at::Tensor();
}

/// The placeholder returned for an output that was not requested.
at::Tensor not_requested(const at::Tensor& like) { return at::empty({0}, like.options()); }

}  // namespace

at::Tensor grid_sample_forward(const at::Tensor& input, const at::Tensor& grid, int64_t interpolation,
                               int64_t padding, bool align_corners) {
  constexpr const char* op = "grid_encoder.grid_sample_forward";
  check_sampler(op, input, grid, interpolation, padding);
  const c10::DeviceGuard guard(input.device());
  Problem pb = make_problem(input, grid, interpolation, padding, align_corners, /*reads_input=*/true);
  pb.output = at::empty(output_shape(input, grid), input.options());
  GRID_ENCODER_RUN(forward, pb);
  return pb.output;
}

std::tuple<at::Tensor, at::Tensor> grid_sample_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                                        const at::Tensor& grid, int64_t interpolation,
                                                        int64_t padding, bool align_corners,
                                                        std::array<bool, 2> output_mask) {
  constexpr const char* op = "grid_encoder.grid_sample_backward";
  check_sampler(op, input, grid, interpolation, padding);
  check_like(op, "grad_output", grad_output, output_shape(input, grid), input);
  const c10::DeviceGuard guard(input.device());
  const bool computes_grad_grid = output_mask[1] && interpolation != static_cast<int64_t>(Interp::Nearest);
  Problem pb = make_problem(input, grid, interpolation, padding, align_corners, /*reads_input=*/computes_grad_grid);
  pb.grad_output = grad_output.contiguous();
  at::Tensor grad_grid = not_requested(grid);
  if (output_mask[1]) {  // nearest sampling is piecewise constant in the grid
    grad_grid = computes_grad_grid ? at::empty_like(pb.grid) : at::zeros_like(pb.grid);
    if (computes_grad_grid) pb.grad_grid = grad_grid;
  }
  if (pb.grad_grid.defined()) GRID_ENCODER_RUN(backward, pb);
  at::Tensor grad_input = not_requested(input);
  if (output_mask[0]) {
    keep_only_scatter(pb, input);
    grad_input = pb.grad_input = scatter_target(input);
    GRID_ENCODER_RUN(backward, pb);
  }
  return {grad_input, grad_grid};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> grid_sample_double_backward(
    const std::optional<at::Tensor>& grad_grad_input, const std::optional<at::Tensor>& grad_grad_grid,
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& grid, int64_t interpolation,
    int64_t padding, bool align_corners, std::array<bool, 3> output_mask) {
  constexpr const char* op = "grid_encoder.grid_sample_double_backward";
  check_sampler(op, input, grid, interpolation, padding);
  check_like(op, "grad_output", grad_output, output_shape(input, grid), input);
  const bool has_ggi = grad_grad_input.has_value() && grad_grad_input->defined();
  const bool has_ggg = grad_grad_grid.has_value() && grad_grad_grid->defined();
  if (has_ggi) check_like(op, "grad_grad_input", *grad_grad_input, input.sizes(), input);
  if (has_ggg) check_like(op, "grad_grad_grid", *grad_grad_grid, grid.sizes(), input);
  const c10::DeviceGuard guard(input.device());

  // Which terms can be non-zero (see sample_math.h): nearest has no grid derivatives at all.
  const bool smooth = interpolation != static_cast<int64_t>(Interp::Nearest);
  const bool grid_terms = smooth && has_ggg;
  const bool computes_dgo = has_ggi || grid_terms;
  const bool computes_dinput = grid_terms;
  const bool computes_dgrid = smooth && (has_ggi || has_ggg);
  // Only the grid terms of d grad_output and d grid read the input.
  const bool reads_input = grid_terms && (output_mask[0] || output_mask[2]);

  Problem pb = make_problem(input, grid, interpolation, padding, align_corners, reads_input);
  pb.grad_output = grad_output.contiguous();
  if (has_ggi) pb.grad_grad_input = working_copy(*grad_grad_input, input);
  if (has_ggg) pb.grad_grad_grid = grad_grad_grid->contiguous();

  at::Tensor d_grad_output = not_requested(input), d_grid = not_requested(grid);
  if (output_mask[0]) {
    d_grad_output = computes_dgo ? at::empty_like(pb.grad_output) : at::zeros_like(pb.grad_output);
    if (computes_dgo) pb.grad_grad_output_out = d_grad_output;
  }
  if (output_mask[2]) {
    d_grid = computes_dgrid ? at::empty_like(pb.grid) : at::zeros_like(pb.grid);
    if (computes_dgrid) pb.grid_grad_out = d_grid;
  }
  if (pb.grad_grad_output_out.defined() || pb.grid_grad_out.defined()) GRID_ENCODER_RUN(double_backward, pb);
  at::Tensor d_input = not_requested(input);
  if (output_mask[1] && computes_dinput) {
    keep_only_scatter(pb, input);
    d_input = pb.input_grad_out = scatter_target(input);
    GRID_ENCODER_RUN(double_backward, pb);
  } else if (output_mask[1]) {
    d_input = at::zeros_like(input);
  }
  return {d_grad_output, d_input, d_grid};
}

at::Tensor grid_sample_tangent(const std::optional<at::Tensor>& input_tangent,
                               const std::optional<at::Tensor>& grid_tangent, const at::Tensor& input,
                               const at::Tensor& grid, int64_t interpolation, int64_t padding, bool align_corners) {
  constexpr const char* op = "grid_encoder.grid_sample_tangent";
  check_sampler(op, input, grid, interpolation, padding);
  const bool has_ti = input_tangent.has_value() && input_tangent->defined();
  const bool has_tg = grid_tangent.has_value() && grid_tangent->defined();
  if (has_ti) check_like(op, "input_tangent", *input_tangent, input.sizes(), input);
  if (has_tg) check_like(op, "grid_tangent", *grid_tangent, grid.sizes(), input);
  const c10::DeviceGuard guard(input.device());
  // The output's tangent is the double backward's d grad_output with grad_grad_input = input_tangent and
  // grad_grad_grid = grid_tangent: sum_k W_k tI_k + sum_k (sum_e dW_k/dg_e tG_e) V_k.
  const bool grid_terms = has_tg && interpolation != static_cast<int64_t>(Interp::Nearest);
  if (!has_ti && !grid_terms) return at::zeros(output_shape(input, grid), input.options());
  Problem pb = make_problem(input, grid, interpolation, padding, align_corners, /*reads_input=*/grid_terms);
  if (has_ti) pb.grad_grad_input = working_copy(*input_tangent, input);
  if (grid_terms) pb.grad_grad_grid = grid_tangent->contiguous();
  at::Tensor tangent = at::empty(output_shape(input, grid), input.options());
  pb.grad_grad_output_out = tangent;
  GRID_ENCODER_RUN(double_backward, pb);
  return tangent;
}

TORCH_LIBRARY(grid_encoder, m) {
  m.def("grid_sample_forward(Tensor input, Tensor grid, int interpolation, int padding, bool align_corners) "
        "-> Tensor");
  m.def("grid_sample_backward(Tensor grad_output, Tensor input, Tensor grid, int interpolation, int padding, "
        "bool align_corners, bool[2] output_mask) -> (Tensor, Tensor)");
  m.def("grid_sample_double_backward(Tensor? grad_grad_input, Tensor? grad_grad_grid, Tensor grad_output, "
        "Tensor input, Tensor grid, int interpolation, int padding, bool align_corners, bool[3] output_mask) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("grid_sample_tangent(Tensor? input_tangent, Tensor? grid_tangent, Tensor input, Tensor grid, "
        "int interpolation, int padding, bool align_corners) -> Tensor");
}

TORCH_LIBRARY_IMPL(grid_encoder, CPU, m) {
  m.impl("grid_sample_forward", &grid_sample_forward);
  m.impl("grid_sample_backward", &grid_sample_backward);
  m.impl("grid_sample_double_backward", &grid_sample_double_backward);
  m.impl("grid_sample_tangent", &grid_sample_tangent);
}

#ifdef GRID_ENCODER_WITH_CUDA
TORCH_LIBRARY_IMPL(grid_encoder, CUDA, m) {
  m.impl("grid_sample_forward", &grid_sample_forward);
  m.impl("grid_sample_backward", &grid_sample_backward);
  m.impl("grid_sample_double_backward", &grid_sample_double_backward);
  m.impl("grid_sample_tangent", &grid_sample_tangent);
}
#endif

}  // namespace grid_encoder
