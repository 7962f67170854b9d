// The CUDA kernels of the encoders' glue (encoders.h): one thread per item (a product's: per block of channels),
// grid-stride.
#include "encoders.h"
#include "kernels_cuda.cuh"

namespace grid_encoder {
namespace {

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) pick_plane_coords_kernel(const PickArgs<scalar_t> a, int64_t items) {
  for_each_item(items, [&](int64_t item) { pick_plane_coords(a, item); });
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) sum_plane_columns_kernel(const ColumnSumArgs<scalar_t> a,
                                                                     int64_t samples) {
  for_each_item(samples, [&](int64_t sample) { sum_plane_columns(a, sample); });
}

// elements: [N, P, blocks] with blocks of kProductChannels channels
template <typename scalar_t, ProductStep kStep>
__global__ void __launch_bounds__(kThreads) product_kernel(const ProductArgs<scalar_t> a, int64_t blocks,
                                                           int64_t elements) {
  for_each_item(elements, [&](int64_t e) {
    const int64_t row = e / blocks, n = row / a.points;  // two divisions, where three would do it directly
    const int64_t c = (e - row * blocks) * kProductChannels;
    const int count = static_cast<int>(std::min<int64_t>(kProductChannels, a.channels - c));
    product_step_element(a, kStep, FeatureElement{n, row - n * a.points, c, count});
  });
}

}  // namespace

template <typename scalar_t>
void launch_pick_plane_coords(const PickArgs<scalar_t>& a, int64_t items, cudaStream_t stream) {
  launch_items(items, stream, pick_plane_coords_kernel<scalar_t>, a, items);
}

template <typename scalar_t>
void launch_sum_plane_columns(const ColumnSumArgs<scalar_t>& a, int64_t samples, cudaStream_t stream) {
  launch_items(samples, stream, sum_plane_columns_kernel<scalar_t>, a, samples);
}

template <typename scalar_t>
void launch_product(const ProductArgs<scalar_t>& a, ProductStep step, cudaStream_t stream) {
  const int64_t blocks = (a.channels + kProductChannels - 1) / kProductChannels, elements = a.batch * a.points * blocks;
  if (step == ProductStep::Forward) {
    launch_items(elements, stream, product_kernel<scalar_t, ProductStep::Forward>, a, blocks, elements);
  } else if (step == ProductStep::Backward) {
    launch_items(elements, stream, product_kernel<scalar_t, ProductStep::Backward>, a, blocks, elements);
  } else {
    launch_items(elements, stream, product_kernel<scalar_t, ProductStep::DoubleBackward>, a, blocks, elements);
  }
}

template void launch_pick_plane_coords<float>(const PickArgs<float>&, int64_t, cudaStream_t);
template void launch_sum_plane_columns<float>(const ColumnSumArgs<float>&, int64_t, cudaStream_t);
template void launch_product<float>(const ProductArgs<float>&, ProductStep, cudaStream_t);
template void launch_pick_plane_coords<double>(const PickArgs<double>&, int64_t, cudaStream_t);
template void launch_sum_plane_columns<double>(const ColumnSumArgs<double>&, int64_t, cudaStream_t);
template void launch_product<double>(const ProductArgs<double>&, ProductStep, cudaStream_t);
template void launch_pick_plane_coords<c10::Half>(const PickArgs<c10::Half>&, int64_t, cudaStream_t);
template void launch_sum_plane_columns<c10::Half>(const ColumnSumArgs<c10::Half>&, int64_t, cudaStream_t);
template void launch_product<c10::Half>(const ProductArgs<c10::Half>&, ProductStep, cudaStream_t);
template void launch_pick_plane_coords<c10::BFloat16>(const PickArgs<c10::BFloat16>&, int64_t, cudaStream_t);
template void launch_sum_plane_columns<c10::BFloat16>(const ColumnSumArgs<c10::BFloat16>&, int64_t, cudaStream_t);
template void launch_product<c10::BFloat16>(const ProductArgs<c10::BFloat16>&, ProductStep, cudaStream_t);

}  // namespace grid_encoder
