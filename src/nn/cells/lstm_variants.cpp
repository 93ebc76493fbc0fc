// The LSTM variants of the lesson and of Greff et al. 2017, each its GEMMs and pointwise nodes.

#include <cmath>

#include "cellgrad/nn/cells/variants.hpp"

namespace cellgrad::nn {

template <class T>
std::vector<Parameter<T>*> VariantCell<T>::parameters() {
    std::vector<Parameter<T>*> list = GatedCell<T>::parameters();
    for (const auto& parameter : own_) {
        list.push_back(parameter.get());
    }
    return list;
}

template <class T>
void VariantCell<T>::attach(Tape<T>& tape) {
    GatedCell<T>::attach(tape);
    own_vars_.clear();
    for (const auto& parameter : own_) {
        own_vars_.push_back(tape.param(*parameter));
    }
}

template <class T>
std::size_t VariantCell<T>::add_parameter(const std::string& name, Tensor<T> value,
                                          bool is_vector) {
    own_.push_back(std::make_unique<Parameter<T>>(name + suffix_, std::move(value), is_vector));
    return own_.size() - 1;
}

namespace {

/// U(-1/sqrt(H), 1/sqrt(H)) values of shape (rows, cols), PyTorch's init.
template <class T>
Tensor<T> init(std::size_t rows, std::size_t cols, std::size_t H, std::mt19937_64& rng) {
    return uniform_tensor<T>(rows, cols, 1.0 / std::sqrt(double(H)), rng);
}

/// Adds `forget_bias` to block `block` of a (1, G*H) bias.
template <class T>
void add_forget_bias(Parameter<T>& bias, std::size_t block, std::size_t H, double forget_bias) {
    for (std::size_t j = block * H; j < (block + 1) * H; ++j) {
        bias.value(0, j) += static_cast<T>(forget_bias);
    }
}

} // namespace

// ---- the lesson's LSTM -------------------------------------------------------------------------

template <class T>
LessonLSTMCell<T>::LessonLSTMCell(std::size_t in, std::size_t H, std::mt19937_64& rng,
                                  double forget_bias, const std::string& suffix)
    : VariantCell<T>(in, H, 4, true, suffix, rng) {
    add_forget_bias(*this->weights_.bias_ih, 2, H, forget_bias);
    this->add_parameter("weight_u", init<T>(H, H, H, rng), false);
    this->add_parameter("bias_u", init<T>(1, H, H, rng), true);
}

template <class T>
std::vector<Var<T>> LessonLSTMCell<T>::step(const StepInput<T>& event,
                                            std::span<const Var<T>> state) {
    const Var<T>& short_term = state[0];
    const Var<T>& long_term = state[1];
    const auto [a_n, a_i, a_f, a_v] = split_columns<4>(this->weights_.gates(event, short_term));
    const auto [kept, new_long_term] = pointwise(
        "lesson_remember",
        [](auto a_n, auto a_i, auto a_f, auto long_term) {
            auto kept = named("forget", sigmoid(a_f)) * long_term;                   // forget
            auto learned = named("learn", tanh(a_n)) * named("input", sigmoid(a_i)); // learn
            return std::tuple{kept, kept + learned};                                 // remember
        },
        a_n, a_i, a_f, Columns<T>(long_term));
    const Var<T> a_u = linear(kept, this->own(0), this->own(1)); // W_u (LTM f) + b_u, (B, H)
    const auto [new_short_term] = pointwise(
        "lesson_use", [](auto a_u, auto a_v) { return named("use", tanh(a_u)) * sigmoid(a_v); },
        a_u, a_v);
    return {new_short_term, new_long_term};
}

// ---- peepholes
// -----------------------------------------------------------------------------------

template <class T>
PeepholeLSTMCell<T>::PeepholeLSTMCell(std::size_t in, std::size_t H, std::mt19937_64& rng,
                                      double forget_bias, const std::string& suffix)
    : VariantCell<T>(in, H, 4, true, suffix, rng) {
    add_forget_bias(*this->weights_.bias_ih, 1, H, forget_bias);
    this->add_parameter("weight_peephole", init<T>(1, 3 * H, H, rng), true);
}

template <class T>
std::vector<Var<T>> PeepholeLSTMCell<T>::step(const StepInput<T>& event,
                                              std::span<const Var<T>> state) {
    const auto [a_i, a_f, a_g, a_o] = split_columns<4>(this->weights_.gates(event, state[0]));
    const auto [p_i, p_f, p_o] = split_columns<3>(this->own(0)); // (1, H) each
    const auto [h, c] = pointwise(
        "peephole_lstm",
        [](auto a_i, auto a_f, auto a_g, auto a_o, auto c, auto p_i, auto p_f, auto p_o) {
            auto forget = named("forget", sigmoid(a_f + p_f * c)); // looks at c_{t-1}
            auto input = named("input", sigmoid(a_i + p_i * c));
            auto c_new = forget * c + input * named("candidate", tanh(a_g));
            auto output = named("output", sigmoid(a_o + p_o * c_new)); // looks at c_t
            return std::tuple{output * tanh(c_new), c_new};
        },
        a_i, a_f, a_g, a_o, Columns<T>(state[1]), p_i, p_f, p_o);
    return {h, c};
}

template <class T>
ConcatPeepholeLSTMCell<T>::ConcatPeepholeLSTMCell(std::size_t in, std::size_t H,
                                                  std::mt19937_64& rng, double forget_bias,
                                                  const std::string& suffix)
    : VariantCell<T>(in, H, 4, true, suffix, rng, 2 * H) {
    add_forget_bias(*this->weights_.bias_ih, 1, H, forget_bias);
}

template <class T>
std::vector<Var<T>> ConcatPeepholeLSTMCell<T>::step(const StepInput<T>& event,
                                                    std::span<const Var<T>> state) {
    const Var<T> memories[] = {state[0], state[1]}; // [STM | LTM], (B, 2H)
    const Var<T> gates = this->weights_.gates(event, concat_cols<T>(memories));
    const auto [a_i, a_f, a_g, a_o] = split_columns<4>(gates);
    const auto [h, c] = pointwise("lstm", lstm_gates, a_i, a_f, a_g, a_o, Columns<T>(state[1]));
    return {h, c};
}

// ---- coupled and missing forget gates -----------------------------------------------------------

template <class T>
CIFGLSTMCell<T>::CIFGLSTMCell(std::size_t in, std::size_t H, std::mt19937_64& rng,
                              double forget_bias, const std::string& suffix)
    : VariantCell<T>(in, H, 3, true, suffix, rng) {
    add_forget_bias(*this->weights_.bias_ih, 0, H, forget_bias);
}

template <class T>
std::vector<Var<T>> CIFGLSTMCell<T>::step(const StepInput<T>& event,
                                          std::span<const Var<T>> state) {
    const auto [a_f, a_g, a_o] = split_columns<3>(this->weights_.gates(event, state[0]));
    const auto [h, c] = pointwise(
        "cifg_lstm",
        [](auto a_f, auto a_g, auto a_o, auto c) {
            auto forget = named("forget", sigmoid(a_f)); // the input gate is 1 - forget
            auto c_new = forget * c + (1.0 - forget) * named("candidate", tanh(a_g));
            return std::tuple{named("output", sigmoid(a_o)) * tanh(c_new), c_new};
        },
        a_f, a_g, a_o, Columns<T>(state[1]));
    return {h, c};
}

template <class T>
NFGLSTMCell<T>::NFGLSTMCell(std::size_t in, std::size_t H, std::mt19937_64& rng, double,
                            const std::string& suffix)
    : VariantCell<T>(in, H, 3, true, suffix, rng) {}

template <class T>
std::vector<Var<T>> NFGLSTMCell<T>::step(const StepInput<T>& event, std::span<const Var<T>> state) {
    const auto [a_i, a_g, a_o] = split_columns<3>(this->weights_.gates(event, state[0]));
    const auto [h, c] = pointwise(
        "nfg_lstm",
        [](auto a_i, auto a_g, auto a_o, auto c) {
            auto c_new = c + named("input", sigmoid(a_i)) * named("candidate", tanh(a_g));
            return std::tuple{named("output", sigmoid(a_o)) * tanh(c_new), c_new};
        },
        a_i, a_g, a_o, Columns<T>(state[1]));
    return {h, c};
}

template <class T>
NOAFLSTMCell<T>::NOAFLSTMCell(std::size_t in, std::size_t H, std::mt19937_64& rng,
                              double forget_bias, const std::string& suffix)
    : VariantCell<T>(in, H, 4, true, suffix, rng) {
    add_forget_bias(*this->weights_.bias_ih, 1, H, forget_bias);
}

template <class T>
std::vector<Var<T>> NOAFLSTMCell<T>::step(const StepInput<T>& event,
                                          std::span<const Var<T>> state) {
    const auto [a_i, a_f, a_g, a_o] = split_columns<4>(this->weights_.gates(event, state[0]));
    const auto [h, c] = pointwise(
        "noaf_lstm",
        [](auto a_i, auto a_f, auto a_g, auto a_o, auto c) {
            auto c_new = named("forget", sigmoid(a_f)) * c +
                         named("input", sigmoid(a_i)) * named("candidate", tanh(a_g));
            return std::tuple{named("output", sigmoid(a_o)) * c_new, c_new}; // no tanh on c'
        },
        a_i, a_f, a_g, a_o, Columns<T>(state[1]));
    return {h, c};
}

// ---- layer normalisation
// -------------------------------------------------------------------------

template <class T>
LayerNormLSTMCell<T>::LayerNormLSTMCell(std::size_t in, std::size_t H, std::mt19937_64& rng,
                                        double forget_bias, const std::string& suffix)
    : VariantCell<T>(in, H, 4, false, suffix, rng) {
    this->add_parameter("ln_gain_ih", Tensor<T>(1, 4 * H, T(1)), true);
    this->add_parameter("ln_gain_hh", Tensor<T>(1, 4 * H, T(1)), true);
    Tensor<T> bias(1, 4 * H);
    for (std::size_t j = H; j < 2 * H; ++j) {
        bias(0, j) = static_cast<T>(forget_bias);
    }
    this->add_parameter("bias", std::move(bias), true);
    this->add_parameter("ln_gain_c", Tensor<T>(1, H, T(1)), true);
    this->add_parameter("ln_bias_c", Tensor<T>(1, H), true);
}

template <class T>
Var<T> LayerNormLSTMCell<T>::project_inputs(const Var<T>& x) {
    return normalize_rows(this->weights_.project_inputs(x)); // LN(x W_ih^T), (T*B, 4H)
}

/// A gate's pre-activation from the normalised event and STM parts: g_x x + g_h h + b.
inline constexpr auto normalised_gate = [](auto x, auto h, auto g_x, auto g_h, auto b) {
    return g_x * x + g_h * h + b;
};

template <class T>
std::vector<Var<T>> LayerNormLSTMCell<T>::step(const StepInput<T>& event,
                                               std::span<const Var<T>> state) {
    const auto x = split_columns<4>(event.var()); // LN(x W_ih^T), (B, 4H) as i, f, g, o
    const auto h = split_columns<4>(normalize_rows(this->weights_.project_hidden(state[0])));
    const auto g_x = split_columns<4>(this->own(0)), g_h = split_columns<4>(this->own(1));
    const auto b = split_columns<4>(this->own(2));
    const auto [c] = pointwise(
        "layernorm_remember",
        [](auto x_i, auto x_f, auto x_g, auto h_i, auto h_f, auto h_g, auto gx_i, auto gx_f,
           auto gx_g, auto gh_i, auto gh_f, auto gh_g, auto b_i, auto b_f, auto b_g, auto c) {
            auto forget = named("forget", sigmoid(normalised_gate(x_f, h_f, gx_f, gh_f, b_f)));
            auto input = named("input", sigmoid(normalised_gate(x_i, h_i, gx_i, gh_i, b_i)));
            auto candidate = named("candidate", tanh(normalised_gate(x_g, h_g, gx_g, gh_g, b_g)));
            return forget * c + input * candidate;
        },
        x[0], x[1], x[2], h[0], h[1], h[2], g_x[0], g_x[1], g_x[2], g_h[0], g_h[1], g_h[2], b[0],
        b[1], b[2], Columns<T>(state[1]));
    const auto [new_h] = pointwise(
        "layernorm_use",
        [](auto x_o, auto h_o, auto gx_o, auto gh_o, auto b_o, auto c, auto gain, auto bias) {
            auto output = named("output", sigmoid(normalised_gate(x_o, h_o, gx_o, gh_o, b_o)));
            return output * tanh(gain * c + bias);
        },
        x[3], h[3], g_x[3], g_h[3], b[3], normalize_rows(c), this->own(3), this->own(4));
    return {new_h, c};
}

#define CELLGRAD_INSTANTIATE(T)                                                                    \
    template class VariantCell<T>;                                                                 \
    template class LessonLSTMCell<T>;                                                              \
    template class PeepholeLSTMCell<T>;                                                            \
    template class ConcatPeepholeLSTMCell<T>;                                                      \
    template class CIFGLSTMCell<T>;                                                                \
    template class NFGLSTMCell<T>;                                                                 \
    template class NOAFLSTMCell<T>;                                                                \
    template class LayerNormLSTMCell<T>;
CELLGRAD_INSTANTIATE(float)
CELLGRAD_INSTANTIATE(double)
#undef CELLGRAD_INSTANTIATE

} // namespace cellgrad::nn
