// The GRU variants: Cho et al.'s original GRU and the minimal gated unit. Both gate the old state
// before a recurrent matrix, so a step is two GEMMs, each followed by a pointwise node.

#include "cellgrad/nn/cells/variants.hpp"

namespace cellgrad::nn {

template <class T>
ChoGRUCell<T>::ChoGRUCell(std::size_t in, std::size_t H, std::mt19937_64& rng, double,
                          const std::string& suffix)
    : VariantCell<T>(in, H, 3, true, suffix, rng) {}

template <class T>
std::vector<Var<T>> ChoGRUCell<T>::step(const StepInput<T>& event, std::span<const Var<T>> state) {
    const Var<T>& h = state[0];
    const auto [x_r, x_z, x_n] = split_columns<3>(event.var());                       // (B, 3H)
    const auto [h_r, h_z] = split_columns<2>(this->weights_.project_hidden(h, 0, 2)); // (B, 2H)
    const auto [reset_h, update] = pointwise(
        "cho_gru_gates",
        [](auto x_r, auto h_r, auto x_z, auto h_z, auto h) {
            auto reset = named("reset", sigmoid(x_r + h_r)); // before the recurrent matrix
            return std::tuple{reset * h, named("update", sigmoid(x_z + h_z))};
        },
        x_r, h_r, x_z, h_z, Columns<T>(h));
    const Var<T> h_n = this->weights_.project_hidden(reset_h, 2, 1); // W_hn (r h) + b_hn, (B, H)
    const auto [new_h] = pointwise(
        "cho_gru_state",
        [](auto x_n, auto h_n, auto update, auto h) {
            return (1.0 - update) * named("candidate", tanh(x_n + h_n)) + update * h;
        },
        x_n, h_n, update, Columns<T>(h));
    return {new_h};
}

template <class T>
MGUCell<T>::MGUCell(std::size_t in, std::size_t H, std::mt19937_64& rng, double,
                    const std::string& suffix)
    : VariantCell<T>(in, H, 2, true, suffix, rng) {}

template <class T>
std::vector<Var<T>> MGUCell<T>::step(const StepInput<T>& event, std::span<const Var<T>> state) {
    const Var<T>& h = state[0];
    const auto [x_f, x_n] = split_columns<2>(event.var());     // (B, 2H)
    const Var<T> h_f = this->weights_.project_hidden(h, 0, 1); // U_f h + b_hf, (B, H)
    const auto [forget_h, forget] = pointwise(
        "mgu_gate",
        [](auto x_f, auto h_f, auto h) {
            auto forget = named("forget", sigmoid(x_f + h_f));
            return std::tuple{forget * h, forget};
        },
        x_f, h_f, Columns<T>(h));
    const Var<T> h_n = this->weights_.project_hidden(forget_h, 1, 1); // U_n (f h) + b_hn, (B, H)
    const auto [new_h] = pointwise(
        "mgu_state",
        [](auto x_n, auto h_n, auto forget, auto h) {
            return (1.0 - forget) * h + forget * named("candidate", tanh(x_n + h_n));
        },
        x_n, h_n, forget, Columns<T>(h));
    return {new_h};
}

template class ChoGRUCell<float>;
template class ChoGRUCell<double>;
template class MGUCell<float>;
template class MGUCell<double>;

} // namespace cellgrad::nn
