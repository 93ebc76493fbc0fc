// The LibTorch side of bench_training behind a torch-free interface (C++17, no torch headers), so
// that the cellgrad translation unit never sees a torch header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "training_step.hpp"

namespace bench {

/// The LibTorch step for `shape` on time-major token ids (steps * batch of them each).
std::unique_ptr<TrainingStep> make_torch_step(const StepShape& shape,
                                              const std::vector<std::int32_t>& inputs,
                                              const std::vector<std::int32_t>& targets, double lr,
                                              std::uint64_t seed);

/// Sets LibTorch's intra-op (OpenMP) thread count.
void set_torch_threads(int threads);

/// "LibTorch <version>" with its parallel backend, for the report header.
std::string torch_description();

} // namespace bench
