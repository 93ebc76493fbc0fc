#include "cellgrad/nn/recurrent.hpp"

#include <string_view>

#include "checkpoint.hpp"

namespace cellgrad::nn {

std::string layer_suffix(std::size_t layer, bool reverse) {
    return fmt::format("_l{}{}", layer, reverse ? "_reverse" : "");
}

template <class T>
Recurrent<T>::Recurrent(std::string kind, RecurrentOptions options, const CellFactory<T>& factory)
    : kind_(std::move(kind)), options_(std::move(options)), dropout_rng_(options_.dropout_seed) {
    if (options_.num_layers == 0 || options_.hidden_size == 0 || options_.input_size == 0) {
        throw Error(fmt::format("{}: input_size, hidden_size and num_layers must be >= 1, got {}, "
                                "{}, {}",
                                kind_, options_.input_size, options_.hidden_size,
                                options_.num_layers));
    }
    if (options_.dropout < 0.0 || options_.dropout >= 1.0) {
        throw Error(fmt::format("{}: dropout must be in [0, 1), got {}", kind_, options_.dropout));
    }
    for (std::size_t layer = 0; layer < options_.num_layers; ++layer) {
        const std::size_t input_size =
            layer == 0 ? options_.input_size : options_.hidden_size * directions();
        for (std::size_t direction = 0; direction < directions(); ++direction) {
            cells_.push_back(factory(input_size, layer, direction == 1));
            Cell<T>& made = *cells_.back();
            for (Parameter<T>* parameter : made.parameters()) {
                parameter->name = options_.parameter_prefix + parameter->name;
            }
            if (made.input_size() != input_size || made.hidden_size() != options_.hidden_size) {
                throw Error(fmt::format("{}: the cell factory made a cell of input {} and hidden "
                                        "{} for layer {}, needed {} and {}",
                                        kind_, made.input_size(), made.hidden_size(), layer,
                                        input_size, options_.hidden_size));
            }
        }
    }
}

template <class T>
std::vector<Parameter<T>*> Recurrent<T>::parameters() {
    std::vector<Parameter<T>*> list;
    for (auto& cell : cells_) {
        for (Parameter<T>* parameter : cell->parameters()) {
            list.push_back(parameter);
        }
    }
    return list;
}

template <class T>
Cell<T>& Recurrent<T>::cell(std::size_t layer, bool reverse) {
    const std::size_t index = layer * directions() + (reverse ? 1 : 0);
    if (layer >= options_.num_layers || (reverse && !options_.bidirectional)) {
        throw Error(
            fmt::format("{}: no cell for layer {}{}", kind_, layer, reverse ? " (reverse)" : ""));
    }
    return *cells_[index];
}

template <class T>
RecurrentStateTensors<T> Recurrent<T>::zero_state(std::size_t batch) const {
    return RecurrentStateTensors<T>(
        cells_.size(),
        std::vector<Tensor<T>>(state_size(), Tensor<T>(batch, options_.hidden_size)));
}

template <class T>
RecurrentOutput<T> Recurrent<T>::forward(const Var<T>& input, std::size_t batch,
                                         const RecurrentState<T>& initial,
                                         std::span<const std::int32_t> lengths) {
    const Shape shape = input.shape();
    if (batch == 0 || shape.rows == 0 || shape.rows % batch != 0 ||
        shape.cols != options_.input_size) {
        throw Error(fmt::format("{}: input {} must be (T*B, {}) with T >= 1 steps of B = {} "
                                "sequences stacked time-major",
                                kind_, shape, options_.input_size, batch));
    }
    // Embedded tokens (a row gather of a table with fewer rows than the input): project the
    // table's rows once and let each step read its tokens' rows of the projection. The same values
    // and gradients, with V-row instead of T*B-row input GEMMs.
    Tape<T>& tape = input.tape();
    const Node<T>& node = tape.node(input.id());
    if (std::string_view(node.op) == "gather_rows" && node.indices != nullptr) {
        const Var<T> table(&tape, tape.inputs(input.id())[0]);
        if (table.rows() < shape.rows) {
            return run(nullptr, &table, std::span<const std::int32_t>(node.indices, shape.rows),
                       batch, initial, lengths);
        }
    }
    return run(&input, nullptr, {}, batch, initial, lengths);
}

template <class T>
RecurrentOutput<T> Recurrent<T>::run(const Var<T>* input, const Var<T>* table,
                                     std::span<const std::int32_t> tokens, std::size_t batch,
                                     const RecurrentState<T>& initial,
                                     std::span<const std::int32_t> lengths) {
    Tape<T>& tape = input != nullptr ? input->tape() : table->tape();
    const std::size_t H = options_.hidden_size;
    const std::size_t steps = (input != nullptr ? input->shape().rows : tokens.size()) / batch;
    // Project the table's rows (and let each step read its tokens' rows of the projection) only
    // when the table has fewer rows than the input.
    // (Checkpointed segments take plain input rows: they gather the tokens' embeddings.)
    const bool checkpointed = options_.checkpoint_steps > 0;
    const bool project_table =
        !checkpointed && table != nullptr && table->shape().rows < tokens.size();
    if (checkpointed && !lengths.empty()) {
        throw Error(fmt::format("{}: checkpoint_steps does not support lengths; run without "
                                "lengths or without checkpointing",
                                kind_));
    }
    if (!lengths.empty()) {
        if (lengths.size() != batch) {
            throw Error(
                fmt::format("{}: got {} lengths for a batch of {}", kind_, lengths.size(), batch));
        }
        for (std::size_t b = 0; b < batch; ++b) {
            if (lengths[b] < 0 || static_cast<std::size_t>(lengths[b]) > steps) {
                throw Error(fmt::format("{}: length {} of sequence {} is outside [0, {}]", kind_,
                                        lengths[b], b, steps));
            }
        }
    }
    if (!initial.empty()) {
        if (initial.size() != cells_.size()) {
            throw Error(fmt::format("{}: initial state has {} entries, needs layers * directions "
                                    "= {}",
                                    kind_, initial.size(), cells_.size()));
        }
        for (std::size_t i = 0; i < initial.size(); ++i) {
            if (initial[i].size() != state_size()) {
                throw Error(fmt::format("{}: initial state {} has {} tensors, the cell needs {}",
                                        kind_, i, initial[i].size(), state_size()));
            }
            for (const Var<T>& part : initial[i]) {
                if (part.shape() != Shape{batch, H}) {
                    throw Error(fmt::format("{}: initial state {} has shape {}, needs ({}, {})",
                                            kind_, i, part.shape(), batch, H));
                }
            }
        }
    }

    // Step masks (B, 1): 1 while t < length, and their complements (1 at padded steps). Absent
    // when every sequence has all T steps.
    std::vector<Var<T>> masks, padded;
    if (!lengths.empty()) {
        Tensor<T> mask(batch, 1), complement(batch, 1);
        for (std::size_t t = 0; t < steps; ++t) {
            for (std::size_t b = 0; b < batch; ++b) {
                mask(b, 0) = t < static_cast<std::size_t>(lengths[b]) ? T(1) : T(0);
                complement(b, 0) = T(1) - mask(b, 0);
            }
            masks.push_back(tape.constant(mask));
            padded.push_back(tape.constant(complement));
        }
    }

    RecurrentOutput<T> result;
    result.states.resize(cells_.size());
    result.final_state.resize(cells_.size());
    Var<T> layer_input = input != nullptr ? *input
                         : project_table  ? Var<T>{}
                                          : gather_rows(*table, tokens);
    for (std::size_t layer = 0; layer < options_.num_layers; ++layer) {
        if (layer > 0 && training_ && options_.dropout > 0.0) {
            layer_input = dropout(layer_input, options_.dropout, dropout_rng_);
        }
        std::vector<std::vector<Var<T>>> outputs(directions(), std::vector<Var<T>>(steps));
        for (std::size_t direction = 0; direction < directions(); ++direction) {
            const std::size_t index = layer * directions() + direction;
            Cell<T>& cell = *cells_[index];
            LabelScope<T> layer_label(
                tape, fmt::format("{}.l{}.{}", kind_, layer, direction == 0 ? "fwd" : "bwd"));
            if (checkpointed) {
                const std::vector<Var<T>> start =
                    initial.empty()
                        ? std::vector<Var<T>>(cell.state_size(), tape.constant(Tensor<T>(batch, H)))
                        : initial[index];
                detail::CheckpointedRun<T> run = detail::run_checkpointed(
                    cell, layer_input, batch, start, direction == 1, options_.checkpoint_steps);
                outputs[direction] = std::move(run.outputs);
                result.final_state[index] = std::move(run.final);
                continue;
            }
            cell.attach(tape);
            // Step t's projected input: rows tokens[t*B .. t*B+B) of the projected table (V, P),
            // or rows t*B .. t*B+B of the projected sequence (T*B, P).
            const bool from_table = layer == 0 && project_table;
            const Var<T> projected =
                from_table ? cell.project_inputs(*table) : cell.project_inputs(layer_input);
            // A table projection is read by every step that picks its rows: never donated.
            const bool donated =
                !from_table && detail::projection_donatable(projected, layer_input);
            std::vector<Var<T>> state;
            if (initial.empty()) {
                const Var<T> zeros = tape.constant(Tensor<T>(batch, H));
                state.assign(cell.state_size(), zeros);
            } else {
                state = initial[index];
            }
            result.states[index].resize(steps);
            for (std::size_t i = 0; i < steps; ++i) {
                const std::size_t t = direction == 0 ? i : steps - 1 - i;
                LabelScope<T> step_label(tape, fmt::format("t={}", t));
                StepInput<T> event = from_table
                                         ? StepInput<T>(projected, tokens.subspan(t * batch, batch))
                                         : StepInput<T>(projected, t * batch, batch);
                event.donated = donated;
                std::vector<Var<T>> next = cell.step(event, state);
                if (!masks.empty()) {
                    // Padded steps keep the old state (mask * new + (1 - mask) * old is exactly
                    // one of the two); their outputs are zero. The output is taken from the kept
                    // state so that states[t][0].grad() includes the output's gradient.
                    for (std::size_t k = 0; k < next.size(); ++k) {
                        next[k] = add(mul(next[k], masks[t]), mul(state[k], padded[t]));
                    }
                    outputs[direction][t] = mul(next[0], masks[t]);
                } else {
                    outputs[direction][t] = next[0];
                }
                state = std::move(next);
                result.states[index][t] = state;
            }
            result.final_state[index] = state;
        }
        std::vector<Var<T>> layer_steps(steps);
        for (std::size_t t = 0; t < steps; ++t) {
            if (directions() == 1) {
                layer_steps[t] = outputs[0][t];
            } else {
                const Var<T> both[] = {outputs[0][t], outputs[1][t]};
                layer_steps[t] = concat_cols<T>(both); // (B, 2H)
            }
        }
        layer_input = steps == 1 ? layer_steps[0] : concat_rows<T>(layer_steps); // (T*B, D*H)
        if (layer + 1 == options_.num_layers) {
            result.steps = std::move(layer_steps);
        }
    }
    result.output = layer_input;
    return result;
}

template <class T>
RNN<T>::RNN(const RecurrentOptions& options, std::mt19937_64& rng)
    : Recurrent<T>("rnn", options, [&](std::size_t input_size, std::size_t layer, bool reverse) {
          return std::make_unique<RNNCell<T>>(input_size, options.hidden_size, rng,
                                              options.nonlinearity, options.bias,
                                              layer_suffix(layer, reverse));
      }) {}

template <class T>
LSTM<T>::LSTM(const RecurrentOptions& options, std::mt19937_64& rng)
    : Recurrent<T>("lstm", options, [&](std::size_t input_size, std::size_t layer, bool reverse) {
          auto cell =
              std::make_unique<LSTMCell<T>>(input_size, options.hidden_size, rng, options.bias,
                                            options.forget_bias, layer_suffix(layer, reverse));
          return cell;
      }) {}

template <class T>
GRU<T>::GRU(const RecurrentOptions& options, std::mt19937_64& rng)
    : Recurrent<T>("gru", options, [&](std::size_t input_size, std::size_t layer, bool reverse) {
          auto cell = std::make_unique<GRUCell<T>>(input_size, options.hidden_size, rng,
                                                   options.bias, layer_suffix(layer, reverse));
          return cell;
      }) {}

template <class T>
RecurrentStateTensors<T> detach_state(const RecurrentState<T>& state) {
    RecurrentStateTensors<T> tensors(state.size());
    for (std::size_t i = 0; i < state.size(); ++i) {
        for (const Var<T>& part : state[i]) {
            tensors[i].push_back(part.value_tensor());
        }
    }
    return tensors;
}

template <class T>
RecurrentState<T> state_on_tape(Tape<T>& tape, const RecurrentStateTensors<T>& state) {
    RecurrentState<T> vars(state.size());
    for (std::size_t i = 0; i < state.size(); ++i) {
        for (const Tensor<T>& part : state[i]) {
            vars[i].push_back(tape.constant(part));
        }
    }
    return vars;
}

template <class T>
double run_tbptt(Recurrent<T>& layer, const Tensor<T>& stream, std::size_t batch,
                 std::size_t window, const WindowLoss<T>& loss,
                 const std::function<void()>& after_backward, RecurrentStateTensors<T>* carried) {
    if (window == 0 || batch == 0 || stream.rows() % batch != 0) {
        throw Error(fmt::format("run_tbptt: needs window >= 1 and a (N*B, F) stream with B = {}; "
                                "got window {} and stream {}",
                                batch, window, stream.shape()));
    }
    const std::size_t total_steps = stream.rows() / batch;
    RecurrentStateTensors<T> state =
        carried != nullptr && !carried->empty() ? *carried : layer.zero_state(batch);
    Tape<T> tape;
    double loss_sum = 0;
    std::size_t windows = 0;
    for (std::size_t first = 0; first < total_steps; first += window) {
        const std::size_t steps = std::min(window, total_steps - first);
        tape.clear();
        const View<const T> rows{stream.data() + first * batch * stream.cols(), steps * batch,
                                 stream.cols(), stream.cols()};
        const Var<T> input = tape.constant(rows);
        const RecurrentOutput<T> output = layer.forward(input, batch, state_on_tape(tape, state));
        const Var<T> window_loss = loss(tape, output, first, steps);
        tape.backward(window_loss);
        loss_sum += window_loss.item();
        ++windows;
        if (after_backward) {
            after_backward();
        }
        state = detach_state(output.final_state);
    }
    if (carried != nullptr) {
        *carried = state;
    }
    return windows == 0 ? 0.0 : loss_sum / double(windows);
}

#define CELLGRAD_INSTANTIATE(T)                                                                    \
    template class Recurrent<T>;                                                                   \
    template class RNN<T>;                                                                         \
    template class LSTM<T>;                                                                        \
    template class GRU<T>;                                                                         \
    template RecurrentStateTensors<T> detach_state<T>(const RecurrentState<T>&);                   \
    template RecurrentState<T> state_on_tape<T>(Tape<T>&, const RecurrentStateTensors<T>&);        \
    template double run_tbptt<T>(Recurrent<T>&, const Tensor<T>&, std::size_t, std::size_t,        \
                                 const WindowLoss<T>&, const std::function<void()>&,               \
                                 RecurrentStateTensors<T>*);
CELLGRAD_INSTANTIATE(float)
CELLGRAD_INSTANTIATE(double)
#undef CELLGRAD_INSTANTIATE

} // namespace cellgrad::nn
