#include "cellgrad/optim/sgd.hpp"

#include <cmath>

#include "cellgrad/parallel.hpp"

namespace cellgrad {

template <class T>
SGD<T>::SGD(std::vector<Parameter<T>*> parameters, const SGDOptions& options)
    : Optimizer<T>("SGD", std::move(parameters), options.lr), options_(options) {
    this->check_non_negative("momentum", options.momentum);
    this->check_option(std::isfinite(options.dampening), "dampening", options.dampening,
                       "a finite value");
    this->check_non_negative("weight_decay", options.weight_decay);
    if (options.nesterov && !(options.momentum > 0 && options.dampening == 0)) {
        throw Error(fmt::format("SGD: nesterov = true requires momentum > 0 and dampening = 0 "
                                "(got momentum = {}, dampening = {})",
                                options.momentum, options.dampening));
    }
    if (options.momentum != 0) {
        buffer_slot_ = this->add_state("momentum_buffer");
    }
}

template <class T>
std::vector<std::pair<std::string, double>> SGD<T>::hyperparameters() const {
    return {{"lr", this->lr()},
            {"momentum", options_.momentum},
            {"dampening", options_.dampening},
            {"weight_decay", options_.weight_decay},
            {"nesterov", options_.nesterov ? 1.0 : 0.0}};
}

// d = g + wd*w; b = d on step 1, else b = mu*b + (1-dampening)*d; d = nesterov ? d + mu*b : b;
// w = w - lr*d.
template <class T>
void SGD<T>::update() {
    const T lr = T(this->lr());
    const T wd = T(options_.weight_decay);
    const bool decay = options_.weight_decay != 0;
    const T mu = T(options_.momentum);
    const T keep = T(1 - options_.dampening);
    const bool momentum = options_.momentum != 0;
    const bool first = this->step_count() == 1;
    const bool nesterov = options_.nesterov;
    for (std::size_t i = 0; i < this->parameters().size(); ++i) {
        Parameter<T>& p = *this->parameters()[i];
        T* w = p.value.data();
        const T* g = p.grad.data();
        T* b = momentum ? this->state(buffer_slot_, i).data() : nullptr;
        parallel_chunks(p.value.size(), cheap_grain, [&](std::size_t begin, std::size_t end) {
            for (std::size_t k = begin; k < end; ++k) {
                T d = g[k];
                if (decay) {
                    d = d + wd * w[k];
                }
                if (momentum) {
                    b[k] = first ? d : b[k] * mu + keep * d;
                    d = nesterov ? d + mu * b[k] : b[k];
                }
                w[k] = w[k] - lr * d;
            }
        });
    }
}

template class SGD<float>;
template class SGD<double>;

} // namespace cellgrad
