// The channels-last working copy of an input-like tensor (see working_copy in operators.cpp). One thread per
// (n, position) reads the position's channels, each load coalesced along a warp's neighbouring positions, and
// writes them as one contiguous run, in 16-byte words where the channel count allows.
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

at::Tensor channels_last_copy_cuda(const at::Tensor& t, at::MemoryFormat format) {
  if (t.is_contiguous(format)) return t;
  if (!t.is_contiguous()) return t.contiguous(format);  // other strides: torch's generic copy
  at::Tensor out = at::empty(t.sizes(), t.options().memory_format(format));
  const int64_t channels = t.size(1), items = t.numel() / channels;
  const bool channel_words = rows_are_whole_words(channels, out);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "channels_last_copy", [&] {
    launch_items(items, t.get_device(), channels_last_copy_kernel<scalar_t>, t.const_data_ptr<scalar_t>(),
                 out.data_ptr<scalar_t>(), channels, items / std::max<int64_t>(t.size(0), 1), items, channel_words);
  });
  return out;
}

}  // namespace grid_encoder
