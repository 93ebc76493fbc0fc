#include "cellgrad/nn/cells.hpp"

#include <cmath>

#include "cellgrad/fused.hpp"
#include "cellgrad/nn/linear.hpp"

namespace cellgrad::nn {

template <class T>
Tensor<T> uniform_tensor(std::size_t rows, std::size_t cols, double bound, std::mt19937_64& rng) {
    std::uniform_real_distribution<double> uniform(-bound, bound);
    Tensor<T> tensor(rows, cols);
    for (std::size_t i = 0; i < tensor.size(); ++i) {
        tensor.data()[i] = static_cast<T>(uniform(rng));
    }
    return tensor;
}

template <class T>
Tensor<T> normal_tensor(std::size_t rows, std::size_t cols, double stddev, std::mt19937_64& rng) {
    std::normal_distribution<double> normal(0.0, stddev);
    Tensor<T> tensor(rows, cols);
    for (std::size_t i = 0; i < tensor.size(); ++i) {
        tensor.data()[i] = static_cast<T>(normal(rng));
    }
    return tensor;
}

// ---- Linear, Embedding -----------------------------------------------------------------------

template <class T>
Linear<T>::Linear(std::size_t in_features, std::size_t out_features, std::mt19937_64& rng,
                  bool with_bias, const std::string& prefix)
    : weight(prefix + "weight", uniform_tensor<T>(out_features, in_features,
                                                  1.0 / std::sqrt(double(in_features)), rng)) {
    if (with_bias) {
        bias.emplace(prefix + "bias",
                     uniform_tensor<T>(1, out_features, 1.0 / std::sqrt(double(in_features)), rng),
                     true);
    }
}

template <class T>
Var<T> Linear<T>::forward(const Var<T>& x) {
    Tape<T>& tape = x.tape();
    return linear(x, tape.param(weight), bias ? tape.param(*bias) : Var<T>{});
}

template <class T>
std::vector<Parameter<T>*> Linear<T>::parameters() {
    std::vector<Parameter<T>*> list{&weight};
    if (bias) {
        list.push_back(&*bias);
    }
    return list;
}

template <class T>
Embedding<T>::Embedding(std::size_t num_embeddings, std::size_t dim, std::mt19937_64& rng,
                        const std::string& prefix)
    : weight(prefix + "weight", normal_tensor<T>(num_embeddings, dim, 1.0, rng)) {}

template <class T>
Var<T> Embedding<T>::forward(Tape<T>& tape, std::span<const std::int32_t> indices) {
    return gather_rows(tape.param(weight), indices);
}

// ---- GatedWeights ----------------------------------------------------------------------------

template <class T>
GatedWeights<T>::GatedWeights(std::size_t input_size_, std::size_t hidden_size_, std::size_t gates,
                              bool bias, const std::string& suffix, std::mt19937_64& rng)
    : input_size(input_size_), hidden_size(hidden_size_),
      weight_ih("weight_ih" + suffix,
                uniform_tensor<T>(gates * hidden_size_, input_size_,
                                  1.0 / std::sqrt(double(hidden_size_)), rng)),
      weight_hh("weight_hh" + suffix,
                uniform_tensor<T>(gates * hidden_size_, hidden_size_,
                                  1.0 / std::sqrt(double(hidden_size_)), rng)) {
    if (hidden_size_ == 0) {
        throw Error("recurrent cell: hidden_size must be at least 1");
    }
    if (bias) {
        const double bound = 1.0 / std::sqrt(double(hidden_size_));
        bias_ih.emplace("bias_ih" + suffix, uniform_tensor<T>(1, gates * hidden_size_, bound, rng),
                        true);
        bias_hh.emplace("bias_hh" + suffix, uniform_tensor<T>(1, gates * hidden_size_, bound, rng),
                        true);
    }
}

template <class T>
std::vector<Parameter<T>*> GatedWeights<T>::parameters() {
    std::vector<Parameter<T>*> list{&weight_ih, &weight_hh};
    if (bias_ih) {
        list.push_back(&*bias_ih);
        list.push_back(&*bias_hh);
    }
    return list;
}

template <class T>
void GatedWeights<T>::attach(Tape<T>& tape) {
    weight_ih_var_ = tape.param(weight_ih);
    weight_hh_var_ = tape.param(weight_hh);
    bias_ih_var_ = bias_ih ? tape.param(*bias_ih) : Var<T>{};
    bias_hh_var_ = bias_hh ? tape.param(*bias_hh) : Var<T>{};
}

template <class T>
Var<T> GatedWeights<T>::project_inputs(const Var<T>& x) const {
    return linear(x, weight_ih_var_, bias_ih_var_); // (T*B, G*H)
}

template <class T>
Var<T> GatedWeights<T>::project_hidden(const Var<T>& h) const {
    return linear(h, weight_hh_var_, bias_hh_var_); // (B, G*H)
}

template <class T>
Var<T> GatedWeights<T>::project_hidden_plus(const Var<T>& h, const Var<T>& source,
                                            std::size_t first_row,
                                            std::span<const std::int32_t> rows) const {
    return rows.empty() ? linear_add_rows(h, weight_hh_var_, bias_hh_var_, source, first_row)
                        : linear_add_rows(h, weight_hh_var_, bias_hh_var_, source, rows);
}

// ---- RNNCell ---------------------------------------------------------------------------------

template <class T>
RNNCell<T>::RNNCell(std::size_t input_size, std::size_t hidden_size, std::mt19937_64& rng,
                    Nonlinearity nonlinearity, bool bias, const std::string& suffix)
    : GatedCell<T>(input_size, hidden_size, 1, bias, suffix, rng), nonlinearity_(nonlinearity) {}

template <class T>
Var<T> RNNCell<T>::activate(const Var<T>& pre_activation) const {
    return nonlinearity_ == Nonlinearity::tanh ? tanh(pre_activation) : relu(pre_activation);
}

template <class T>
std::vector<Var<T>> RNNCell<T>::step(const Var<T>& projected_input, std::span<const Var<T>> state) {
    const Var<T> pre_activation =
        add(projected_input, this->weights_.project_hidden(state[0])); // (B, H)
    return {activate(pre_activation)};
}

template <class T>
std::vector<Var<T>> RNNCell<T>::step_rows(const Var<T>& source, std::size_t first_row,
                                          std::span<const std::int32_t> rows, std::size_t batch,
                                          std::span<const Var<T>> state) {
    if (!this->fused_) {
        return Cell<T>::step_rows(source, first_row, rows, batch, state);
    }
    const Var<T> pre_activation =
        this->weights_.project_hidden_plus(state[0], source, first_row, rows); // (B, H)
    return {activate(pre_activation)};
}

// ---- LSTMCell --------------------------------------------------------------------------------

template <class T>
LSTMCell<T>::LSTMCell(std::size_t input_size, std::size_t hidden_size, std::mt19937_64& rng,
                      bool bias, double forget_bias, const std::string& suffix)
    : GatedCell<T>(input_size, hidden_size, 4, bias, suffix, rng) {
    if (forget_bias != 0.0) {
        if (!bias) {
            throw Error("LSTMCell: forget_bias needs bias = true");
        }
        for (std::size_t j = hidden_size; j < 2 * hidden_size; ++j) {
            this->weights_.bias_ih->value(0, j) += static_cast<T>(forget_bias);
        }
    }
}

template <class T>
std::vector<Var<T>> LSTMCell<T>::step(const Var<T>& projected_input,
                                      std::span<const Var<T>> state) {
    if (!this->fused_) {
        return step_composed(projected_input, state);
    }
    const Var<T> gates = add(projected_input, this->weights_.project_hidden(state[0])); // (B, 4H)
    return fused_gates(gates, state[1]);
}

template <class T>
std::vector<Var<T>> LSTMCell<T>::step_rows(const Var<T>& source, std::size_t first_row,
                                           std::span<const std::int32_t> rows, std::size_t batch,
                                           std::span<const Var<T>> state) {
    if (!this->fused_) {
        return Cell<T>::step_rows(source, first_row, rows, batch, state);
    }
    const Var<T> gates = this->weights_.project_hidden_plus(state[0], source, first_row, rows);
    return fused_gates(gates, state[1]); // gates (B, 4H)
}

template <class T>
std::vector<Var<T>> LSTMCell<T>::fused_gates(const Var<T>& gates, const Var<T>& long_term_memory) {
    const Var<T> new_long_term_memory = lstm_cell_state(gates, long_term_memory); // remember gate
    const Var<T> new_short_term_memory = lstm_hidden_state(gates, new_long_term_memory); // use
    return {new_short_term_memory, new_long_term_memory};
}

template <class T>
std::vector<Var<T>> LSTMCell<T>::step_composed(const Var<T>& projected_input,
                                               std::span<const Var<T>> state) {
    const std::size_t H = this->weights_.hidden_size;
    const Var<T>& short_term_memory = state[0]; // h
    const Var<T>& long_term_memory = state[1];  // c
    // All four gates' pre-activations from the event and the short-term memory: (B, 4H) =
    // [i|f|g|o].
    const Var<T> gates = add(projected_input, this->weights_.project_hidden(short_term_memory));
    const Var<T> input_gate = sigmoid(slice_cols(gates, 0, H));
    const Var<T> forget_gate = sigmoid(slice_cols(gates, H, 2 * H));
    const Var<T> candidate = tanh(slice_cols(gates, 2 * H, 3 * H));
    const Var<T> output_gate = sigmoid(slice_cols(gates, 3 * H, 4 * H));
    // Forget gate: how much of the long-term memory is kept.
    const Var<T> kept_memory = mul(forget_gate, long_term_memory);
    // Learn gate: the new information worth learning, input gate times candidate.
    const Var<T> learned = mul(input_gate, candidate);
    // Remember gate: the new long-term memory, what was kept plus what was learned.
    const Var<T> new_long_term_memory = add(kept_memory, learned);
    // Use gate: the new short-term memory, the output gate applied to the squashed memory.
    const Var<T> new_short_term_memory = mul(output_gate, tanh(new_long_term_memory));
    return {new_short_term_memory, new_long_term_memory};
}

// ---- GRUCell ---------------------------------------------------------------------------------

template <class T>
GRUCell<T>::GRUCell(std::size_t input_size, std::size_t hidden_size, std::mt19937_64& rng,
                    bool bias, const std::string& suffix)
    : GatedCell<T>(input_size, hidden_size, 3, bias, suffix, rng) {}

template <class T>
std::vector<Var<T>> GRUCell<T>::step(const Var<T>& projected_input, std::span<const Var<T>> state) {
    if (!this->fused_) {
        return step_composed(projected_input, state);
    }
    const Var<T> hidden_part = this->weights_.project_hidden(state[0]); // (B, 3H)
    return {gru_gates(projected_input, hidden_part, state[0])};
}

template <class T>
std::vector<Var<T>> GRUCell<T>::step_composed(const Var<T>& projected_input,
                                              std::span<const Var<T>> state) {
    const std::size_t H = this->weights_.hidden_size;
    const Var<T>& h = state[0];
    const Var<T> hidden_part = this->weights_.project_hidden(h); // (B, 3H) = [r|z|n]
    // Reset gate: how much of the old state the candidate may look at.
    const Var<T> reset_gate =
        sigmoid(add(slice_cols(projected_input, 0, H), slice_cols(hidden_part, 0, H)));
    // Update gate: how much of the old state is kept (the LSTM's forget gate; 1 - z is its input
    // gate).
    const Var<T> update_gate =
        sigmoid(add(slice_cols(projected_input, H, 2 * H), slice_cols(hidden_part, H, 2 * H)));
    // Candidate state from the event and the reset-filtered old state.
    const Var<T> candidate = tanh(add(slice_cols(projected_input, 2 * H, 3 * H),
                                      mul(reset_gate, slice_cols(hidden_part, 2 * H, 3 * H))));
    // New state: h' = (1 - z) * n + z * h.
    const Var<T> new_h = add(mul(one_minus(update_gate), candidate), mul(update_gate, h));
    return {new_h};
}

#define CELLGRAD_INSTANTIATE(T)                                                                    \
    template Tensor<T> uniform_tensor<T>(std::size_t, std::size_t, double, std::mt19937_64&);      \
    template Tensor<T> normal_tensor<T>(std::size_t, std::size_t, double, std::mt19937_64&);       \
    template class Linear<T>;                                                                      \
    template class Embedding<T>;                                                                   \
    template class GatedWeights<T>;                                                                \
    template class GatedCell<T>;                                                                   \
    template class RNNCell<T>;                                                                     \
    template class LSTMCell<T>;                                                                    \
    template class GRUCell<T>;
CELLGRAD_INSTANTIATE(float)
CELLGRAD_INSTANTIATE(double)
#undef CELLGRAD_INSTANTIATE

} // namespace cellgrad::nn
