// One operator, dimensionality and dtype per file, so that the CUDA kernels compile in parallel.
#include "../kernels_cuda.cuh"

template void grid_encoder::forward_cuda<c10::BFloat16, 3>(const grid_encoder::Problem&);
