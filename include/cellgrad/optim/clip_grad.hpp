// Gradient clipping over a set of parameters, as torch.nn.utils.clip_grad_norm_/clip_grad_value_.
#pragma once

#include <limits>
#include <vector>

#include "cellgrad/tape.hpp"

namespace cellgrad {

/// The infinity norm type for clip_grad_norm (max |g|).
inline constexpr double inf_norm = std::numeric_limits<double>::infinity();

/// Global norm of all gradients (norm_type 2 or inf_norm); if max_norm / (norm + 1e-6) < 1, scales
/// every gradient by that factor (torch's formula). Returns the norm before clipping. With
/// error_if_nonfinite, a NaN/Inf norm throws naming the parameter with a non-finite gradient.
template <class T>
T clip_grad_norm(const std::vector<Parameter<T>*>& parameters, double max_norm,
                 double norm_type = 2.0, bool error_if_nonfinite = false);

/// Clamps every gradient element to [-clip_value, clip_value] (NaN stays NaN); clip_value >= 0.
template <class T>
void clip_grad_value(const std::vector<Parameter<T>*>& parameters, double clip_value);

} // namespace cellgrad
