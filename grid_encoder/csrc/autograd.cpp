// Autograd for the forward and backward operators, in C++ so that a training step pays no Python per operator:
// forward -> backward -> double backward, each the derivative of the one before. The double backward's own
// derivative (third and higher orders) is attached in Python, as the vector-Jacobian product of its pure-PyTorch
// twin (grid_sample.py). torch.func and forward-mode AD take the Python Functions of transforms.py instead. The
// encoders' glue operators chain the same way: plane_coords <-> plane_coords_backward (linear, each the other's
// derivative), and plane_product -> its backward -> its double backward, whose own derivative is in encoders.py.
//
// Gradients nobody asked for are neither requested from the kernels nor computed: ctx->needs_input_grad asks the
// running backward pass which inputs it will use, so torch.autograd.grad(output, grid, create_graph=True), the
// first half of an eikonal step, skips the scatter into input even when input requires a gradient.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <array>
#include <initializer_list>
#include <optional>
#include <tuple>

#include "operators.h"

namespace grid_encoder {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

/// The settings every operator takes after its tensors: mode, padding, align_corners.
struct Settings {
  int64_t mode;
  int64_t padding;
  bool align_corners;

  void save(AutogradContext* ctx) const {
    ctx->saved_data["mode"] = mode;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["align_corners"] = align_corners;
  }
  static Settings load(AutogradContext* ctx) {
    return {ctx->saved_data["mode"].toInt(), ctx->saved_data["padding"].toInt(),
            ctx->saved_data["align_corners"].toBool()};
  }
};

/// The operator `name` (declared in operators.h with type Signature), called through the dispatcher: below autograd
/// from a Function's forward, and with autograd from a backward (so that create_graph=True records it).
template <typename Signature>
c10::TypedOperatorHandle<Signature> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

at::Tensor forward_op(const at::Tensor& input, const at::Tensor& grid, const Settings& s, bool point_major_output) {
  static const auto op = typed_op<decltype(grid_sample_forward)>("grid_encoder::grid_sample_forward");
  return op.call(input, grid, s.mode, s.padding, s.align_corners, point_major_output);
}

std::tuple<at::Tensor, at::Tensor> backward_op(const at::Tensor& grad_output, const at::Tensor& input,
                                               const at::Tensor& grid, const Settings& s, std::array<bool, 2> mask) {
  static const auto op = typed_op<decltype(grid_sample_backward)>("grid_encoder::grid_sample_backward");
  return op.call(grad_output, input, grid, s.mode, s.padding, s.align_corners, mask);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> double_backward_op(
    const std::optional<at::Tensor>& grad_grad_input, const std::optional<at::Tensor>& grad_grad_grid,
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& grid, const Settings& s,
    std::array<bool, 3> mask) {
  static const auto op =
      typed_op<decltype(grid_sample_double_backward)>("grid_encoder::grid_sample_double_backward");
  return op.call(grad_grad_input, grad_grad_grid, grad_output, input, grid, s.mode, s.padding, s.align_corners,
                 mask);
}

at::Tensor plane_coords_op(const at::Tensor& points, at::IntArrayRef columns) {
  static const auto op = typed_op<decltype(plane_coords)>("grid_encoder::plane_coords");
  return op.call(points, columns);
}

at::Tensor plane_coords_backward_op(const at::Tensor& grad, at::IntArrayRef columns, int64_t width) {
  static const auto op = typed_op<decltype(plane_coords_backward)>("grid_encoder::plane_coords_backward");
  return op.call(grad, columns, width);
}

at::Tensor plane_product_op(const at::Tensor& features) {
  static const auto op = typed_op<decltype(plane_product)>("grid_encoder::plane_product");
  return op.call(features);
}

at::Tensor plane_product_backward_op(const at::Tensor& grad, const at::Tensor& features) {
  static const auto op = typed_op<decltype(plane_product_backward)>("grid_encoder::plane_product_backward");
  return op.call(grad, features);
}

std::tuple<at::Tensor, at::Tensor> plane_product_double_backward_op(const at::Tensor& grad_grad,
                                                                    const at::Tensor& grad,
                                                                    const at::Tensor& features,
                                                                    std::array<bool, 2> mask) {
  static const auto op =
      typed_op<decltype(plane_product_double_backward)>("grid_encoder::plane_product_double_backward");
  return op.call(grad_grad, grad, features, mask);
}

/// In a backward pass without create_graph nothing records the next operator, so the call may skip its autograd
/// kernel (for the double backward, a Python one) and go straight to the CPU or CUDA kernel.
struct SkipAutogradUnlessRecording {
  std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd;
  SkipAutogradUnlessRecording() {
    if (!at::GradMode::is_enabled()) below_autograd.emplace();
  }
};

std::optional<at::Tensor> given(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

at::Tensor if_wanted(bool wanted, const at::Tensor& t) { return wanted ? t : at::Tensor(); }

class ForwardFunction : public torch::autograd::Function<ForwardFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& grid,
                            int64_t mode, int64_t padding, bool align_corners, bool point_major_output) {
    const Settings settings{mode, padding, align_corners};
    ctx->save_for_backward({input, grid});
    settings.save(ctx);
    ctx->set_materialize_grads(false);
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return forward_op(input, grid, settings, point_major_output);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor& grad_output = grads[0];
    const std::array<bool, 2> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1)};
    if (!grad_output.defined() || !(mask[0] || mask[1])) return variable_list(6);
    const variable_list saved = ctx->get_saved_variables();
    const SkipAutogradUnlessRecording skip;
    const auto [grad_input, grad_grid] = backward_op(grad_output, saved[0], saved[1], Settings::load(ctx), mask);
    return {if_wanted(mask[0], grad_input), if_wanted(mask[1], grad_grid), {}, {}, {}, {}};
  }
};

class BackwardFunction : public torch::autograd::Function<BackwardFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& input,
                               const at::Tensor& grid, int64_t mode, int64_t padding, bool align_corners,
                               std::array<bool, 2> output_mask) {
    const Settings settings{mode, padding, align_corners};
    ctx->save_for_backward({grad_output, input, grid});
    settings.save(ctx);
    ctx->saved_data["computed_grad_input"] = output_mask[0];
    ctx->saved_data["computed_grad_grid"] = output_mask[1];
    ctx->set_materialize_grads(false);
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    const auto [grad_input, grad_grid] = backward_op(grad_output, input, grid, settings, output_mask);
    return {grad_input, grad_grid};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // An output that was not computed is a placeholder: any gradient flowing into it carries nothing.
    const at::Tensor grad_grad_input = if_wanted(ctx->saved_data["computed_grad_input"].toBool(), grads[0]);
    const at::Tensor grad_grad_grid = if_wanted(ctx->saved_data["computed_grad_grid"].toBool(), grads[1]);
    const std::array<bool, 3> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2)};
    if ((!grad_grad_input.defined() && !grad_grad_grid.defined()) || !(mask[0] || mask[1] || mask[2])) {
      return variable_list(7);
    }
    const variable_list saved = ctx->get_saved_variables();
    const SkipAutogradUnlessRecording skip;
    const auto [d_grad_output, d_input, d_grid] = double_backward_op(
        given(grad_grad_input), given(grad_grad_grid), saved[0], saved[1], saved[2], Settings::load(ctx), mask);
    return {if_wanted(mask[0], d_grad_output), if_wanted(mask[1], d_input), if_wanted(mask[2], d_grid), {}, {}, {},
            {}};
  }
};

/// The encoders' plane coordinates and their gradient: linear maps, each the other's derivative, so every order
/// chains the two operators.
class PlaneCoordsFunction : public torch::autograd::Function<PlaneCoordsFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& points, at::IntArrayRef columns) {
    ctx->saved_data["columns"] = columns.vec();
    ctx->saved_data["width"] = points.size(-1);
    ctx->set_materialize_grads(false);
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return plane_coords_op(points, columns);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!grads[0].defined()) return variable_list(2);
    const SkipAutogradUnlessRecording skip;
    return {plane_coords_backward_op(grads[0], ctx->saved_data["columns"].toIntVector(),
                                     ctx->saved_data["width"].toInt()),
            {}};
  }
};

class PlaneCoordsBackwardFunction : public torch::autograd::Function<PlaneCoordsBackwardFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad, at::IntArrayRef columns, int64_t width) {
    ctx->saved_data["columns"] = columns.vec();
    ctx->set_materialize_grads(false);
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return plane_coords_backward_op(grad, columns, width);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!grads[0].defined()) return variable_list(3);
    const SkipAutogradUnlessRecording skip;
    return {plane_coords_op(grads[0], ctx->saved_data["columns"].toIntVector()), {}, {}};
  }
};

/// The planes' product, its backward and double backward, each the derivative of the one before, as for the
/// sampler; the double backward's own derivative is attached in Python (encoders.py).
class PlaneProductFunction : public torch::autograd::Function<PlaneProductFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& features) {
    ctx->save_for_backward({features});
    ctx->set_materialize_grads(false);
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return plane_product_op(features);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!grads[0].defined()) return variable_list(1);
    const SkipAutogradUnlessRecording skip;
    return {plane_product_backward_op(grads[0], ctx->get_saved_variables()[0])};
  }
};

class PlaneProductBackwardFunction : public torch::autograd::Function<PlaneProductBackwardFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& features) {
    ctx->save_for_backward({grad, features});
    ctx->set_materialize_grads(false);
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return plane_product_backward_op(grad, features);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const std::array<bool, 2> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1)};
    if (!grads[0].defined() || !(mask[0] || mask[1])) return variable_list(2);
    const variable_list saved = ctx->get_saved_variables();
    const SkipAutogradUnlessRecording skip;
    const auto [d_grad, d_features] = plane_product_double_backward_op(grads[0], saved[0], saved[1], mask);
    return {if_wanted(mask[0], d_grad), if_wanted(mask[1], d_features)};
  }
};

/// Forward-mode AD and torch.func run through grid_encoder.grid_sample(), which routes them to the Python
/// autograd Functions (transforms.py). The C++ Functions here have no forward-mode formula: rather than drop a
/// tangent, an operator called directly on dual tensors refuses them.
void refuse_dual_tensors(const char* op, std::initializer_list<std::optional<at::Tensor>> tensors,
                         const char* served_by = "grid_encoder.grid_sample()") {
  for (const auto& t : tensors) {
    TORCH_CHECK(!t.has_value() || !t->defined() || !t->_fw_grad(/*level=*/0).defined(), op,
                ": forward-mode AD of this operator is served by ", served_by, "; call that instead of the "
                "operator on dual tensors");
  }
}

at::Tensor grid_sample_forward_autograd(const at::Tensor& input, const at::Tensor& grid, int64_t mode,
                                        int64_t padding, bool align_corners, bool point_major_output) {
  refuse_dual_tensors("grid_encoder.grid_sample_forward", {input, grid});
  if (!at::GradMode::is_enabled() || !(input.requires_grad() || grid.requires_grad())) {  // nothing to record
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return forward_op(input, grid, Settings{mode, padding, align_corners}, point_major_output);
  }
  return ForwardFunction::apply(input, grid, mode, padding, align_corners, point_major_output);
}

std::tuple<at::Tensor, at::Tensor> grid_sample_backward_autograd(const at::Tensor& grad_output,
                                                                 const at::Tensor& input, const at::Tensor& grid,
                                                                 int64_t mode, int64_t padding,
                                                                 bool align_corners, std::array<bool, 2> output_mask) {
  refuse_dual_tensors("grid_encoder.grid_sample_backward", {grad_output, input, grid});
  if (!at::GradMode::is_enabled()) {  // nothing to record
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return backward_op(grad_output, input, grid, Settings{mode, padding, align_corners}, output_mask);
  }
  const variable_list grads =
      BackwardFunction::apply(grad_output, input, grid, mode, padding, align_corners, output_mask);
  return {grads[0], grads[1]};
}

/// The tangent operator has no derivative formula of its own: grid_sample's forward-mode path
/// (transforms.py) differentiates it through the other operators. Called directly, it refuses to be recorded
/// rather than return a result without a gradient.
at::Tensor grid_sample_tangent_autograd(const std::optional<at::Tensor>& input_tangent,
                                        const std::optional<at::Tensor>& grid_tangent, const at::Tensor& input,
                                        const at::Tensor& grid, int64_t mode, int64_t padding,
                                        bool align_corners) {
  constexpr const char* name = "grid_encoder.grid_sample_tangent";
  refuse_dual_tensors(name, {input_tangent, grid_tangent, input, grid});
  bool records = false;
  for (const std::optional<at::Tensor>& t : {input_tangent, grid_tangent, std::optional<at::Tensor>(input),
                                            std::optional<at::Tensor>(grid)}) {
    records = records || (t.has_value() && t->defined() && t->requires_grad());
  }
  TORCH_CHECK(!(records && at::GradMode::is_enabled()), name, ": this operator is not differentiable by itself; "
              "differentiate grid_encoder.grid_sample() under forward-mode AD instead");
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  static const auto op = typed_op<decltype(grid_sample_tangent)>("grid_encoder::grid_sample_tangent");
  return op.call(input_tangent, grid_tangent, input, grid, mode, padding, align_corners);
}

/// grid_sample_reduced serves sample_planes() and sample_volumes() where nothing records (their sums and products
/// over grids without autograd); it has no derivative of its own, and refuses to be recorded.
at::Tensor grid_sample_reduced_autograd(const at::Tensor& input, const at::Tensor& grid, int64_t mode,
                                        int64_t padding, bool align_corners, int64_t group, bool product) {
  constexpr const char* name = "grid_encoder.grid_sample_reduced";
  refuse_dual_tensors(name, {input, grid}, "grid_encoder.sample_planes()");
  TORCH_CHECK(!(at::GradMode::is_enabled() && (input.requires_grad() || grid.requires_grad())), name,
              ": this operator is not differentiable; grid_encoder.sample_planes() and sample_volumes() differentiate "
              "the same reductions");
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  static const auto op = typed_op<decltype(grid_sample_reduced)>("grid_encoder::grid_sample_reduced");
  return op.call(input, grid, mode, padding, align_corners, group, product);
}

at::Tensor plane_coords_autograd(const at::Tensor& points, at::IntArrayRef columns) {
  refuse_dual_tensors("grid_encoder.plane_coords", {points}, "grid_encoder.sample_planes()");
  if (!at::GradMode::is_enabled() || !points.requires_grad()) {  // nothing to record
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return plane_coords_op(points, columns);
  }
  return PlaneCoordsFunction::apply(points, columns);
}

at::Tensor plane_coords_backward_autograd(const at::Tensor& grad, at::IntArrayRef columns, int64_t width) {
  refuse_dual_tensors("grid_encoder.plane_coords_backward", {grad}, "grid_encoder.sample_planes()");
  if (!at::GradMode::is_enabled() || !grad.requires_grad()) {  // nothing to record
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return plane_coords_backward_op(grad, columns, width);
  }
  return PlaneCoordsBackwardFunction::apply(grad, columns, width);
}

at::Tensor plane_product_autograd(const at::Tensor& features) {
  refuse_dual_tensors("grid_encoder.plane_product", {features}, "grid_encoder.sample_planes()");
  if (!at::GradMode::is_enabled() || !features.requires_grad()) {  // nothing to record
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return plane_product_op(features);
  }
  return PlaneProductFunction::apply(features);
}

at::Tensor plane_product_backward_autograd(const at::Tensor& grad, const at::Tensor& features) {
  refuse_dual_tensors("grid_encoder.plane_product_backward", {grad, features}, "grid_encoder.sample_planes()");
  if (!at::GradMode::is_enabled() || !(grad.requires_grad() || features.requires_grad())) {  // nothing to record
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return plane_product_backward_op(grad, features);
  }
  return PlaneProductBackwardFunction::apply(grad, features);
}

}  // namespace

TORCH_LIBRARY_IMPL(grid_encoder, Autograd, m) {
  m.impl("grid_sample_forward", &grid_sample_forward_autograd);
  m.impl("grid_sample_reduced", &grid_sample_reduced_autograd);
  m.impl("grid_sample_backward", &grid_sample_backward_autograd);
  m.impl("grid_sample_tangent", &grid_sample_tangent_autograd);
  m.impl("plane_coords", &plane_coords_autograd);
  m.impl("plane_coords_backward", &plane_coords_backward_autograd);
  m.impl("plane_product", &plane_product_autograd);
  m.impl("plane_product_backward", &plane_product_backward_autograd);
}

}  // namespace grid_encoder
