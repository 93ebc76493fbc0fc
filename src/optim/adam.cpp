#include "cellgrad/optim/adam.hpp"

#include <cmath>

#include "cellgrad/parallel.hpp"

namespace cellgrad {

template <class T>
Adam<T>::Adam(std::vector<Parameter<T>*> parameters, const AdamOptions& options)
    : Optimizer<T>("Adam", std::move(parameters), options.lr), options_(options) {
    this->check_non_negative("eps", options.eps);
    this->check_option(options.beta1 >= 0 && options.beta1 < 1, "beta1 (betas[0])", options.beta1,
                       "0 <= beta1 < 1");
    this->check_option(options.beta2 >= 0 && options.beta2 < 1, "beta2 (betas[1])", options.beta2,
                       "0 <= beta2 < 1");
    this->check_non_negative("weight_decay", options.weight_decay);
    exp_avg_slot_ = this->add_state("exp_avg");
    exp_avg_sq_slot_ = this->add_state("exp_avg_sq");
    if (options.amsgrad) {
        max_exp_avg_sq_slot_ = this->add_state("max_exp_avg_sq");
    }
}

template <class T>
std::vector<std::pair<std::string, double>> Adam<T>::hyperparameters() const {
    return {{"lr", this->lr()},
            {"beta1", options_.beta1},
            {"beta2", options_.beta2},
            {"eps", options_.eps},
            {"weight_decay", options_.weight_decay},
            {"amsgrad", options_.amsgrad ? 1.0 : 0.0}};
}

// d = g + wd*w; m = b1*m + (1-b1)*d; v = b2*v + (1-b2)*d^2; vmax = max(vmax, v) (amsgrad);
// w = w - lr/(1-b1^t) * m / (sqrt(v or vmax)/sqrt(1-b2^t) + eps).
template <class T>
void Adam<T>::update() {
    const double t = double(this->step_count());
    const double bias_correction1 = 1 - std::pow(options_.beta1, t);
    const double bias_correction2 = 1 - std::pow(options_.beta2, t);
    const T neg_step_size = T(-(this->lr() / bias_correction1));
    const T bias_correction2_sqrt = T(std::sqrt(bias_correction2));
    const T wd = T(options_.weight_decay);
    const bool decay = options_.weight_decay != 0;
    // exp_avg moves towards d by weight 1-b1, computed as torch's lerp for bit-level agreement.
    const T weight1 = T(1 - options_.beta1);
    const bool lerp_low = weight1 < T(0.5);
    const T beta2 = T(options_.beta2);
    const T weight2 = T(1 - options_.beta2);
    const T eps = T(options_.eps);
    const bool amsgrad = options_.amsgrad;
    for (std::size_t i = 0; i < this->parameters().size(); ++i) {
        Parameter<T>& p = *this->parameters()[i];
        T* w = p.value.data();
        const T* g = p.grad.data();
        T* m = this->state(exp_avg_slot_, i).data();
        T* v = this->state(exp_avg_sq_slot_, i).data();
        T* vmax = amsgrad ? this->state(max_exp_avg_sq_slot_, i).data() : nullptr;
        parallel_chunks(p.value.size(), cheap_grain, [&](std::size_t begin, std::size_t end) {
            for (std::size_t k = begin; k < end; ++k) {
                T d = g[k];
                if (decay) {
                    d = d + wd * w[k];
                }
                m[k] = lerp_low ? m[k] + weight1 * (d - m[k]) : d - (d - m[k]) * (T(1) - weight1);
                v[k] = v[k] * beta2 + weight2 * d * d;
                T second = v[k];
                if (amsgrad) {
                    vmax[k] = vmax[k] < second ? second : vmax[k];
                    second = vmax[k];
                }
                const T denom = std::sqrt(second) / bias_correction2_sqrt + eps;
                w[k] = w[k] + neg_step_size * (m[k] / denom);
            }
        });
    }
}

template class Adam<float>;
template class Adam<double>;

} // namespace cellgrad
