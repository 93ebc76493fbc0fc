// Finite-difference gradient checking (public API): central differences in float64 against the
// tape's analytic gradients, for parameters and for inputs (wrap an input in a Parameter).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "cellgrad/tape.hpp"

namespace cellgrad {

/// Settings of grad_check.
struct GradCheckOptions {
    double eps = 1e-6; ///< central-difference step
    double atol =
        1e-8; ///< an element passes if |analytic - numeric| <= atol + rtol * max(|a|, |n|)
    double rtol = 1e-6;
    /// Relative error is |a - n| / max(|a|, |n|, relative_floor): near-zero gradients are judged
    /// on absolute error instead of amplifying round-off.
    double relative_floor = 1e-3;
    std::size_t full_check_limit = 512; ///< tensors up to this size are checked element by element
    std::size_t samples = 64;           ///< elements sampled from each larger tensor
    std::uint64_t seed = 0;             ///< seed for the sampled elements and random directions
    bool random_direction = true;       ///< also check one random direction per large tensor
};

/// One compared element (or random direction, then row = col = 0 and `direction` is true).
struct GradCheckEntry {
    std::string name;
    std::size_t row = 0;
    std::size_t col = 0;
    bool direction = false;
    double analytic = 0;
    double numeric = 0;
    double abs_error = 0;
    double rel_error = 0;
};

/// Outcome of grad_check: pass/fail, the worst element and how many were compared.
struct GradCheckReport {
    bool passed = true;
    std::size_t checked = 0;
    double max_abs_error = 0;
    double max_rel_error = 0;
    GradCheckEntry worst;
    /// One line: passed/failed, counts, worst element with analytic vs numeric and errors.
    std::string summary() const;
};

/// Builds the loss on a fresh tape; must be deterministic (same inputs -> same loss).
using LossFunction = std::function<Var<double>(Tape<double>&)>;

/// Compares the tape's gradient of `loss` w.r.t. each target with central differences.
GradCheckReport grad_check(const LossFunction& loss, std::span<Parameter<double>* const> targets,
                           const GradCheckOptions& options = {});

/// Same, for a braced list of targets.
GradCheckReport grad_check(const LossFunction& loss,
                           std::initializer_list<Parameter<double>*> targets,
                           const GradCheckOptions& options = {});

} // namespace cellgrad
