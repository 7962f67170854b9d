// The grid_encoder operators, declared once: operators.cpp defines them and registers them with TORCH_LIBRARY
// (whose schema strings must match these signatures), and autograd.cpp calls them through the dispatcher with
// these types. `mode`: 0 bilinear, 1 nearest, 2 bicubic; `padding`: 0 zeros, 1 border, 2 reflection (as torch).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <optional>
#include <tuple>

namespace grid_encoder {

/// output = F(input, grid): [N, C, (Do,) Ho, Wo], contiguous, or where point_major_output asks for it laid out as
/// [(Do,) Ho, Wo, N, C] (each output point's channels, then its batch items, side by side: the encoders' point-major
/// features).
at::Tensor grid_sample_forward(const at::Tensor& input, const at::Tensor& grid, int64_t mode, int64_t padding,
                               bool align_corners, bool point_major_output);

/// grid_sample_forward's point-major output with each group of `group` consecutive batch items reduced, in item order:
/// their product, or their sum (the encoders' product and sum over planes without autograd): [N / group, C, (Do,) Ho,
/// Wo], laid out as [(Do,) Ho, Wo, N / group, C]. On CUDA in one pass, without the items' outputs.
at::Tensor grid_sample_reduced(const at::Tensor& input, const at::Tensor& grid, int64_t mode, int64_t padding,
                               bool align_corners, int64_t group, bool product);

/// (grad_input, grad_grid), each only where output_mask asks for it (else an empty placeholder).
std::tuple<at::Tensor, at::Tensor> grid_sample_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                                        const at::Tensor& grid, int64_t mode, int64_t padding,
                                                        bool align_corners, std::array<bool, 2> output_mask);

/// (d_grad_output, d_input, d_grid): the vector-Jacobian product of the backward with (grad_grad_input,
/// grad_grad_grid), each only where output_mask asks for it.
std::tuple<at::Tensor, at::Tensor, at::Tensor> grid_sample_double_backward(
    const std::optional<at::Tensor>& grad_grad_input, const std::optional<at::Tensor>& grad_grad_grid,
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& grid, int64_t mode, int64_t padding,
    bool align_corners, std::array<bool, 3> output_mask);

/// The output's tangent along (input_tangent, grid_tangent), either of which may be absent (zero).
at::Tensor grid_sample_tangent(const std::optional<at::Tensor>& input_tangent,
                               const std::optional<at::Tensor>& grid_tangent, const at::Tensor& input,
                               const at::Tensor& grid, int64_t mode, int64_t padding, bool align_corners);

/// The encoders' plane coordinates: points [(N,) P, D] read by K planes at the column pairs `columns` (2K indices:
/// plane k's x at columns[2k], its y at columns[2k + 1]) as grids [(N,) K, P, 2], contiguous.
at::Tensor plane_coords(const at::Tensor& points, at::IntArrayRef columns);

/// plane_coords' gradient: grad [(N,) K, P, 2] summed into the `width` columns of points, [(N,) P, width].
at::Tensor plane_coords_backward(const at::Tensor& grad, at::IntArrayRef columns, int64_t width);

/// The planes' product (K-Planes' Hadamard product): features [N, K, P, C], any strides, multiplied over K into
/// [N, P, C], contiguous.
at::Tensor plane_product(const at::Tensor& features);

/// plane_product's gradient with respect to features: grad [N, P, C] -> d_features [N, K, P, C], contiguous.
at::Tensor plane_product_backward(const at::Tensor& grad, const at::Tensor& features);

/// (d_grad, d_features): the vector-Jacobian product of plane_product_backward with grad_grad [N, K, P, C], each only
/// where output_mask asks for it.
std::tuple<at::Tensor, at::Tensor> plane_product_double_backward(const at::Tensor& grad_grad, const at::Tensor& grad,
                                                                 const at::Tensor& features,
                                                                 std::array<bool, 2> output_mask);

}  // namespace grid_encoder
