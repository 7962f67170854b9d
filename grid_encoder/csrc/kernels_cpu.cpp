// The CPU launchers of the phases in problem.h: each runs the kernels of kernels_cpu.h for the problem's dtype.
// The float kernels are instantiated here, the double ones in instantiations/cpu_f64.cpp: two files that ninja
// compiles in parallel.
#include <ATen/Dispatch.h>

#include "kernels_cpu.h"

namespace grid_encoder {

template struct CpuPhases<float>;

void SampleOutput::cpu(const Problem& pb) {
  AT_DISPATCH_FLOATING_TYPES(pb.input.scalar_type(), "grid_encoder_cpu", [&] { CpuPhases<scalar_t>::sample_output(pb); });
}

void GradGrid::cpu(const Problem& pb) {
  AT_DISPATCH_FLOATING_TYPES(pb.input.scalar_type(), "grid_encoder_cpu", [&] { CpuPhases<scalar_t>::grad_grid(pb); });
}

void DoubleBackwardPoints::cpu(const Problem& pb) {
  AT_DISPATCH_FLOATING_TYPES(pb.input.scalar_type(), "grid_encoder_cpu",
                             [&] { CpuPhases<scalar_t>::double_backward_points(pb); });
}

void ScatterIntoInput::cpu(const Problem& pb, Coefficients coefficients) {
  AT_DISPATCH_FLOATING_TYPES(pb.input.scalar_type(), "grid_encoder_cpu",
                             [&] { CpuPhases<scalar_t>::scatter_into_input(pb, coefficients); });
}

}  // namespace grid_encoder
