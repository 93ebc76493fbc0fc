#include "cellgrad/optim/adagrad.hpp"

#include <cmath>

#include "cellgrad/parallel.hpp"

namespace cellgrad {

template <class T>
Adagrad<T>::Adagrad(std::vector<Parameter<T>*> parameters, const AdagradOptions& options)
    : Optimizer<T>("Adagrad", std::move(parameters), options.lr), options_(options) {
    this->check_non_negative("lr_decay", options.lr_decay);
    this->check_non_negative("weight_decay", options.weight_decay);
    this->check_non_negative("initial_accumulator_value", options.initial_accumulator_value);
    this->check_non_negative("eps", options.eps);
    sum_slot_ = this->add_state("sum", T(options.initial_accumulator_value));
}

template <class T>
std::vector<std::pair<std::string, double>> Adagrad<T>::hyperparameters() const {
    return {{"lr", this->lr()},
            {"lr_decay", options_.lr_decay},
            {"weight_decay", options_.weight_decay},
            {"initial_accumulator_value", options_.initial_accumulator_value},
            {"eps", options_.eps}};
}

// d = g + wd*w; clr = lr / (1 + (t-1)*lr_decay); s = s + d^2; w = w - clr * d / (sqrt(s) + eps).
template <class T>
void Adagrad<T>::update() {
    const double t = double(this->step_count());
    const T neg_clr = T(-(this->lr() / (1 + (t - 1) * options_.lr_decay)));
    const T wd = T(options_.weight_decay);
    const bool decay = options_.weight_decay != 0;
    const T eps = T(options_.eps);
    for (std::size_t i = 0; i < this->parameters().size(); ++i) {
        Parameter<T>& p = *this->parameters()[i];
        T* w = p.value.data();
        const T* g = p.grad.data();
        T* s = this->state(sum_slot_, i).data();
        parallel_chunks(p.value.size(), cheap_grain, [&](std::size_t begin, std::size_t end) {
            for (std::size_t k = begin; k < end; ++k) {
                T d = g[k];
                if (decay) {
                    d = d + wd * w[k];
                }
                s[k] = s[k] + d * d;
                w[k] = w[k] + neg_clr * (d / (std::sqrt(s[k]) + eps));
            }
        });
    }
}

template class Adagrad<float>;
template class Adagrad<double>;

} // namespace cellgrad
