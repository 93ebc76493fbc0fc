#include "cellgrad/nn/cells.hpp"

#include <cmath>

#include "cellgrad/nn/linear.hpp"
#include "cellgrad/pointwise.hpp"

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
                              bool bias, const std::string& suffix, std::mt19937_64& rng,
                              std::size_t recurrent_size)
    : input_size(input_size_), hidden_size(hidden_size_),
      weight_ih("weight_ih" + suffix,
                uniform_tensor<T>(gates * hidden_size_, input_size_,
                                  1.0 / std::sqrt(double(hidden_size_)), rng)),
      weight_hh("weight_hh" + suffix,
                uniform_tensor<T>(gates * hidden_size_,
                                  recurrent_size == 0 ? hidden_size_ : recurrent_size,
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
Var<T> GatedWeights<T>::project_hidden(const Var<T>& h, std::size_t first,
                                       std::size_t count) const {
    const std::size_t H = hidden_size;
    const Var<T> bias =
        bias_hh_var_.valid() ? slice_cols(bias_hh_var_, first * H, (first + count) * H) : Var<T>{};
    return linear(h, slice_rows(weight_hh_var_, first * H, (first + count) * H), bias);
}

template <class T>
Var<T> GatedWeights<T>::gates(const StepInput<T>& event, const Var<T>& h) const {
    if (event.note_read(true)) {
        return linear_add_rows_in_place(h, weight_hh_var_, bias_hh_var_, event.source,
                                        event.first_row);
    }
    return event.rows.empty()
               ? linear_add_rows(h, weight_hh_var_, bias_hh_var_, event.source, event.first_row)
               : linear_add_rows(h, weight_hh_var_, bias_hh_var_, event.source, event.rows);
}

// ---- RNNCell ---------------------------------------------------------------------------------

template <class T>
RNNCell<T>::RNNCell(std::size_t input_size, std::size_t hidden_size, std::mt19937_64& rng,
                    Nonlinearity nonlinearity, bool bias, const std::string& suffix)
    : GatedCell<T>(input_size, hidden_size, 1, bias, suffix, rng), nonlinearity_(nonlinearity) {}

template <class T>
std::vector<Var<T>> RNNCell<T>::step(const StepInput<T>& event, std::span<const Var<T>> state) {
    const Var<T> pre_activation = this->weights_.gates(event, state[0]); // (B, H)
    if (nonlinearity_ == Nonlinearity::relu) {
        return {pointwise(
            "rnn_relu", [](auto a) { return relu(a); }, pre_activation)[0]};
    }
    return {pointwise(
        "rnn_tanh", [](auto a) { return tanh(a); }, pre_activation)[0]};
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
std::vector<Var<T>> LSTMCell<T>::step(const StepInput<T>& event, std::span<const Var<T>> state) {
    const Var<T>& short_term = state[0]; // h
    const Var<T>& long_term = state[1];  // c
    // The four gates' pre-activations from the event and the short-term memory: (B, 4H) [i|f|g|o].
    const auto [a_i, a_f, a_g, a_o] = split_columns<4>(this->weights_.gates(event, short_term));
    const auto [new_short_term, new_long_term] =
        pointwise("lstm", lstm_gates, a_i, a_f, a_g, a_o, Columns<T>(long_term));
    return {new_short_term, new_long_term};
}

// ---- GRUCell ---------------------------------------------------------------------------------

template <class T>
GRUCell<T>::GRUCell(std::size_t input_size, std::size_t hidden_size, std::mt19937_64& rng,
                    bool bias, const std::string& suffix)
    : GatedCell<T>(input_size, hidden_size, 3, bias, suffix, rng) {}

template <class T>
std::vector<Var<T>> GRUCell<T>::step(const StepInput<T>& event, std::span<const Var<T>> state) {
    const Var<T>& h = state[0];
    const auto [x_r, x_z, x_n] = split_columns<3>(event.var());                      // (B, 3H)
    const auto [h_r, h_z, h_n] = split_columns<3>(this->weights_.project_hidden(h)); // (B, 3H)
    return {pointwise("gru", gru_gates, x_r, x_z, x_n, h_r, h_z, h_n, Columns<T>(h))[0]};
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
