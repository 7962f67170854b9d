// The grid_encoder operators (declared in operators.h): argument checks, output allocation, and the phases
// (problem.h) each runs, by name; for the encoders' glue operators, loops over the element functions of encoders.h.
// Their autograd is in autograd.cpp, grid_sample.py, encoders.py and transforms.py.
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#ifdef GRID_ENCODER_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#include <algorithm>
#include <array>
#include <initializer_list>
#include <optional>
#include <string_view>
#include <tuple>
#include <vector>

#include "encoders.h"
#include "operators.h"
#include "problem.h"

namespace grid_encoder {
namespace {

/// Refuses CUDA tensors in a build without CUDA kernels.
void check_cuda_built(const char* op, const at::Tensor& t) {
#ifndef GRID_ENCODER_WITH_CUDA
  TORCH_CHECK(!t.is_cuda(), op, ": this build of grid_encoder has no CUDA kernels (it was compiled without a "
              "visible GPU); delete its build folder or set GRID_ENCODER_BUILD_CUDA=1 to rebuild with CUDA");
#endif
}

// Python validates first and raises friendlier errors; these checks keep the C++ entry points safe
// on their own (the Python checks vanish under python -O, and the ops can be called directly).
void check_sampler(const char* op, const at::Tensor& input, const at::Tensor& grid, int64_t mode, int64_t padding) {
  TORCH_CHECK(mode >= 0 && mode <= 2, op,
              ": mode must be 0 (bilinear), 1 (nearest) or 2 (bicubic), got ", mode);
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
  check_cuda_built(op, input);
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

/// The strides of a point-major output of the given shape [N, C, spatial...]: laid out as [spatial..., N, C], so that
/// each point's channels, and then its N batch items, lie side by side.
std::vector<int64_t> point_major_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size());
  strides[1] = 1;
  strides[0] = std::max<int64_t>(shape[1], 1);
  int64_t stride = strides[0] * std::max<int64_t>(shape[0], 1);
  for (size_t d = shape.size() - 1; d >= 2; --d) {
    strides[d] = stride;
    stride *= std::max<int64_t>(shape[d], 1);
  }
  return strides;
}

/// An input-shaped tensor in the layout the kernels read it in, for a call that reads `taps` (sample, tap) pairs of
/// it. With several channels that is channels-last: each tap of a point is then a contiguous run of channels (see
/// kChannelBlock in point_work.h), where channels-first data puts every channel in another plane. On CUDA always.
/// On the CPU where the copy pays for itself (two cores, performance log version 43): 8 channels or more, taps at
/// least twice as many as the input's positions, and 8 to 64 MiB of input; the loop over a run of points' channels then
/// finds each tap's next channel in a cache line it has just read (a 3 x 32 x 256² input read by 196 608 points:
/// forward 29.7 -> 7.9 ms, the copy included). Smaller inputs stay in the caches either way; beyond 64 MiB the
/// copy's fresh pages cost more than it saves.
at::Tensor working_copy(const at::Tensor& t, int64_t taps) {
  const auto format = t.dim() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::ChannelsLast3d;
#ifdef GRID_ENCODER_WITH_CUDA
  if (t.is_cuda() && t.size(1) >= 4) return channels_last_copy_cuda(t, format);
#endif
  constexpr int64_t kMiB = int64_t(1) << 20;
  const int64_t positions = t.numel() / std::max<int64_t>(t.size(1), 1);
  const bool copy_pays = t.is_cpu() && t.size(1) >= 8 && taps >= 2 * positions && t.nbytes() >= 8 * kMiB &&
                         t.nbytes() <= 64 * kMiB;
  return copy_pays ? t.contiguous(format) : t;
}

/// The call's problem. `reads_input`: whether the kernels will read input (else it only gives shapes).
Problem make_problem(const at::Tensor& input, const at::Tensor& grid, int64_t mode, int64_t padding,
                     bool align_corners, bool reads_input) {
  Problem pb;
  pb.mode = static_cast<Mode>(mode);
  pb.padding = static_cast<Padding>(padding);
  pb.align_corners = align_corners;
  pb.grid = grid.contiguous();
  pb.input = input;
  if (reads_input) pb.input = working_copy(input, pb.tap_count());
  return pb;
}

/// Runs ScatterIntoInput into a new input-shaped tensor and returns it (grad_input for Coefficients::Weights,
/// d_input for Coefficients::AlongGradGradGrid). The scatter reads the grid, grad_output and grad_grad_grid of
/// `pb`, not its working copies: `pb` is cleared first, so that they are freed before the target and the
/// scatter's buffers are allocated.
at::Tensor scatter_into_new_tensor(Problem& pb, const at::Tensor& input, Coefficients coefficients) {
  Problem scatter;
  scatter.mode = pb.mode;
  scatter.padding = pb.padding;
  scatter.align_corners = pb.align_corners;
  scatter.input = input;  // shapes only
  scatter.grid = pb.grid;
  scatter.grad_output = pb.grad_output;
  if (coefficients == Coefficients::AlongGradGradGrid) scatter.grad_grad_grid = pb.grad_grad_grid;
  pb = Problem();
#ifdef GRID_ENCODER_WITH_CUDA
  // The binned scatter reads each sample's grad_output channels as one row: in place where they are contiguous (the
  // gradient of a permuted output, as the encoders' is), else from a point-major copy (channels-last over points).
  const at::Tensor& go = scatter.grad_output;
  if (input.is_cuda() && go.size(1) > 1 && (*point_strides(go, scatter.points()))[1] != 1 &&
      scatters_binned(scatter, at::globalContext().deterministicAlgorithms())) {
    scatter.grad_output = channels_last_copy_cuda(go.reshape({go.size(0), go.size(1), scatter.points(), 1}),
                                                  at::MemoryFormat::ChannelsLast);
  }
#endif
  // Every launcher writes each element or zeroes the target itself.
  at::Tensor target = at::empty_like(input);
  (coefficients == Coefficients::Weights ? scatter.grad_input : scatter.d_input) = target;
  launch<ScatterIntoInput>(scatter, coefficients);
  return target;
}

/// grad_output itself where its points (the output's spatial dimensions) flatten into one stride, as a gradient
/// arriving point-major from a permuted output's consumer does; else a contiguous copy.
at::Tensor as_points(const at::Tensor& grad_output, int64_t points) {
  return point_strides(grad_output, points).has_value() ? grad_output : grad_output.contiguous();
}

/// The placeholder returned for an output that was not requested.
at::Tensor not_requested(const at::Tensor& like) { return at::empty({0}, like.options()); }

bool is_nearest(int64_t mode) { return mode == static_cast<int64_t>(Mode::Nearest); }

/// Checks an encoder operator's tensor's dtype and device (the grids' own: any floating dtype, CPU or CUDA).
void check_encoder_tensor(const char* op, const char* what, const at::Tensor& t) {
  const auto dtype = t.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": expected ", what, " of dtype float32, float64, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(t.is_cpu() || t.is_cuda(), op, ": expected ", what, " on the CPU or CUDA, got ", t.device());
  check_cuda_built(op, t);
}

/// The planes' columns, each checked to index one of `width` columns of points.
PlaneColumns plane_columns(const char* op, at::IntArrayRef columns, int64_t width) {
  TORCH_CHECK(!columns.empty() && columns.size() % 2 == 0 && columns.size() <= 2 * kMaxCoordPlanes, op,
              ": expected a pair of column indices per plane, for 1 to ", kMaxCoordPlanes, " planes, got ",
              columns.size(), " indices");
  PlaneColumns picks{};
  picks.planes = static_cast<int32_t>(columns.size() / 2);
  for (size_t i = 0; i < columns.size(); ++i) {
    TORCH_CHECK(columns[i] >= 0 && columns[i] < width, op, ": expected column indices in [0, ", width,
                ") for points of ", width, " columns, got ", columns);
    picks.column[i] = static_cast<int32_t>(columns[i]);
  }
  return picks;
}

/// Calls body(item) for every item in [0, items), in parallel on the CPU, about 2^14 elements (items times their
/// elements_per_item) per task.
template <typename Body>
void cpu_for_each_item(int64_t items, int64_t elements_per_item, const Body& body) {
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(1, elements_per_item));
  at::parallel_for(0, items, grain, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) body(item);
  });
}

#ifdef GRID_ENCODER_WITH_CUDA
cudaStream_t cuda_stream(const at::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.get_device()).stream(); }
#endif

/// t ([N, K, P, C], or [N, P, C]) as a FeatureView; empty if t is undefined.
template <typename T>
FeatureView<T> feature_view(const at::Tensor& t) {
  FeatureView<T> view;
  if (!t.defined()) return view;
  view.data = static_cast<T*>(t.data_ptr());
  view.stride_n = t.stride(0);
  view.stride_k = t.dim() == 4 ? t.stride(1) : 0;
  view.stride_p = t.stride(-2);
  view.stride_c = t.stride(-1);
  return view;
}

/// Checks the planes' features [N, K, P, C] of a product operator: 1 to kMaxProductPlanes planes.
void check_features(const char* op, const at::Tensor& features) {
  TORCH_CHECK(features.dim() == 4 && features.size(1) >= 1 && features.size(1) <= kMaxProductPlanes, op,
              ": expected features of shape (N, K, P, C) with 1 to ", kMaxProductPlanes, " planes K, got ",
              features.sizes());
  check_encoder_tensor(op, "features", features);
}

/// Checks that t (named `what`) has the shape [N, P, C] of one plane's features, and their dtype and device.
void check_plane_shaped(const char* op, const char* what, const at::Tensor& t, const at::Tensor& features) {
  const std::array<int64_t, 3> shape{features.size(0), features.size(2), features.size(3)};
  check_like(op, what, t, shape, features);
}

/// Runs the product's `step` over the elements of [N, P, C] (on the CPU, a row of channels at a time).
template <typename scalar_t>
void run_product(const at::Tensor& features, const ProductArgs<scalar_t>& args, ProductStep step) {
#ifdef GRID_ENCODER_WITH_CUDA
  if (features.is_cuda()) return launch_product(args, step, cuda_stream(features));
#endif
  cpu_for_each_item(args.batch * args.points, args.channels * args.planes, [&](int64_t row) {
    const int64_t n = row / args.points, p = row % args.points;
    for (int64_t c = 0; c < args.channels; c += kProductChannels) {
      const int count = static_cast<int>(std::min<int64_t>(kProductChannels, args.channels - c));
      product_step_element(args, step, FeatureElement{n, p, c, count});
    }
  });
}

/// Whether every tensor of a product call ([N, K, P, C] or [N, P, C]; undefined: absent) loads and stores its channel
/// blocks as words (ProductArgs::channel_words).
bool product_channel_words(std::initializer_list<at::Tensor> tensors) {
  return std::all_of(tensors.begin(), tensors.end(), [](const at::Tensor& t) {
    return !t.defined() || channel_blocks_are_words(t, t.stride(-1), t.strides().slice(0, t.dim() - 1));
  });
}

/// The product's arguments for features [N, K, P, C], with the tensors each step reads and writes.
template <typename scalar_t>
ProductArgs<scalar_t> product_args(const at::Tensor& features) {
  ProductArgs<scalar_t> args;
  args.features = feature_view<const scalar_t>(features);
  args.batch = features.size(0);
  args.planes = static_cast<int>(features.size(1));
  args.points = features.size(2);
  args.channels = features.size(3);
  return args;
}

}  // namespace

at::Tensor grid_sample_forward(const at::Tensor& input, const at::Tensor& grid, int64_t mode, int64_t padding,
                               bool align_corners, bool point_major_output) {
  constexpr const char* op = "grid_encoder.grid_sample_forward";
  check_sampler(op, input, grid, mode, padding);
  const c10::DeviceGuard guard(input.device());
  Problem pb = make_problem(input, grid, mode, padding, align_corners, /*reads_input=*/true);
  const std::vector<int64_t> shape = output_shape(input, grid);
  pb.output = point_major_output ? at::empty_strided(shape, point_major_strides(shape), input.options())
                                 : at::empty(shape, input.options());
  launch<SampleOutput>(pb);
  return pb.output;
}

at::Tensor grid_sample_reduced(const at::Tensor& input, const at::Tensor& grid, int64_t mode, int64_t padding,
                               bool align_corners, int64_t group, bool product) {
  constexpr const char* op = "grid_encoder.grid_sample_reduced";
  check_sampler(op, input, grid, mode, padding);
  TORCH_CHECK(group >= 1 && input.size(0) % group == 0, op, ": expected a group size that divides the batch size ",
              input.size(0), ", got ", group);
  const c10::DeviceGuard guard(input.device());
  std::vector<int64_t> shape = output_shape(input, grid);
  shape[0] /= group;
  at::Tensor output = at::empty_strided(shape, point_major_strides(shape), input.options());
  if (input.is_cuda()) {  // one pass: the kernels reduce each group in registers
    Problem pb = make_problem(input, grid, mode, padding, align_corners, /*reads_input=*/true);
    pb.output = output;
    pb.group = group;
    pb.product = product;
    launch<SampleOutput>(pb);
    return output;
  }
  // CPU: the items' outputs, then the chain of operations over each group
  const at::Tensor items = grid_sample_forward(input, grid, mode, padding, align_corners, /*point_major_output=*/true);
  const at::Tensor by_group = items.unflatten(0, {shape[0], group});
  output.copy_(by_group.select(1, 0));
  for (int64_t k = 1; k < group; ++k) product ? output.mul_(by_group.select(1, k)) : output.add_(by_group.select(1, k));
  return output;
}

std::tuple<at::Tensor, at::Tensor> grid_sample_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                                        const at::Tensor& grid, int64_t mode, int64_t padding,
                                                        bool align_corners, std::array<bool, 2> output_mask) {
  constexpr const char* op = "grid_encoder.grid_sample_backward";
  check_sampler(op, input, grid, mode, padding);
  check_like(op, "grad_output", grad_output, output_shape(input, grid), input);
  const c10::DeviceGuard guard(input.device());
  const bool computes_grad_grid = output_mask[1] && !is_nearest(mode);  // nearest is piecewise constant
  Problem pb = make_problem(input, grid, mode, padding, align_corners, /*reads_input=*/computes_grad_grid);
  pb.grad_output = as_points(grad_output, pb.points());
  at::Tensor grad_grid = not_requested(grid);
  if (computes_grad_grid) {
    grad_grid = pb.grad_grid = at::empty_like(pb.grid);
    launch<GradGrid>(pb);
  } else if (output_mask[1]) {
    grad_grid = at::zeros_like(pb.grid);
  }
  const at::Tensor grad_input =
      output_mask[0] ? scatter_into_new_tensor(pb, input, Coefficients::Weights) : not_requested(input);
  return {grad_input, grad_grid};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> grid_sample_double_backward(
    const std::optional<at::Tensor>& grad_grad_input, const std::optional<at::Tensor>& grad_grad_grid,
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& grid, int64_t mode, int64_t padding,
    bool align_corners, std::array<bool, 3> output_mask) {
  constexpr const char* op = "grid_encoder.grid_sample_double_backward";
  check_sampler(op, input, grid, mode, padding);
  check_like(op, "grad_output", grad_output, output_shape(input, grid), input);
  const bool has_ggi = grad_grad_input.has_value() && grad_grad_input->defined();
  const bool has_ggg = grad_grad_grid.has_value() && grad_grad_grid->defined();
  if (has_ggi) check_like(op, "grad_grad_input", *grad_grad_input, input.sizes(), input);
  if (has_ggg) check_like(op, "grad_grad_grid", *grad_grad_grid, grid.sizes(), input);
  const c10::DeviceGuard guard(input.device());

  // Which terms can be non-zero (see double_backward_point): nearest has no grid derivatives at all.
  const bool grid_terms = !is_nearest(mode) && has_ggg;
  const bool computes_d_grad_output = output_mask[0] && (has_ggi || grid_terms);
  const bool computes_d_grid = output_mask[2] && !is_nearest(mode) && (has_ggi || has_ggg);
  const bool computes_d_input = output_mask[1] && grid_terms;
  // Only the grid terms of d_grad_output and d_grid read the input.
  const bool reads_input = grid_terms && (computes_d_grad_output || computes_d_grid);

  Problem pb = make_problem(input, grid, mode, padding, align_corners, reads_input);
  pb.grad_output = as_points(grad_output, pb.points());
  if (has_ggi) pb.grad_grad_input = working_copy(*grad_grad_input, pb.tap_count());
  if (has_ggg) pb.grad_grad_grid = grad_grad_grid->contiguous();

  at::Tensor d_grad_output = not_requested(input), d_input = not_requested(input), d_grid = not_requested(grid);
  // d_grad_output in grad_output's layout: a point-major gradient (the encoders') gets a point-major one back
  if (computes_d_grad_output) pb.d_grad_output = d_grad_output = at::empty_like(pb.grad_output);
  else if (output_mask[0]) d_grad_output = at::zeros(grad_output.sizes(), input.options());
  if (computes_d_grid) pb.d_grid = d_grid = at::empty_like(pb.grid);
  else if (output_mask[2]) d_grid = at::zeros_like(pb.grid);
  if (computes_d_grid && !computes_d_grad_output && !has_ggi) {
    launch<GradGrid>(pb);  // d_grid alone from grad_grad_grid alone (the eikonal step): GradGrid's lighter kernel
  } else if (computes_d_grad_output || computes_d_grid) {
    launch<DoubleBackwardPoints>(pb);
  }

  if (computes_d_input) {
    d_input = scatter_into_new_tensor(pb, input, Coefficients::AlongGradGradGrid);
  } else if (output_mask[1]) {
    d_input = at::zeros_like(input);
  }
  return {d_grad_output, d_input, d_grid};
}

at::Tensor grid_sample_tangent(const std::optional<at::Tensor>& input_tangent,
                               const std::optional<at::Tensor>& grid_tangent, const at::Tensor& input,
                               const at::Tensor& grid, int64_t mode, int64_t padding, bool align_corners) {
  constexpr const char* op = "grid_encoder.grid_sample_tangent";
  check_sampler(op, input, grid, mode, padding);
  const bool has_input_tangent = input_tangent.has_value() && input_tangent->defined();
  const bool has_grid_tangent = grid_tangent.has_value() && grid_tangent->defined();
  if (has_input_tangent) check_like(op, "input_tangent", *input_tangent, input.sizes(), input);
  if (has_grid_tangent) check_like(op, "grid_tangent", *grid_tangent, grid.sizes(), input);
  const c10::DeviceGuard guard(input.device());
  // The output's tangent is the double backward's d_grad_output with grad_grad_input = input_tangent and
  // grad_grad_grid = grid_tangent: sum_k W_k tI_k + sum_k (sum_e dW_k/dg_e tG_e) V_k.
  const bool grid_terms = has_grid_tangent && !is_nearest(mode);
  if (!has_input_tangent && !grid_terms) return at::zeros(output_shape(input, grid), input.options());
  Problem pb = make_problem(input, grid, mode, padding, align_corners, /*reads_input=*/grid_terms);
  if (has_input_tangent) pb.grad_grad_input = working_copy(*input_tangent, pb.tap_count());
  if (grid_terms) pb.grad_grad_grid = grid_tangent->contiguous();
  pb.d_grad_output = at::empty(output_shape(input, grid), input.options());
  launch<DoubleBackwardPoints>(pb);
  return pb.d_grad_output;
}

at::Tensor plane_coords(const at::Tensor& points, at::IntArrayRef columns) {
  constexpr const char* op = "grid_encoder.plane_coords";
  TORCH_CHECK(points.dim() == 2 || points.dim() == 3, op, ": expected points of shape (P, D) or (N, P, D), got ",
              points.sizes());
  check_encoder_tensor(op, "points", points);
  const PlaneColumns picks = plane_columns(op, columns, points.size(-1));
  const c10::DeviceGuard guard(points.device());
  const bool batched = points.dim() == 3;
  const int64_t count = points.size(-2);
  std::vector<int64_t> shape{picks.planes, count, 2};
  if (batched) shape.insert(shape.begin(), points.size(0));
  at::Tensor coords = at::empty(shape, points.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, points.scalar_type(), "plane_coords", [&] {
    const PickArgs<scalar_t> args{points.const_data_ptr<scalar_t>(), batched ? points.stride(0) : 0,
                                  points.stride(-2), points.stride(-1), coords.data_ptr<scalar_t>(), count, picks};
    const int64_t items = coords.numel() / 2;
#ifdef GRID_ENCODER_WITH_CUDA
    if (points.is_cuda()) return launch_pick_plane_coords(args, items, cuda_stream(points));
#endif
    cpu_for_each_item(items, 1, [&](int64_t item) { pick_plane_coords(args, item); });
  });
  return coords;
}

at::Tensor plane_coords_backward(const at::Tensor& grad, at::IntArrayRef columns, int64_t width) {
  constexpr const char* op = "grid_encoder.plane_coords_backward";
  TORCH_CHECK((grad.dim() == 3 || grad.dim() == 4) && grad.size(-1) == 2, op,
              ": expected grad of shape (K, P, 2) or (N, K, P, 2), got ", grad.sizes());
  check_encoder_tensor(op, "grad", grad);
  const PlaneColumns picks = plane_columns(op, columns, width);
  TORCH_CHECK(grad.size(-3) == picks.planes, op, ": expected grad for ", picks.planes, " planes, got shape ",
              grad.sizes());
  const c10::DeviceGuard guard(grad.device());
  const bool batched = grad.dim() == 4;
  const int64_t count = grad.size(-2);
  std::vector<int64_t> shape{count, width};
  if (batched) shape.insert(shape.begin(), grad.size(0));
  at::Tensor sums = at::empty(shape, grad.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "plane_coords_backward", [&] {
    const ColumnSumArgs<scalar_t> args{grad.const_data_ptr<scalar_t>(), batched ? grad.stride(0) : 0,
                                       grad.stride(-3), grad.stride(-2), grad.stride(-1), sums.data_ptr<scalar_t>(),
                                       count, width, picks};
    const int64_t samples = sums.numel() / std::max<int64_t>(width, 1);
#ifdef GRID_ENCODER_WITH_CUDA
    if (grad.is_cuda()) return launch_sum_plane_columns(args, samples, cuda_stream(grad));
#endif
    cpu_for_each_item(samples, width, [&](int64_t sample) { sum_plane_columns(args, sample); });
  });
  return sums;
}

at::Tensor plane_product(const at::Tensor& features) {
  constexpr const char* op = "grid_encoder.plane_product";
  check_features(op, features);
  const c10::DeviceGuard guard(features.device());
  at::Tensor product = at::empty({features.size(0), features.size(2), features.size(3)}, features.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "plane_product", [&] {
    auto args = product_args<scalar_t>(features);
    args.product = feature_view<scalar_t>(product);
    args.channel_words = product_channel_words({features, product});
    run_product(features, args, ProductStep::Forward);
  });
  return product;
}

at::Tensor plane_product_backward(const at::Tensor& grad, const at::Tensor& features) {
  constexpr const char* op = "grid_encoder.plane_product_backward";
  check_features(op, features);
  check_plane_shaped(op, "grad", grad, features);
  const c10::DeviceGuard guard(features.device());
  at::Tensor d_features = at::empty(features.sizes(), features.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "plane_product_backward", [&] {
    auto args = product_args<scalar_t>(features);
    args.grad = feature_view<const scalar_t>(grad);
    args.d_features = feature_view<scalar_t>(d_features);
    args.channel_words = product_channel_words({features, grad, d_features});
    run_product(features, args, ProductStep::Backward);
  });
  return d_features;
}

std::tuple<at::Tensor, at::Tensor> plane_product_double_backward(const at::Tensor& grad_grad, const at::Tensor& grad,
                                                                 const at::Tensor& features,
                                                                 std::array<bool, 2> output_mask) {
  constexpr const char* op = "grid_encoder.plane_product_double_backward";
  check_features(op, features);
  check_plane_shaped(op, "grad", grad, features);
  check_like(op, "grad_grad", grad_grad, features.sizes(), features);
  const c10::DeviceGuard guard(features.device());
  at::Tensor d_grad = output_mask[0] ? at::empty(grad.sizes(), grad.options()) : not_requested(grad);
  at::Tensor d_features = output_mask[1] ? at::empty(features.sizes(), features.options()) : not_requested(grad);
  if (!output_mask[0] && !output_mask[1]) return {d_grad, d_features};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "plane_product_double_backward",
                                  [&] {
    auto args = product_args<scalar_t>(features);
    args.grad = feature_view<const scalar_t>(grad);
    args.grad_grad = feature_view<const scalar_t>(grad_grad);
    if (output_mask[0]) args.d_grad = feature_view<scalar_t>(d_grad);
    if (output_mask[1]) args.d_features = feature_view<scalar_t>(d_features);
    args.channel_words = product_channel_words({features, grad, grad_grad, output_mask[0] ? d_grad : at::Tensor(),
                                                output_mask[1] ? d_features : at::Tensor()});
    run_product(features, args, ProductStep::DoubleBackward);
  });
  return {d_grad, d_features};
}

TORCH_LIBRARY(grid_encoder, m) {
  m.def("grid_sample_forward(Tensor input, Tensor grid, int mode, int padding, bool align_corners, "
        "bool point_major_output=False) -> Tensor");
  m.def("grid_sample_reduced(Tensor input, Tensor grid, int mode, int padding, bool align_corners, int group, "
        "bool product) -> Tensor");
  m.def("grid_sample_backward(Tensor grad_output, Tensor input, Tensor grid, int mode, int padding, "
        "bool align_corners, bool[2] output_mask) -> (Tensor, Tensor)");
  m.def("grid_sample_double_backward(Tensor? grad_grad_input, Tensor? grad_grad_grid, Tensor grad_output, "
        "Tensor input, Tensor grid, int mode, int padding, bool align_corners, bool[3] output_mask) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("grid_sample_tangent(Tensor? input_tangent, Tensor? grid_tangent, Tensor input, Tensor grid, int mode, "
        "int padding, bool align_corners) -> Tensor");
  m.def("plane_coords(Tensor points, int[] columns) -> Tensor");
  m.def("plane_coords_backward(Tensor grad, int[] columns, int width) -> Tensor");
  m.def("plane_product(Tensor features) -> Tensor");
  m.def("plane_product_backward(Tensor grad, Tensor features) -> Tensor");
  m.def("plane_product_double_backward(Tensor grad_grad, Tensor grad, Tensor features, bool[2] output_mask) "
        "-> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(grid_encoder, CPU, m) {
  m.impl("grid_sample_forward", &grid_sample_forward);
  m.impl("grid_sample_reduced", &grid_sample_reduced);
  m.impl("grid_sample_backward", &grid_sample_backward);
  m.impl("grid_sample_double_backward", &grid_sample_double_backward);
  m.impl("grid_sample_tangent", &grid_sample_tangent);
  m.impl("plane_coords", &plane_coords);
  m.impl("plane_coords_backward", &plane_coords_backward);
  m.impl("plane_product", &plane_product);
  m.impl("plane_product_backward", &plane_product_backward);
  m.impl("plane_product_double_backward", &plane_product_double_backward);
}

#ifdef GRID_ENCODER_WITH_CUDA
TORCH_LIBRARY_IMPL(grid_encoder, CUDA, m) {
  m.impl("grid_sample_forward", &grid_sample_forward);
  m.impl("grid_sample_reduced", &grid_sample_reduced);
  m.impl("grid_sample_backward", &grid_sample_backward);
  m.impl("grid_sample_double_backward", &grid_sample_double_backward);
  m.impl("grid_sample_tangent", &grid_sample_tangent);
  m.impl("plane_coords", &plane_coords);
  m.impl("plane_coords_backward", &plane_coords_backward);
  m.impl("plane_product", &plane_product);
  m.impl("plane_product_backward", &plane_product_backward);
  m.impl("plane_product_double_backward", &plane_product_double_backward);
}
#endif

const Phases* cpu_double_phases = nullptr;
const Phases* cuda_reduced_phases = nullptr;

}  // namespace grid_encoder

/// Hands the phases of a library built on first use to the launchers: `kind` "cpu64" (the CPU kernels for double) or
/// "cuda16" (the CUDA kernels for float16 and bfloat16), `phases` what that library's grid_encoder_phases() returned.
/// _build.py loads the library and calls this through ctypes; returns whether `kind` is known.
extern "C" C10_EXPORT bool grid_encoder_set_phases(const char* kind, const void* phases) {
  const std::string_view name(kind);
  const grid_encoder::Phases** slot = name == "cpu64"    ? &grid_encoder::cpu_double_phases
                                      : name == "cuda16" ? &grid_encoder::cuda_reduced_phases
                                                         : nullptr;
  if (slot != nullptr) *slot = static_cast<const grid_encoder::Phases*>(phases);
  return slot != nullptr;
}
