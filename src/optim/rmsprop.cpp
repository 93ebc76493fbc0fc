#include "cellgrad/optim/rmsprop.hpp"

#include <cmath>

#include "cellgrad/parallel.hpp"

namespace cellgrad {

template <class T>
RMSprop<T>::RMSprop(std::vector<Parameter<T>*> parameters, const RMSpropOptions& options)
    : Optimizer<T>("RMSprop", std::move(parameters), options.lr), options_(options) {
    this->check_non_negative("alpha", options.alpha);
    this->check_non_negative("eps", options.eps);
    this->check_non_negative("weight_decay", options.weight_decay);
    this->check_non_negative("momentum", options.momentum);
    square_avg_slot_ = this->add_state("square_avg");
    if (options.momentum > 0) {
        momentum_slot_ = this->add_state("momentum_buffer");
    }
    if (options.centered) {
        grad_avg_slot_ = this->add_state("grad_avg");
    }
}

template <class T>
std::vector<std::pair<std::string, double>> RMSprop<T>::hyperparameters() const {
    return {{"lr", this->lr()},
            {"alpha", options_.alpha},
            {"eps", options_.eps},
            {"weight_decay", options_.weight_decay},
            {"momentum", options_.momentum},
            {"centered", options_.centered ? 1.0 : 0.0}};
}

// d = g + wd*w; v = a*v + (1-a)*d^2; ga = a*ga + (1-a)*d (centered); r = d / (sqrt(v - ga^2) +
// eps); b = mu*b + r, w = w - lr*b (momentum > 0) else w = w - lr*r.
template <class T>
void RMSprop<T>::update() {
    const T neg_lr = T(-this->lr());
    const T wd = T(options_.weight_decay);
    const bool decay = options_.weight_decay != 0;
    const T alpha = T(options_.alpha);
    const T weight = T(1 - options_.alpha);
    const bool lerp_low = weight < T(0.5); // grad_avg moves as torch's lerp(grad_avg, d, 1-a)
    const T eps = T(options_.eps);
    const T mu = T(options_.momentum);
    const bool momentum = options_.momentum > 0;
    const bool centered = options_.centered;
    for (std::size_t i = 0; i < this->parameters().size(); ++i) {
        Parameter<T>& p = *this->parameters()[i];
        T* w = p.value.data();
        const T* g = p.grad.data();
        T* v = this->state(square_avg_slot_, i).data();
        T* b = momentum ? this->state(momentum_slot_, i).data() : nullptr;
        T* ga = centered ? this->state(grad_avg_slot_, i).data() : nullptr;
        parallel_chunks(p.value.size(), cheap_grain, [&](std::size_t begin, std::size_t end) {
            for (std::size_t k = begin; k < end; ++k) {
                T d = g[k];
                if (decay) {
                    d = d + wd * w[k];
                }
                v[k] = v[k] * alpha + weight * d * d;
                T avg;
                if (centered) {
                    ga[k] =
                        lerp_low ? ga[k] + weight * (d - ga[k]) : d - (d - ga[k]) * (T(1) - weight);
                    avg = std::sqrt(v[k] - ga[k] * ga[k]) + eps;
                } else {
                    avg = std::sqrt(v[k]) + eps;
                }
                if (momentum) {
                    b[k] = b[k] * mu + d / avg;
                    w[k] = w[k] + neg_lr * b[k];
                } else {
                    w[k] = w[k] + neg_lr * (d / avg);
                }
            }
        });
    }
}

template class RMSprop<float>;
template class RMSprop<double>;

} // namespace cellgrad
