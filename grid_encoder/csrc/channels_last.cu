// The channels-last working copy of an input-like tensor (see working_copy in operators.cpp; the host side is
// channels_last_copy_cuda in phases_cuda.cpp). One thread per (n, position) reads the position's channels, each
// load coalesced along a warp's neighbouring positions, and writes them as one contiguous run, in 16-byte words
// where the channel count allows.
#include "kernels_cuda.cuh"

namespace grid_encoder {
namespace {

// in: [N, C, S] contiguous; out: [N, S, C] contiguous; items = N * S.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) channels_last_copy_kernel(const scalar_t* in, scalar_t* out,
                                                                      int64_t channels, int64_t spatial,
                                                                      int64_t items, bool channel_words) {
  for_each_item(items, [&](int64_t item) {
    const scalar_t* from = in + (item / spatial) * channels * spatial + item % spatial;
    for_each_block(channel_range(0, channels), [&](ChannelBlock b) {
      scalar_t values[kChannelBlock];
      load_block(from + b.first * spatial, spatial, b.count, /*channel_words=*/false, values);
      store_block(out + item * channels + b.first, 1, b.count, channel_words, values);
    });
  });
}

}  // namespace

template <typename scalar_t>
void launch_channels_last_copy(const scalar_t* in, scalar_t* out, int64_t channels, int64_t spatial, int64_t items,
                               cudaStream_t stream) {
  launch_items(items, stream, channels_last_copy_kernel<scalar_t>, in, out, channels, spatial, items,
               rows_are_whole_words<scalar_t>(channels));
}

template void launch_channels_last_copy<double>(const double*, double*, int64_t, int64_t, int64_t, cudaStream_t);
template void launch_channels_last_copy<float>(const float*, float*, int64_t, int64_t, int64_t, cudaStream_t);
template void launch_channels_last_copy<c10::Half>(const c10::Half*, c10::Half*, int64_t, int64_t, int64_t,
                                                   cudaStream_t);
template void launch_channels_last_copy<c10::BFloat16>(const c10::BFloat16*, c10::BFloat16*, int64_t, int64_t,
                                                       int64_t, cudaStream_t);

}  // namespace grid_encoder
