// The CUDA kernels of the encoders' plane coordinates (plane_coords.h): one thread per item, grid-stride.
#include "kernels_cuda.cuh"
#include "plane_coords.h"

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

}  // namespace

template <typename scalar_t>
void launch_pick_plane_coords(const PickArgs<scalar_t>& a, int64_t items, cudaStream_t stream) {
  launch_items(items, stream, pick_plane_coords_kernel<scalar_t>, a, items);
}

template <typename scalar_t>
void launch_sum_plane_columns(const ColumnSumArgs<scalar_t>& a, int64_t samples, cudaStream_t stream) {
  launch_items(samples, stream, sum_plane_columns_kernel<scalar_t>, a, samples);
}

template void launch_pick_plane_coords<float>(const PickArgs<float>&, int64_t, cudaStream_t);
template void launch_sum_plane_columns<float>(const ColumnSumArgs<float>&, int64_t, cudaStream_t);
template void launch_pick_plane_coords<double>(const PickArgs<double>&, int64_t, cudaStream_t);
template void launch_sum_plane_columns<double>(const ColumnSumArgs<double>&, int64_t, cudaStream_t);
template void launch_pick_plane_coords<c10::Half>(const PickArgs<c10::Half>&, int64_t, cudaStream_t);
template void launch_sum_plane_columns<c10::Half>(const ColumnSumArgs<c10::Half>&, int64_t, cudaStream_t);
template void launch_pick_plane_coords<c10::BFloat16>(const PickArgs<c10::BFloat16>&, int64_t, cudaStream_t);
template void launch_sum_plane_columns<c10::BFloat16>(const ColumnSumArgs<c10::BFloat16>&, int64_t, cudaStream_t);

}  // namespace grid_encoder
