#include "cellgrad/nn/cells/registry.hpp"

#include <fmt/format.h>

namespace cellgrad::nn {

const std::vector<std::string>& cell_names() {
    static const std::vector<std::string> names{
        "rnn",           "lstm",
        "gru",           "lesson-lstm",
        "peephole-lstm", "concat-peephole-lstm",
        "cifg-lstm",     "nfg-lstm",
        "noaf-lstm",     "layernorm-lstm",
        "cho-gru",       "mgu",
    };
    return names;
}

namespace {

/// The error for a name that is not in cell_names().
Error unknown_cell(const std::string& name) {
    return Error(
        fmt::format("unknown cell '{}'; known cells: {}", name, fmt::join(cell_names(), ", ")));
}

} // namespace

CellShape cell_shape(const std::string& name) {
    if (name == "rnn") {
        return {1, 1};
    }
    if (name == "gru" || name == "cho-gru" || name == "cifg-lstm" || name == "nfg-lstm") {
        return {3, 1};
    }
    if (name == "mgu") {
        return {2, 1};
    }
    if (name == "concat-peephole-lstm") {
        return {4, 2};
    }
    if (name == "lstm" || name == "lesson-lstm" || name == "peephole-lstm" || name == "noaf-lstm" ||
        name == "layernorm-lstm") {
        return {4, 1};
    }
    throw unknown_cell(name);
}

namespace {

/// A Recurrent of cells of type C (constructor: in, H, rng, forget_bias, suffix).
template <class C, class T>
std::unique_ptr<Recurrent<T>> layer_of(const std::string& name, const RecurrentOptions& options,
                                       std::mt19937_64& rng) {
    if (!options.bias) {
        throw Error(fmt::format("{}: this cell always has biases (bias = false is for rnn, lstm "
                                "and gru)",
                                name));
    }
    return std::make_unique<Recurrent<T>>(
        name, options, [&](std::size_t input_size, std::size_t layer, bool reverse) {
            return std::make_unique<C>(input_size, options.hidden_size, rng, options.forget_bias,
                                       layer_suffix(layer, reverse));
        });
}

} // namespace

template <class T>
std::unique_ptr<Recurrent<T>>
make_recurrent(const std::string& name, const RecurrentOptions& options, std::mt19937_64& rng) {
    if (name == "rnn") {
        return std::make_unique<RNN<T>>(options, rng);
    }
    if (name == "lstm") {
        return std::make_unique<LSTM<T>>(options, rng);
    }
    if (name == "gru") {
        return std::make_unique<GRU<T>>(options, rng);
    }
    if (name == "lesson-lstm") {
        return layer_of<LessonLSTMCell<T>, T>(name, options, rng);
    }
    if (name == "peephole-lstm") {
        return layer_of<PeepholeLSTMCell<T>, T>(name, options, rng);
    }
    if (name == "concat-peephole-lstm") {
        return layer_of<ConcatPeepholeLSTMCell<T>, T>(name, options, rng);
    }
    if (name == "cifg-lstm") {
        return layer_of<CIFGLSTMCell<T>, T>(name, options, rng);
    }
    if (name == "nfg-lstm") {
        return layer_of<NFGLSTMCell<T>, T>(name, options, rng);
    }
    if (name == "noaf-lstm") {
        return layer_of<NOAFLSTMCell<T>, T>(name, options, rng);
    }
    if (name == "layernorm-lstm") {
        return layer_of<LayerNormLSTMCell<T>, T>(name, options, rng);
    }
    if (name == "cho-gru") {
        return layer_of<ChoGRUCell<T>, T>(name, options, rng);
    }
    if (name == "mgu") {
        return layer_of<MGUCell<T>, T>(name, options, rng);
    }
    throw Error(
        fmt::format("unknown cell '{}'; known cells: {}", name, fmt::join(cell_names(), ", ")));
}

template std::unique_ptr<Recurrent<float>>
make_recurrent(const std::string&, const RecurrentOptions&, std::mt19937_64&);
template std::unique_ptr<Recurrent<double>>
make_recurrent(const std::string&, const RecurrentOptions&, std::mt19937_64&);

} // namespace cellgrad::nn
