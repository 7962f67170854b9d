// The channels-last working copy of an input-like tensor (see working_copy in operators.cpp; the host side is
// channels_last_copy_cuda in phases_cuda.cpp). Two kernels, chosen by the length of an output row (a position's
// channels):
// - rows of kTiledRowBytes or more: a warp takes 32 positions of one batch item and passes their channels through a
//   tile of shared memory, 32 channels at a time. It loads each channel's 32 values as one coalesced row, then
//   stores the tile's part of the output, where each position's channels are one contiguous run (the whole tile's
//   one run when there are at most 32 channels): neighbouring lanes store neighbouring 16-byte words where the rows
//   are whole words, else neighbouring elements. Each warp owns its tile, so no barrier stops the other warps.
// - shorter rows: a thread per position loads its channels, each load coalesced along the warp's neighbouring
//   positions, and stores them as one contiguous run, in 16-byte words where the channel count allows.
// On an H200 the tiles copy 32 float channels at 3.5 TB/s where a thread per position reaches 2.0, and 64 floats or
// 32 doubles at 2-3x its speed; at 16 floats, 32 halves or 5 floats they are slower (version 36 of the performance
// log).
#include "kernels_cuda.cuh"

namespace grid_encoder {
namespace {

constexpr int kTile = 32;  // positions and channels of a warp's tile
constexpr int kTiledRowBytes = 96;  // rows at least this long take the tiled kernel

/// Warps per block: as many as keep the tiles within the 48 KB of static shared memory.
template <typename scalar_t>
constexpr int kCopyWarps = sizeof(scalar_t) > 4 ? 4 : 8;

template <typename scalar_t>
struct alignas(16) Word {
  static constexpr int kSize = 16 / sizeof(scalar_t);
  scalar_t value[kSize];
};

// in: [N, C, S] contiguous; out: [N, S, C] contiguous; tiles = N * ceil(S / kTile). words: rows of C elements are
// whole 16-byte words (out is a fresh allocation, so each row then starts on a word).
template <typename scalar_t>
__global__ void __launch_bounds__(kCopyWarps<scalar_t> * 32) copy_by_tiles(
    const scalar_t* in, scalar_t* out, int64_t channels, int64_t spatial, int64_t tiles, bool words) {
  using W = Word<scalar_t>;
  __shared__ scalar_t tiles_of_block[kCopyWarps<scalar_t>][kTile][kTile + 1];  // [channel][position], padded
  auto& tile = tiles_of_block[threadIdx.x / 32];
  const int lane = threadIdx.x % 32;
  const int64_t tiles_per_item = (spatial + kTile - 1) / kTile;
  const int64_t warps = int64_t(gridDim.x) * kCopyWarps<scalar_t>;
#pragma unroll 1
  for (int64_t t = int64_t(blockIdx.x) * kCopyWarps<scalar_t> + threadIdx.x / 32; t < tiles; t += warps) {
    const int64_t n = t / tiles_per_item, first = t % tiles_per_item * kTile;
    const int positions = static_cast<int>(spatial - first < kTile ? spatial - first : kTile);
    const scalar_t* from = in + n * channels * spatial + first;
    scalar_t* to = out + (n * spatial + first) * channels;
#pragma unroll 1
    for (int64_t c0 = 0; c0 < channels; c0 += kTile) {
      const int chunk = static_cast<int>(channels - c0 < kTile ? channels - c0 : kTile);
      if (lane < positions) {
#pragma unroll 8
        for (int c = 0; c < chunk; ++c) tile[c][lane] = from[(c0 + c) * spatial + lane];
      }
      __syncwarp();
      if (words) {
        const int per_position = chunk / W::kSize;
        for (int f = lane; f < positions * per_position; f += 32) {
          const int p = f / per_position, c = f % per_position * W::kSize;
          W word;
#pragma unroll
          for (int j = 0; j < W::kSize; ++j) word.value[j] = tile[c + j][p];
          *reinterpret_cast<W*>(to + p * channels + c0 + c) = word;
        }
      } else {
        for (int f = lane; f < positions * chunk; f += 32) {
          const int p = f / chunk, c = f % chunk;
          to[p * channels + c0 + c] = tile[c][p];
        }
      }
      __syncwarp();  // the tile is read before the next chunk overwrites it
    }
  }
}

// in: [N, C, S] contiguous; out: [N, S, C] contiguous; items = N * S.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) copy_by_positions(const scalar_t* in, scalar_t* out, int64_t channels,
                                                              int64_t spatial, int64_t items, bool words) {
  for_each_item(items, [&](int64_t item) {
    const scalar_t* from = in + (item / spatial) * channels * spatial + item % spatial;
    for_each_block(channel_range(0, channels), [&](ChannelBlock b) {
      scalar_t values[kChannelBlock];
      load_block(from + b.first * spatial, spatial, b.count, /*channel_words=*/false, values);
      store_block(out + item * channels + b.first, 1, b.count, words, values);
    });
  });
}

}  // namespace

template <typename scalar_t>
void launch_channels_last_copy(const scalar_t* in, scalar_t* out, int64_t channels, int64_t spatial, int64_t items,
                               cudaStream_t stream) {
  if (items == 0) return;
  const bool words = rows_are_whole_words<scalar_t>(channels);
  if (channels * static_cast<int64_t>(sizeof(scalar_t)) < kTiledRowBytes) {
    launch_items(items, stream, copy_by_positions<scalar_t>, in, out, channels, spatial, items, words);
    return;
  }
  const int64_t tiles = items / spatial * ((spatial + kTile - 1) / kTile);
  const int64_t blocks = std::min<int64_t>((tiles + kCopyWarps<scalar_t> - 1) / kCopyWarps<scalar_t>, kMaxBlocks);
  copy_by_tiles<scalar_t><<<static_cast<unsigned>(blocks), kCopyWarps<scalar_t> * 32, 0, stream>>>(
      in, out, channels, spatial, tiles, words);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void launch_channels_last_copy<double>(const double*, double*, int64_t, int64_t, int64_t, cudaStream_t);
template void launch_channels_last_copy<float>(const float*, float*, int64_t, int64_t, int64_t, cudaStream_t);
template void launch_channels_last_copy<c10::Half>(const c10::Half*, c10::Half*, int64_t, int64_t, int64_t,
                                                   cudaStream_t);
template void launch_channels_last_copy<c10::BFloat16>(const c10::BFloat16*, c10::BFloat16*, int64_t, int64_t,
                                                       int64_t, cudaStream_t);

}  // namespace grid_encoder
