#include "cellgrad/optim/optimizer.hpp"

#include <cmath>
#include <unordered_set>

namespace cellgrad {

template <class T>
Optimizer<T>::Optimizer(std::string name, std::vector<Parameter<T>*> parameters, double lr)
    : name_(std::move(name)), parameters_(std::move(parameters)), lr_(lr) {
    if (parameters_.empty()) {
        throw Error(fmt::format("{}: got an empty parameter list", name_));
    }
    std::unordered_set<std::string> names;
    for (std::size_t i = 0; i < parameters_.size(); ++i) {
        const Parameter<T>* p = parameters_[i];
        if (p == nullptr) {
            throw Error(fmt::format("{}: parameter {} is a null pointer", name_, i));
        }
        if (!names.insert(p->name).second) {
            throw Error(fmt::format("{}: parameter name '{}' appears twice; state tensors are "
                                    "keyed by parameter name, so names must be unique",
                                    name_, p->name));
        }
        if (p->grad.shape() != p->value.shape()) {
            throw Error(fmt::format("{}: parameter '{}' has value {} but gradient {}", name_,
                                    p->name, p->value.shape(), p->grad.shape()));
        }
    }
    check_non_negative("lr", lr);
}

template <class T>
void Optimizer<T>::step() {
    for (std::size_t i = 0; i < parameters_.size(); ++i) {
        const Parameter<T>& p = *parameters_[i];
        bool same = p.grad.shape() == p.value.shape();
        for (const auto& kind : states_) {
            same = same && kind.second[i].shape() == p.value.shape();
        }
        if (!same) {
            throw Error(
                fmt::format("{}::step: parameter '{}' has value {} and gradient {}, but the "
                            "optimizer was built for shape {}",
                            name_, p.name, p.value.shape(), p.grad.shape(),
                            states_.empty() ? p.value.shape() : states_[0].second[i].shape()));
        }
    }
    ++step_count_;
    update();
}

template <class T>
void Optimizer<T>::zero_grad() {
    for (Parameter<T>* p : parameters_) {
        p->zero_grad();
    }
}

template <class T>
void Optimizer<T>::set_lr(double lr) {
    check_option(lr >= 0 && std::isfinite(lr), "lr", lr, "a finite value >= 0");
    lr_ = lr;
}

template <class T>
void Optimizer<T>::set_step_count(std::int64_t steps) {
    if (steps < 0) {
        throw Error(fmt::format("{}::set_step_count: got {}, needs >= 0", name_, steps));
    }
    step_count_ = steps;
}

template <class T>
std::vector<StateTensor<T>> Optimizer<T>::state_tensors() {
    std::vector<StateTensor<T>> list;
    for (auto& [kind, tensors] : states_) {
        for (std::size_t i = 0; i < tensors.size(); ++i) {
            list.push_back({kind + "." + parameters_[i]->name, &tensors[i]});
        }
    }
    return list;
}

template <class T>
std::size_t Optimizer<T>::add_state(std::string kind, T fill) {
    std::vector<Tensor<T>> tensors;
    tensors.reserve(parameters_.size());
    for (const Parameter<T>* p : parameters_) {
        tensors.emplace_back(p->value.rows(), p->value.cols(), fill);
    }
    states_.emplace_back(std::move(kind), std::move(tensors));
    return states_.size() - 1;
}

template <class T>
void Optimizer<T>::check_option(bool ok, const char* option, double value,
                                const char* requirement) const {
    if (!ok) {
        throw Error(
            fmt::format("{}: invalid {} = {} (needs {})", name_, option, value, requirement));
    }
}

template <class T>
void Optimizer<T>::check_non_negative(const char* option, double value) const {
    check_option(value >= 0 && std::isfinite(value), option, value, "a finite value >= 0");
}

template class Optimizer<float>;
template class Optimizer<double>;

} // namespace cellgrad
