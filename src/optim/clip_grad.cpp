#include "cellgrad/optim/clip_grad.hpp"

#include <cmath>
#include <string>

#include "cellgrad/parallel.hpp"

namespace cellgrad {

namespace {

/// Sum of squares (norm_type 2) or max |g| (inf) of one gradient, in double; NaN if any is NaN.
template <class T>
double gradient_reduction(const Tensor<T>& grad, bool infinity) {
    const T* g = grad.data();
    const std::size_t n = grad.size();
    if (!infinity) {
        return parallel_sum<double>(n, cheap_grain, [g](std::size_t begin, std::size_t end) {
            double total = 0;
            for (std::size_t k = begin; k < end; ++k) {
                total += double(g[k]) * double(g[k]);
            }
            return total;
        });
    }
    T largest = T(0);
    bool nan = false;
    for (std::size_t k = 0; k < n; ++k) {
        const T a = std::abs(g[k]);
        largest = a > largest ? a : largest;
        nan = nan || a != a;
    }
    return nan ? std::nan("") : double(largest);
}

/// "parameter 'x' has a non-finite gradient (nan at (0, 1))" for the first such parameter.
template <class T>
std::string describe_nonfinite(const std::vector<Parameter<T>*>& parameters,
                               const std::vector<double>& reductions) {
    for (const Parameter<T>* p : parameters) {
        const T* g = p->grad.data();
        for (std::size_t k = 0; k < p->grad.size(); ++k) {
            if (!std::isfinite(g[k])) {
                return fmt::format("parameter '{}' has a non-finite gradient ({} at ({}, {}))",
                                   p->name, g[k], k / p->grad.cols(), k % p->grad.cols());
            }
        }
    }
    std::size_t worst = 0;
    for (std::size_t i = 0; i < reductions.size(); ++i) {
        worst = !std::isfinite(reductions[i]) || reductions[i] > reductions[worst] ? i : worst;
    }
    return fmt::format("every gradient is finite but the norm overflows; the largest part is "
                       "parameter '{}'",
                       parameters[worst]->name);
}

} // namespace

// norm = (sum_p sum g^2)^(1/2) or max_p max |g|; g = g * max_norm / (norm + 1e-6) if that is < 1.
template <class T>
T clip_grad_norm(const std::vector<Parameter<T>*>& parameters, double max_norm, double norm_type,
                 bool error_if_nonfinite) {
    if (!(norm_type == 2.0 || norm_type == inf_norm)) {
        throw Error(fmt::format("clip_grad_norm: unsupported norm_type = {} (supported: 2 and "
                                "inf_norm)",
                                norm_type));
    }
    if (!(max_norm >= 0)) {
        throw Error(fmt::format("clip_grad_norm: invalid max_norm = {} (needs >= 0)", max_norm));
    }
    for (std::size_t i = 0; i < parameters.size(); ++i) {
        if (parameters[i] == nullptr) {
            throw Error(fmt::format("clip_grad_norm: parameter {} is a null pointer", i));
        }
    }
    const bool infinity = norm_type == inf_norm;
    std::vector<double> reductions(parameters.size());
    double total = 0;
    for (std::size_t i = 0; i < parameters.size(); ++i) {
        reductions[i] = gradient_reduction(parameters[i]->grad, infinity);
        if (infinity) {
            total = std::isnan(total) || reductions[i] <= total ? total : reductions[i];
        } else {
            total += reductions[i];
        }
    }
    const T norm = T(infinity ? total : std::sqrt(total));
    if (error_if_nonfinite && !std::isfinite(norm)) {
        throw Error(fmt::format("clip_grad_norm: the total norm of order {} of the gradients is "
                                "{}, so it cannot be clipped: {}",
                                norm_type, norm, describe_nonfinite(parameters, reductions)));
    }
    const double coefficient = max_norm / (double(norm) + 1e-6);
    if (!(coefficient >= 1.0)) { // torch clamps the coefficient to <= 1 (NaN propagates)
        const T factor = T(coefficient);
        for (Parameter<T>* p : parameters) {
            T* g = p->grad.data();
            parallel_chunks(p->grad.size(), cheap_grain, [&](std::size_t begin, std::size_t end) {
                for (std::size_t k = begin; k < end; ++k) {
                    g[k] = g[k] * factor;
                }
            });
        }
    }
    return norm;
}

// g = min(max(g, -clip_value), clip_value), NaN kept.
template <class T>
void clip_grad_value(const std::vector<Parameter<T>*>& parameters, double clip_value) {
    if (!(clip_value >= 0)) {
        throw Error(
            fmt::format("clip_grad_value: invalid clip_value = {} (needs >= 0)", clip_value));
    }
    const T high = T(clip_value);
    const T low = -high;
    for (std::size_t i = 0; i < parameters.size(); ++i) {
        if (parameters[i] == nullptr) {
            throw Error(fmt::format("clip_grad_value: parameter {} is a null pointer", i));
        }
        T* g = parameters[i]->grad.data();
        parallel_chunks(parameters[i]->grad.size(), cheap_grain,
                        [&](std::size_t begin, std::size_t end) {
                            for (std::size_t k = begin; k < end; ++k) {
                                const T x = g[k];
                                g[k] = x < low ? low : (x > high ? high : x);
                            }
                        });
    }
}

template float clip_grad_norm<float>(const std::vector<Parameter<float>*>&, double, double, bool);
template double clip_grad_norm<double>(const std::vector<Parameter<double>*>&, double, double,
                                       bool);
template void clip_grad_value<float>(const std::vector<Parameter<float>*>&, double);
template void clip_grad_value<double>(const std::vector<Parameter<double>*>&, double);

} // namespace cellgrad
