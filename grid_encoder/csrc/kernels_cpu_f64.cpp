// The CPU kernels for double: a library of their own, which _build.py builds on the first call with double tensors
// and hands to the main library (grid_encoder_set_phases in operators.cpp).
#include "kernels_cpu.h"

namespace grid_encoder {
template struct CpuPhases<double>;
}  // namespace grid_encoder

/// This library's phases.
extern "C" C10_EXPORT const void* grid_encoder_phases() {
  return &grid_encoder::kCpuPhases<double>;
}
