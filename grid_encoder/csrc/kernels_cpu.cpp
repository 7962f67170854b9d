// The CPU launchers of the phases in problem.h. The float kernels are instantiated here; the double ones are a
// library of their own (kernels_cpu_f64.cpp), which _build.py builds on the first call with double tensors: the
// first build compiles half the CPU kernels, and the library's phases reach these launchers once it is loaded.
#include "kernels_cpu.h"

namespace grid_encoder {

template struct CpuPhases<float>;

namespace {

const Phases& cpu_phases(const Problem& pb) {
  const auto dtype = pb.input.scalar_type();
  if (dtype == at::kFloat) return kCpuPhases<float>;
  TORCH_CHECK(dtype == at::kDouble, "grid_encoder: no CPU kernels for ", dtype);
  return loaded(cpu_double_phases, "float64 CPU");
}

}  // namespace

void SampleOutput::cpu(const Problem& pb) { cpu_phases(pb).sample_output(pb); }
void GradGrid::cpu(const Problem& pb) { cpu_phases(pb).grad_grid(pb); }
void DoubleBackwardPoints::cpu(const Problem& pb) { cpu_phases(pb).double_backward_points(pb); }
void ScatterIntoInput::cpu(const Problem& pb, Coefficients coefficients) {
  cpu_phases(pb).scatter_into_input(pb, coefficients);
}

}  // namespace grid_encoder
