// Tests of the sequence layers (nn/recurrent.hpp): RNN, LSTM and GRU stacked, bidirectional, with
// initial states and variable lengths, against a scalar reference that runs each sequence alone;
// float64 gradient checks; padded vs unpadded runs; a user-defined cell; truncated BPTT;
// per-time-step state gradients; anomaly labels; input validation.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "cellgrad/cellgrad.hpp"
#include "cellgrad/nn.hpp"
#include "recurrent_reference.hpp"

using namespace cellgrad;
using namespace cellgrad::nn;
using reference::State;
using reference::Vec;

namespace {

constexpr std::size_t kInput = 3;
constexpr std::size_t kHidden = 4;

/// Options of a small stacked layer.
RecurrentOptions small_options(std::size_t layers, bool bidirectional) {
    RecurrentOptions options;
    options.input_size = kInput;
    options.hidden_size = kHidden;
    options.num_layers = layers;
    options.bidirectional = bidirectional;
    return options;
}

/// Builds the built-in layer "rnn", "rnn_relu", "lstm" or "gru".
std::unique_ptr<Recurrent<double>> make_layer(const std::string& kind, RecurrentOptions options,
                                              std::mt19937_64& rng) {
    if (kind == "lstm") {
        return std::make_unique<LSTM<double>>(options, rng);
    }
    if (kind == "gru") {
        return std::make_unique<GRU<double>>(options, rng);
    }
    options.nonlinearity = kind == "rnn_relu" ? Nonlinearity::relu : Nonlinearity::tanh;
    return std::make_unique<RNN<double>>(options, rng);
}

/// The scalar reference step for the cell of `index` of a built-in layer of `kind`.
reference::StepFn reference_steps(Recurrent<double>& layer, const std::string& kind) {
    return [&layer, kind](std::size_t index, const Vec& x, const State& state) {
        const std::size_t D = layer.directions();
        Cell<double>& cell = layer.cell(index / D, index % D == 1);
        if (kind == "lstm") {
            return reference::lstm_step(dynamic_cast<LSTMCell<double>&>(cell).weights(), x, state);
        }
        if (kind == "gru") {
            return reference::gru_step(dynamic_cast<GRUCell<double>&>(cell).weights(), x, state);
        }
        return reference::rnn_step(dynamic_cast<RNNCell<double>&>(cell).weights(),
                                   kind == "rnn_relu", x, state);
    };
}

/// Inputs, lengths, initial states and fixed loss weights for one batch of sequences.
struct SequenceData {
    std::size_t steps = 0;
    std::size_t batch = 0;
    std::vector<std::int32_t> lengths;
    std::unique_ptr<Parameter<double>> x;                            ///< (T*B, in)
    std::vector<std::vector<std::unique_ptr<Parameter<double>>>> h0; ///< [index][k] (B, H)
    Tensor<double> output_weights;                                   ///< (T*B, D*H)
    std::vector<std::vector<Tensor<double>>> state_weights;          ///< [index][k] (B, H)

    /// The input and initial states as grad_check targets.
    std::vector<Parameter<double>*> targets() {
        std::vector<Parameter<double>*> list{x.get()};
        for (auto& entry : h0) {
            for (auto& part : entry) {
                list.push_back(part.get());
            }
        }
        return list;
    }
    /// Initial states in the reference's layout [index][b][k].
    std::vector<std::vector<State>> reference_initial() const {
        std::vector<std::vector<State>> initial(h0.size(), std::vector<State>(batch));
        for (std::size_t i = 0; i < h0.size(); ++i) {
            for (std::size_t b = 0; b < batch; ++b) {
                for (const auto& part : h0[i]) {
                    initial[i][b].push_back(reference::row_of(part->value.view(), b));
                }
            }
        }
        return initial;
    }
};

/// Random data for `layer`; rows of padded steps (t >= length) hold values of size `garbage`.
SequenceData make_data(Recurrent<double>& layer, std::size_t steps,
                       std::vector<std::int32_t> lengths, std::uint64_t seed,
                       double garbage = 1.0) {
    std::mt19937_64 rng(seed);
    SequenceData data;
    data.steps = steps;
    data.batch = lengths.size();
    data.lengths = std::move(lengths);
    Tensor<double> x = uniform_tensor<double>(steps * data.batch, kInput, 1.0, rng);
    const std::size_t width = layer.directions() * kHidden;
    data.output_weights = uniform_tensor<double>(steps * data.batch, width, 1.0, rng);
    for (std::size_t t = 0; t < steps; ++t) {
        for (std::size_t b = 0; b < data.batch; ++b) {
            if (t >= std::size_t(data.lengths[b])) {
                for (std::size_t c = 0; c < kInput; ++c) {
                    x(t * data.batch + b, c) *= garbage;
                }
                for (std::size_t c = 0; c < width; ++c) {
                    data.output_weights(t * data.batch + b, c) *= garbage;
                }
            }
        }
    }
    data.x = std::make_unique<Parameter<double>>("x", std::move(x));
    const std::size_t cells = layer.options().num_layers * layer.directions();
    data.h0.resize(cells);
    data.state_weights.resize(cells);
    for (std::size_t i = 0; i < cells; ++i) {
        for (std::size_t k = 0; k < layer.state_size(); ++k) {
            data.h0[i].push_back(std::make_unique<Parameter<double>>(
                fmt::format("h0[{}][{}]", i, k),
                uniform_tensor<double>(data.batch, kHidden, 1.0, rng)));
            data.state_weights[i].push_back(uniform_tensor<double>(data.batch, kHidden, 1.0, rng));
        }
    }
    return data;
}

/// Puts the initial states on the tape as differentiable leaves.
RecurrentState<double> initial_on_tape(Tape<double>& tape, SequenceData& data) {
    RecurrentState<double> initial(data.h0.size());
    for (std::size_t i = 0; i < data.h0.size(); ++i) {
        for (auto& part : data.h0[i]) {
            initial[i].push_back(tape.param(*part));
        }
    }
    return initial;
}

/// sum(output * R) + sum over every final state tensor of (state * S): every path matters.
Var<double> sequence_loss(Tape<double>& tape, const RecurrentOutput<double>& out,
                          const SequenceData& data) {
    Var<double> total = sum(mul(out.output, tape.constant(data.output_weights)));
    for (std::size_t i = 0; i < out.final_state.size(); ++i) {
        for (std::size_t k = 0; k < out.final_state[i].size(); ++k) {
            total = add(total,
                        sum(mul(out.final_state[i][k], tape.constant(data.state_weights[i][k]))));
        }
    }
    return total;
}

/// Runs `layer` on `data` (input and initial states as parameters, with lengths).
RecurrentOutput<double> run(Tape<double>& tape, Recurrent<double>& layer, SequenceData& data) {
    return layer.forward(tape.param(*data.x), data.batch, initial_on_tape(tape, data),
                         data.lengths);
}

/// Grad-checks `layer` on `data` w.r.t. its parameters, the input and the initial states.
GradCheckReport check_layer_gradients(Recurrent<double>& layer, SequenceData& data) {
    std::vector<Parameter<double>*> targets = layer.parameters();
    for (Parameter<double>* target : data.targets()) {
        targets.push_back(target);
    }
    // The loss sums ~200 terms; eps = 1e-5 keeps the central difference's round-off
    // (~1e-16 |L| / eps) well below the 1e-9 that a 1e-6 relative error allows at the 1e-3 floor.
    GradCheckOptions options;
    options.eps = 1e-5;
    return grad_check(
        [&](Tape<double>& tape) { return sequence_loss(tape, run(tape, layer, data), data); },
        targets, options);
}

/// Largest difference between a layer's output/final state and the scalar reference.
double difference_to_reference(const RecurrentOutput<double>& out,
                               const reference::SequenceResult& expected, std::size_t batch) {
    double worst = 0;
    const auto steps = reference::split_steps(out.output.value(), batch);
    REQUIRE(steps.size() == expected.output.size());
    for (std::size_t t = 0; t < steps.size(); ++t) {
        for (std::size_t b = 0; b < batch; ++b) {
            for (std::size_t j = 0; j < steps[t][b].size(); ++j) {
                worst = std::max(worst, std::abs(steps[t][b][j] - expected.output[t][b][j]));
            }
        }
    }
    for (std::size_t i = 0; i < out.final_state.size(); ++i) {
        for (std::size_t k = 0; k < out.final_state[i].size(); ++k) {
            for (std::size_t b = 0; b < batch; ++b) {
                const Vec row = reference::row_of(out.final_state[i][k].value(), b);
                for (std::size_t j = 0; j < row.size(); ++j) {
                    worst = std::max(worst, std::abs(row[j] - expected.final_state[i][b][k][j]));
                }
            }
        }
    }
    return worst;
}

/// Copies of every parameter gradient of a module.
std::vector<Tensor<double>> gradients(Module<double>& module) {
    std::vector<Tensor<double>> list;
    for (Parameter<double>* parameter : module.parameters()) {
        list.push_back(parameter->grad);
    }
    return list;
}

/// Largest elementwise difference between two lists of equally shaped tensors.
double max_difference(const std::vector<Tensor<double>>& a, const std::vector<Tensor<double>>& b) {
    REQUIRE(a.size() == b.size());
    double worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        worst = std::max(worst, max_abs_difference<double>(a[i].view(), b[i].view()));
    }
    return worst;
}

/// Row r of a matrix as a (1, cols) tensor.
Tensor<double> row_tensor(const Tensor<double>& m, std::size_t r) {
    return Tensor<double>(View<const double>{m.data() + r * m.cols(), 1, m.cols(), m.cols()});
}

/// Zero tensors shaped like `list`.
std::vector<Tensor<double>> zeros_like(const std::vector<Tensor<double>>& list) {
    std::vector<Tensor<double>> zeros;
    for (const Tensor<double>& t : list) {
        zeros.emplace_back(t.rows(), t.cols());
    }
    return zeros;
}

/// The message of the cellgrad::Error `body` throws ("" if it throws none).
template <class Body>
std::string error_message(const Body& body) {
    try {
        body();
    } catch (const Error& error) {
        return error.what();
    }
    return "";
}

/// Turns anomaly detection on while alive and always back off.
struct AnomalyDetectionOn {
    AnomalyDetectionOn() { set_anomaly_detection(true); }
    ~AnomalyDetectionOn() { set_anomaly_detection(false); }
};

/// Minimal gated unit (Zhou et al. 2016), a user cell: f = sigmoid(W_f x + b_f + U_f h),
/// n = tanh(W_n x + b_n + U_n (f * h)), h' = (1 - f) * h + f * n.
class MinimalGatedCell : public Cell<double> {
  public:
    /// Parameters "w_x<suffix>" (2H, in) = [W_f; W_n], "u_f", "u_n" (H, H), "b" (2H).
    MinimalGatedCell(std::size_t input, std::size_t hidden, std::mt19937_64& rng,
                     const std::string& suffix)
        : w_x("w_x" + suffix, uniform_tensor<double>(2 * hidden, input, 0.7, rng)),
          u_f("u_f" + suffix, uniform_tensor<double>(hidden, hidden, 0.7, rng)),
          u_n("u_n" + suffix, uniform_tensor<double>(hidden, hidden, 0.7, rng)),
          b("b" + suffix, uniform_tensor<double>(1, 2 * hidden, 0.7, rng), true), input_(input),
          hidden_(hidden) {}
    std::size_t input_size() const override { return input_; }
    std::size_t hidden_size() const override { return hidden_; }
    std::vector<Parameter<double>*> parameters() override { return {&w_x, &u_f, &u_n, &b}; }
    void attach(Tape<double>& tape) override {
        w_x_ = tape.param(w_x);
        u_f_ = tape.param(u_f);
        u_n_ = tape.param(u_n);
        b_ = tape.param(b);
    }
    Var<double> project_inputs(const Var<double>& x) override { return linear(x, w_x_, b_); }
    std::vector<Var<double>> step(const StepInput<double>& event,
                                  std::span<const Var<double>> s) override {
        const Var<double> p = event.var();
        const Var<double>& h = s[0];
        const Var<double> f = sigmoid(slice_cols(p, 0, hidden_) + linear(h, u_f_)); // (B, H)
        const Var<double> n = tanh(slice_cols(p, hidden_, 2 * hidden_) + linear(f * h, u_n_));
        return {one_minus(f) * h + f * n};
    }
    /// The same step in scalar C++ for one sequence.
    State reference_step(const Vec& x, const State& s) const {
        const std::size_t H = hidden_;
        Vec f(H), fh(H), h(H);
        for (std::size_t j = 0; j < H; ++j) {
            f[j] = reference::sigmoid(reference::row_dot(w_x.value, j, x, &b.value) +
                                      reference::row_dot(u_f.value, j, s[0]));
            fh[j] = f[j] * s[0][j];
        }
        for (std::size_t j = 0; j < H; ++j) {
            const double n = std::tanh(reference::row_dot(w_x.value, H + j, x) + b.value(0, H + j) +
                                       reference::row_dot(u_n.value, j, fh));
            h[j] = (1 - f[j]) * s[0][j] + f[j] * n;
        }
        return {h};
    }

    Parameter<double> w_x, u_f, u_n, b;

  private:
    std::size_t input_, hidden_;
    Var<double> w_x_, u_f_, u_n_, b_;
};

} // namespace

TEST_CASE("recurrent: PyTorch parameter names, order, shapes and init") {
    std::mt19937_64 rng(1);
    struct Expected {
        std::string kind;
        std::size_t gates;
    };
    for (const Expected& e : {Expected{"rnn", 1}, Expected{"lstm", 4}, Expected{"gru", 3}}) {
        auto layer = make_layer(e.kind, small_options(2, true), rng);
        const std::vector<Parameter<double>*> params = layer->parameters();
        REQUIRE(params.size() == 16);
        const std::size_t G = e.gates * kHidden;
        std::size_t p = 0;
        for (const char* suffix : {"_l0", "_l0_reverse", "_l1", "_l1_reverse"}) {
            const std::size_t in = std::string(suffix).starts_with("_l0") ? kInput : 2 * kHidden;
            INFO(e.kind << suffix);
            CHECK(params[p]->name == std::string("weight_ih") + suffix);
            CHECK(params[p]->export_shape == std::vector<std::size_t>{G, in});
            CHECK(params[p + 1]->name == std::string("weight_hh") + suffix);
            CHECK(params[p + 1]->export_shape == std::vector<std::size_t>{G, kHidden});
            CHECK(params[p + 2]->name == std::string("bias_ih") + suffix);
            CHECK(params[p + 2]->export_shape == std::vector<std::size_t>{G});
            CHECK(params[p + 2]->value.shape() == Shape{1, G});
            CHECK(params[p + 3]->name == std::string("bias_hh") + suffix);
            CHECK(params[p + 3]->export_shape == std::vector<std::size_t>{G});
            p += 4;
        }
        const double bound = 1.0 / std::sqrt(double(kHidden));
        for (Parameter<double>* parameter : params) {
            for (double v : parameter->value.to_vector()) {
                REQUIRE(std::abs(v) <= bound);
            }
        }
        CHECK(layer->state_size() == (e.kind == "lstm" ? 2u : 1u));
    }
    SUBCASE("forget_bias reaches every LSTM cell's bias_ih [H, 2H) block") {
        RecurrentOptions options = small_options(2, true);
        std::mt19937_64 rng_a(4), rng_b(4);
        LSTM<double> plain(options, rng_a);
        options.forget_bias = 1.0;
        LSTM<double> biased(options, rng_b);
        const auto a = plain.parameters();
        const auto b = biased.parameters();
        for (std::size_t i = 0; i < a.size(); ++i) {
            for (std::size_t j = 0; j < a[i]->value.size(); ++j) {
                const bool forget =
                    a[i]->name.starts_with("bias_ih") && j >= kHidden && j < 2 * kHidden;
                INFO(a[i]->name << "[" << j << "]");
                CHECK(b[i]->value.data()[j] == a[i]->value.data()[j] + (forget ? 1.0 : 0.0));
            }
        }
    }
}

TEST_CASE("recurrent: outputs and final states match each sequence run alone in scalar C++") {
    // 2 layers, bidirectional, given initial states, lengths with a full, a short, an empty and
    // a length-1 sequence; padded steps hold large garbage.
    for (const std::string kind : {"rnn", "rnn_relu", "lstm", "gru"}) {
        for (const bool bidirectional : {false, true}) {
            std::mt19937_64 rng(2);
            auto layer = make_layer(kind, small_options(2, bidirectional), rng);
            SequenceData data = make_data(*layer, 6, {6, 3, 0, 1, 5}, 3, 100.0);
            Tape<double> tape;
            const RecurrentOutput<double> out = run(tape, *layer, data);
            const auto expected =
                reference::run_sequence(reference_steps(*layer, kind), 2, bidirectional, kHidden,
                                        reference::split_steps(data.x->value.view(), data.batch),
                                        {6, 3, 0, 1, 5}, data.reference_initial());
            INFO(kind << (bidirectional ? " bidirectional" : ""));
            CHECK(out.output.shape() == Shape{6 * 5, layer->directions() * kHidden});
            CHECK(difference_to_reference(out, expected, data.batch) < 1e-13);
            REQUIRE(out.steps.size() == 6);
            CHECK(max_abs_difference<double>(out.steps[4].value(),
                                             slice_rows(out.output, 20, 25).value()) == 0.0);
        }
    }
    SUBCASE("without lengths or initial states: full lengths from zero states") {
        std::mt19937_64 rng(5);
        LSTM<double> layer(small_options(2, true), rng);
        SequenceData data = make_data(layer, 4, {4, 4}, 6);
        Tape<double> tape;
        const RecurrentOutput<double> out = layer.forward(tape.constant(data.x->value), 2);
        std::vector<std::vector<State>> zeros(4, std::vector<State>(2, State(2, Vec(kHidden))));
        const auto expected =
            reference::run_sequence(reference_steps(layer, "lstm"), 2, true, kHidden,
                                    reference::split_steps(data.x->value.view(), 2), {4, 4}, zeros);
        CHECK(difference_to_reference(out, expected, 2) < 1e-13);
    }
}

TEST_CASE("recurrent: float64 gradient check, 2 layers, bidirectional, h0/c0, lengths") {
    for (const std::string kind : {"rnn", "lstm", "gru"}) {
        std::mt19937_64 rng(8);
        auto layer = make_layer(kind, small_options(2, true), rng);
        SequenceData data = make_data(*layer, 7, {7, 3, 1, 5}, 9);
        const GradCheckReport report = check_layer_gradients(*layer, data);
        INFO(kind << ": " << report.summary());
        CHECK(report.passed);
        CHECK(report.max_rel_error < 1e-6);
        CHECK(report.checked == layer->parameter_count() + data.x->value.size() +
                                    4 * layer->state_size() * 4 * kHidden);
    }
}

TEST_CASE("recurrent: embedded tokens project the table's rows, same values and gradients") {
    // 7 steps of 4 sequences: forward on gather_rows(table) projects a 5-row table then gathers
    // (5 < 28 rows), and gathers a 40-row one then projects; both must equal forward on the same
    // rows hidden behind a zero-copy slice, which the runner takes as plain rows.
    for (const std::string kind : {"rnn", "lstm", "gru"}) {
        for (const std::size_t vocabulary : {5, 40}) {
            std::mt19937_64 rng(17);
            auto layer = make_layer(kind, small_options(2, true), rng);
            SequenceData data = make_data(*layer, 7, {7, 3, 1, 5}, 18);
            Parameter<double> table("table", uniform_tensor<double>(vocabulary, kInput, 1.0, rng));
            std::vector<std::int32_t> tokens(7 * 4);
            for (std::size_t i = 0; i < tokens.size(); ++i) {
                tokens[i] = static_cast<std::int32_t>((i * 7 + i / 3) % vocabulary);
            }
            std::vector<Parameter<double>*> targets = layer->parameters();
            targets.push_back(&table);
            for (Parameter<double>* target : data.targets()) {
                if (target != data.x.get()) {
                    targets.push_back(target);
                }
            }
            const auto loss = [&](Tape<double>& tape, bool from_tokens) {
                const Var<double> rows = tape.param(table);
                const Var<double> embedded = gather_rows(rows, tokens);
                const RecurrentOutput<double> out =
                    layer->forward(from_tokens ? embedded : slice_rows(embedded, 0, tokens.size()),
                                   4, initial_on_tape(tape, data), data.lengths);
                std::size_t table_projections = 0; // input projections of the table's rows
                for (NodeId id = 0; id < tape.size(); ++id) {
                    table_projections += std::string_view(tape.node(id).op) == "linear" &&
                                         tape.node(id).value.rows == vocabulary;
                }
                CHECK(table_projections == (from_tokens && vocabulary == 5 ? 2 : 0));
                return std::make_pair(sequence_loss(tape, out, data), out);
            };
            const auto gradients = [&](bool from_tokens, double& loss_value,
                                       std::vector<Tensor<double>>& outputs) {
                for (Parameter<double>* target : targets) {
                    target->grad.fill(0.0);
                }
                Tape<double> tape;
                const auto [total, out] = loss(tape, from_tokens);
                tape.backward(total);
                loss_value = total.item();
                outputs = {out.output.value_tensor()};
                for (const auto& state : out.final_state) {
                    for (const Var<double>& part : state) {
                        outputs.push_back(part.value_tensor());
                    }
                }
                std::vector<Tensor<double>> grads;
                for (Parameter<double>* target : targets) {
                    grads.push_back(target->grad);
                }
                return grads;
            };
            double tokens_loss = 0, gathered_loss = 0;
            std::vector<Tensor<double>> tokens_outputs, gathered_outputs;
            const auto tokens_grads = gradients(true, tokens_loss, tokens_outputs);
            const auto gathered_grads = gradients(false, gathered_loss, gathered_outputs);
            INFO(kind << " with a " << vocabulary << "-row table");
            CHECK(std::abs(tokens_loss - gathered_loss) < 1e-12);
            REQUIRE(tokens_outputs.size() == gathered_outputs.size());
            for (std::size_t i = 0; i < tokens_outputs.size(); ++i) {
                CHECK(max_abs_difference<double>(tokens_outputs[i].view(),
                                                 gathered_outputs[i].view()) < 1e-12);
            }
            for (std::size_t i = 0; i < targets.size(); ++i) {
                INFO(targets[i]->name);
                CHECK(max_abs_difference<double>(tokens_grads[i].view(), gathered_grads[i].view()) <
                      1e-12);
                const Tensor<double> zeros(tokens_grads[i].rows(), tokens_grads[i].cols());
                CHECK(max_abs_difference<double>(tokens_grads[i].view(), zeros.view()) >
                      1e-6); // every target gets a gradient
            }
            if (vocabulary == 5) {
                GradCheckOptions options;
                options.eps = 1e-5;
                const GradCheckReport report = grad_check(
                    [&](Tape<double>& tape) { return loss(tape, true).first; }, targets, options);
                INFO(report.summary());
                CHECK(report.passed);
                CHECK(report.max_rel_error < 1e-6);
            }
        }
    }
    std::mt19937_64 rng(19);
    LSTM<double> lstm(small_options(1, false), rng);
    Tape<double> tape;
    const Var<double> table = tape.constant(Tensor<double>(5, kInput));
    const std::vector<std::int32_t> seven(7, 0), outside{0, 5};
    std::string m = error_message([&] { lstm.forward(gather_rows(table, seven), 2); });
    CHECK(m.find("lstm: input (7, 3) must be (T*B, 3)") != std::string::npos);
    m = error_message([&] { lstm.forward(gather_rows(table, outside), 2); });
    CHECK(m.find("gather_rows: index 5") != std::string::npos);
}

TEST_CASE("recurrent: padded batch equals each sequence run alone, outputs and gradients") {
    for (const std::string kind : {"gru", "lstm"}) {
        for (const bool bidirectional : {false, true}) {
            INFO(kind << (bidirectional ? " bidirectional" : ""));
            std::mt19937_64 rng(12);
            auto layer = make_layer(kind, small_options(2, bidirectional), rng);
            const std::size_t T = 7, B = 3;
            const std::vector<std::int32_t> lengths{5, 3, 0};
            SequenceData data = make_data(*layer, T, lengths, 13, 1e3);
            const std::size_t width = layer->directions() * kHidden;
            const std::size_t cells = data.h0.size();

            // Padded batch.
            layer->zero_grad();
            Tape<double> tape;
            const RecurrentOutput<double> padded = run(tape, *layer, data);
            tape.backward(sequence_loss(tape, padded, data));
            const std::vector<Tensor<double>> padded_grads = gradients(*layer);
            const Tensor<double> output = padded.output.value_tensor();

            // Each non-empty sequence alone: batch of 1, its own length, no padding.
            layer->zero_grad();
            for (std::size_t b = 0; b < B; ++b) {
                const std::size_t L = std::size_t(lengths[b]);
                if (L == 0) {
                    continue;
                }
                SequenceData alone;
                alone.steps = L;
                alone.batch = 1;
                Tensor<double> x(L, kInput);
                alone.output_weights = Tensor<double>(L, width);
                for (std::size_t t = 0; t < L; ++t) {
                    for (std::size_t c = 0; c < kInput; ++c) {
                        x(t, c) = data.x->value(t * B + b, c);
                    }
                    for (std::size_t c = 0; c < width; ++c) {
                        alone.output_weights(t, c) = data.output_weights(t * B + b, c);
                    }
                }
                alone.x = std::make_unique<Parameter<double>>("x", x);
                alone.h0.resize(cells);
                alone.state_weights.resize(cells);
                for (std::size_t i = 0; i < cells; ++i) {
                    for (std::size_t k = 0; k < data.h0[i].size(); ++k) {
                        alone.h0[i].push_back(std::make_unique<Parameter<double>>(
                            "h0", row_tensor(data.h0[i][k]->value, b)));
                        alone.state_weights[i].push_back(row_tensor(data.state_weights[i][k], b));
                    }
                }
                Tape<double> own_tape;
                const RecurrentOutput<double> own =
                    layer->forward(own_tape.param(*alone.x), 1, initial_on_tape(own_tape, alone));
                own_tape.backward(sequence_loss(own_tape, own, alone));
                // Outputs and input gradients on valid steps, final states, h0 gradients.
                double worst = 0;
                for (std::size_t t = 0; t < L; ++t) {
                    for (std::size_t c = 0; c < width; ++c) {
                        worst = std::max(worst,
                                         std::abs(output(t * B + b, c) - own.output.value()(t, c)));
                    }
                    for (std::size_t c = 0; c < kInput; ++c) {
                        worst = std::max(
                            worst, std::abs(data.x->grad(t * B + b, c) - alone.x->grad(t, c)));
                    }
                }
                for (std::size_t i = 0; i < cells; ++i) {
                    for (std::size_t k = 0; k < data.h0[i].size(); ++k) {
                        for (std::size_t j = 0; j < kHidden; ++j) {
                            worst =
                                std::max(worst, std::abs(padded.final_state[i][k].value()(b, j) -
                                                         own.final_state[i][k].value()(0, j)));
                            worst = std::max(worst, std::abs(data.h0[i][k]->grad(b, j) -
                                                             alone.h0[i][k]->grad(0, j)));
                        }
                    }
                }
                INFO("sequence " << b);
                CHECK(worst < 1e-12);
            }
            // Parameter gradients: the padded batch's equal the sum of the separate runs'.
            CHECK(max_difference(padded_grads, gradients(*layer)) < 1e-12);
            CHECK(max_difference(padded_grads, zeros_like(padded_grads)) > 1e-3); // not all zero

            // Padded steps: zero output, exactly zero input gradient; the empty sequence keeps h0.
            for (std::size_t t = 0; t < T; ++t) {
                for (std::size_t b = 0; b < B; ++b) {
                    if (t < std::size_t(lengths[b])) {
                        continue;
                    }
                    for (std::size_t c = 0; c < width; ++c) {
                        REQUIRE(output(t * B + b, c) == 0.0);
                    }
                    for (std::size_t c = 0; c < kInput; ++c) {
                        REQUIRE(data.x->grad(t * B + b, c) == 0.0);
                    }
                }
            }
            for (std::size_t i = 0; i < cells; ++i) {
                for (std::size_t k = 0; k < data.h0[i].size(); ++k) {
                    for (std::size_t j = 0; j < kHidden; ++j) {
                        CHECK(padded.final_state[i][k].value()(2, j) == data.h0[i][k]->value(2, j));
                        CHECK(data.h0[i][k]->grad(2, j) == data.state_weights[i][k](2, j));
                    }
                }
            }
        }
    }
}

TEST_CASE("recurrent: a user-defined cell runs stacked, bidirectional, with lengths and h0") {
    std::mt19937_64 rng(21);
    RecurrentOptions options = small_options(2, true);
    std::vector<MinimalGatedCell*> made;
    Recurrent<double> layer("mgu", options, [&](std::size_t input, std::size_t l, bool reverse) {
        auto cell =
            std::make_unique<MinimalGatedCell>(input, kHidden, rng, layer_suffix(l, reverse));
        made.push_back(cell.get());
        return cell;
    });
    REQUIRE(made.size() == 4);
    CHECK(layer.parameters().size() == 16);
    CHECK(layer.parameters()[4]->name == "w_x_l0_reverse");
    CHECK(layer.cell(1).input_size() == 2 * kHidden);

    SequenceData data = make_data(layer, 6, {6, 2, 1, 4}, 22);
    Tape<double> tape;
    const RecurrentOutput<double> out = run(tape, layer, data);
    const auto expected = reference::run_sequence(
        [&](std::size_t index, const Vec& x, const State& s) {
            return made[index]->reference_step(x, s);
        },
        2, true, kHidden, reference::split_steps(data.x->value.view(), data.batch), {6, 2, 1, 4},
        data.reference_initial());
    CHECK(difference_to_reference(out, expected, data.batch) < 1e-13);

    const GradCheckReport report = check_layer_gradients(layer, data);
    INFO(report.summary());
    CHECK(report.passed);
    CHECK(report.max_rel_error < 1e-6);
}

TEST_CASE("recurrent: run_tbptt gives exactly the gradients of the truncated graph") {
    std::mt19937_64 rng(31);
    LSTM<double> layer(small_options(2, false), rng);
    const std::size_t B = 2, N = 8, k = 3; // windows of 3, 3 and 2 steps
    const Tensor<double> stream = uniform_tensor<double>(N * B, kInput, 1.0, rng);
    const Tensor<double> weights = uniform_tensor<double>(N * B, kHidden, 1.0, rng);
    // Window loss: sum(output * weights) over the window's rows.
    const WindowLoss<double> loss = [&](Tape<double>& tape, const RecurrentOutput<double>& out,
                                        std::size_t first, std::size_t steps) {
        const View<const double> rows{weights.data() + first * B * kHidden, steps * B, kHidden,
                                      kHidden};
        return sum(mul(out.output, tape.constant(rows)));
    };

    // run_tbptt, keeping each window's gradients and zeroing after each.
    std::vector<std::vector<Tensor<double>>> window_grads;
    layer.zero_grad();
    RecurrentStateTensors<double> carried;
    const double mean_loss = run_tbptt<double>(
        layer, stream, B, k, loss,
        [&] {
            window_grads.push_back(gradients(layer));
            layer.zero_grad();
        },
        &carried);
    REQUIRE(window_grads.size() == 3);

    // The truncated graph on one tape: the state crosses each window boundary through detach.
    Tape<double> tape;
    RecurrentState<double> state = state_on_tape(tape, layer.zero_state(B));
    std::vector<Var<double>> losses;
    double loss_total = 0;
    for (std::size_t first = 0; first < N; first += k) {
        const std::size_t steps = std::min(k, N - first);
        const View<const double> rows{stream.data() + first * B * kInput, steps * B, kInput,
                                      kInput};
        const RecurrentOutput<double> out = layer.forward(tape.constant(rows), B, state);
        losses.push_back(loss(tape, out, first, steps));
        loss_total += losses.back().item();
        state = out.final_state;
        for (auto& entry : state) {
            for (Var<double>& part : entry) {
                part = tape.detach(part);
            }
        }
    }
    CHECK(mean_loss == doctest::Approx(loss_total / 3).epsilon(1e-14));
    for (std::size_t w = 0; w < losses.size(); ++w) {
        layer.zero_grad();
        tape.backward(losses[w]);
        INFO("window " << w);
        CHECK(max_difference(window_grads[w], gradients(layer)) < 1e-12);
    }
    // The carried state is the last window's final state, equal in value to an untruncated run.
    REQUIRE(carried.size() == 2);
    for (std::size_t i = 0; i < 2; ++i) {
        for (std::size_t p = 0; p < 2; ++p) {
            CHECK(max_abs_difference<double>(carried[i][p].view(), state[i][p].value()) < 1e-14);
        }
    }

    SUBCASE("accumulated over windows when after_backward does not zero") {
        layer.zero_grad();
        run_tbptt<double>(layer, stream, B, k, loss, nullptr);
        const std::vector<Tensor<double>> accumulated = gradients(layer);
        Var<double> total = losses[0];
        for (std::size_t w = 1; w < losses.size(); ++w) {
            total = add(total, losses[w]);
        }
        layer.zero_grad();
        tape.backward(total);
        CHECK(max_difference(accumulated, gradients(layer)) < 1e-12);

        // Truncation really cuts: full BPTT over all N steps gives different gradients.
        Tape<double> full_tape;
        const RecurrentOutput<double> out = layer.forward(full_tape.constant(stream), B);
        layer.zero_grad();
        full_tape.backward(sum(mul(out.output, full_tape.constant(weights))));
        CHECK(max_difference(accumulated, gradients(layer)) > 1e-4);
        // ... with the same forward values as the truncated run.
        CHECK(max_abs_difference<double>(carried[1][0].view(), out.final_state[1][0].value()) <
              1e-14);
    }
    SUBCASE("a carried state continues the stream") {
        // Two calls over halves with the carry equal one call over the whole stream.
        RecurrentStateTensors<double> carry;
        layer.zero_grad();
        const View<const double> half{stream.data(), 4 * B, kInput, kInput};
        const auto second_half = Tensor<double>(
            View<const double>{stream.data() + 4 * B * kInput, 4 * B, kInput, kInput});
        std::vector<double> seen;
        const WindowLoss<double> plain = [&](Tape<double>&, const RecurrentOutput<double>& out,
                                             std::size_t, std::size_t) {
            seen.push_back(out.output.value()(0, 0));
            return sum(out.output);
        };
        run_tbptt<double>(
            layer, Tensor<double>(half), B, 4, plain, [] {}, &carry);
        run_tbptt<double>(
            layer, second_half, B, 4, plain, [] {}, &carry);
        std::vector<double> once;
        const WindowLoss<double> record = [&](Tape<double>&, const RecurrentOutput<double>& out,
                                              std::size_t, std::size_t) {
            once.push_back(out.output.value()(0, 0));
            return sum(out.output);
        };
        run_tbptt<double>(layer, stream, B, 4, record, [] {});
        REQUIRE(seen.size() == 2);
        REQUIRE(once.size() == 2);
        CHECK(seen[1] == once[1]);
    }
}

TEST_CASE("recurrent: per-time-step state gradients dL/dh_t and dL/dc_t") {
    std::mt19937_64 rng(41);
    SUBCASE("RNN, loss on the last step: dL/dh_t = W_hh^T diag(1 - h_{t+1}^2) dL/dh_{t+1}") {
        RNN<double> layer(small_options(1, false), rng);
        const std::size_t T = 5, B = 2;
        const Tensor<double> x = uniform_tensor<double>(T * B, kInput, 1.0, rng);
        const Tensor<double> r = uniform_tensor<double>(B, kHidden, 1.0, rng);
        Tape<double> tape;
        const RecurrentOutput<double> out = layer.forward(tape.constant(x), B);
        tape.backward(sum(mul(out.steps[T - 1], tape.constant(r))));
        const Tensor<double>& w = layer.cell(0).parameters()[1]->value; // weight_hh (H, H)
        Tensor<double> expected = r;                                    // dL/dh_{T-1}
        for (std::size_t t = T; t-- > 0;) {
            const Tensor<double> got = out.states[0][t][0].grad();
            INFO("t = " << t);
            CHECK(max_abs_difference<double>(got.view(), expected.view()) < 1e-14);
            if (t == 0) {
                break;
            }
            const Tensor<double> h = out.states[0][t][0].value_tensor();
            Tensor<double> previous(B, kHidden);
            for (std::size_t b = 0; b < B; ++b) {
                for (std::size_t i = 0; i < kHidden; ++i) {
                    for (std::size_t j = 0; j < kHidden; ++j) {
                        previous(b, i) += w(j, i) * (1 - h(b, j) * h(b, j)) * expected(b, j);
                    }
                }
            }
            expected = previous;
        }
    }
    SUBCASE("RNN with lengths: output, carried padded states and the final state all count") {
        RNN<double> layer(small_options(1, false), rng);
        const std::size_t T = 5, B = 2;
        const std::vector<std::int32_t> lengths{5, 2};
        const Tensor<double> x = uniform_tensor<double>(T * B, kInput, 1.0, rng);
        const Tensor<double> r = uniform_tensor<double>(T * B, kHidden, 1.0, rng);
        const Tensor<double> s = uniform_tensor<double>(B, kHidden, 1.0, rng);
        Tape<double> tape;
        const RecurrentOutput<double> out = layer.forward(tape.constant(x), B, {}, lengths);
        tape.backward(add(sum(mul(out.output, tape.constant(r))),
                          sum(mul(out.final_state[0][0], tape.constant(s)))));
        const Tensor<double>& w = layer.cell(0).parameters()[1]->value;
        for (std::size_t b = 0; b < B; ++b) {
            const std::size_t L = std::size_t(lengths[b]);
            Vec next(kHidden); // dL/dh_{t+1}
            for (std::size_t t = T; t-- > 0;) {
                Vec expected(kHidden);
                for (std::size_t i = 0; i < kHidden; ++i) {
                    if (t >= L) {
                        expected[i] = s(b, i); // a padded step carries h_{L-1} to the end
                    } else if (t == L - 1) {
                        expected[i] = r(t * B + b, i) + s(b, i);
                    } else {
                        expected[i] = r(t * B + b, i);
                        const View<const double> h = out.states[0][t + 1][0].value();
                        for (std::size_t j = 0; j < kHidden; ++j) {
                            expected[i] += w(j, i) * (1 - h(b, j) * h(b, j)) * next[j];
                        }
                    }
                }
                const Vec got = reference::row_of(out.states[0][t][0].grad().view(), b);
                for (std::size_t i = 0; i < kHidden; ++i) {
                    INFO("b = " << b << ", t = " << t << ", i = " << i);
                    CHECK(got[i] == doctest::Approx(expected[i]).epsilon(1e-13));
                }
                next = expected;
            }
        }
    }
    SUBCASE("LSTM: dL/dc_t along the cell path, f_t factor") {
        RecurrentOptions options = small_options(1, false);
        LSTM<double> layer(options, rng);
        const std::size_t T = 4, B = 2;
        const Tensor<double> x = uniform_tensor<double>(T * B, kInput, 1.0, rng);
        const Tensor<double> r = uniform_tensor<double>(B, kHidden, 1.0, rng);
        Tape<double> tape;
        const RecurrentOutput<double> out = layer.forward(tape.constant(x), B);
        tape.backward(sum(mul(out.steps[T - 1], tape.constant(r))));
        auto& w = dynamic_cast<LSTMCell<double>&>(layer.cell(0)).weights();
        // Gate value sigma(row `row` of gates) at step t for sequence b, from the reference.
        auto gate = [&](std::size_t row, std::size_t t, std::size_t b) {
            const Vec xb = reference::row_of(x.view(), t * B + b);
            const Vec h = reference::row_of(out.states[0][t - 1][0].value(), b);
            return reference::sigmoid(
                reference::row_dot(w.weight_ih.value, row, xb, &w.bias_ih->value) +
                reference::row_dot(w.weight_hh.value, row, h, &w.bias_hh->value));
        };
        CHECK(max_abs_difference<double>(out.states[0][T - 1][0].grad().view(), r.view()) == 0.0);
        const Tensor<double> dc_last = out.states[0][T - 1][1].grad();
        const Tensor<double> dc_before = out.states[0][T - 2][1].grad();
        const Tensor<double> dh_before = out.states[0][T - 2][0].grad();
        for (std::size_t b = 0; b < B; ++b) {
            for (std::size_t j = 0; j < kHidden; ++j) {
                INFO("b = " << b << ", j = " << j);
                // dL/dc_{T-1} = dL/dh_{T-1} * o_{T-1} * (1 - tanh^2 c_{T-1}).
                const double tc = std::tanh(out.states[0][T - 1][1].value()(b, j));
                const double o = gate(3 * kHidden + j, T - 1, b);
                CHECK(dc_last(b, j) == doctest::Approx(r(b, j) * o * (1 - tc * tc)).epsilon(1e-13));
                // dL/dc_{T-2} = f_{T-1} * dL/dc_{T-1} + dL/dh_{T-2} * o_{T-2} * (1 - tanh^2
                // c_{T-2}).
                const double f = gate(kHidden + j, T - 1, b);
                const double tb = std::tanh(out.states[0][T - 2][1].value()(b, j));
                const double ob = gate(3 * kHidden + j, T - 2, b);
                CHECK(dc_before(b, j) ==
                      doctest::Approx(f * dc_last(b, j) + dh_before(b, j) * ob * (1 - tb * tb))
                          .epsilon(1e-12));
            }
        }

        LSTM<double> deep(small_options(2, true), rng);
        Tape<double> deep_tape;
        const RecurrentOutput<double> deep_out = deep.forward(deep_tape.constant(x), B);
        deep_tape.backward(sum(
            mul(deep_out.steps[T - 1], deep_tape.constant(Tensor<double>(B, 2 * kHidden, 1.0)))));
        REQUIRE(deep_out.states.size() == 4);
        for (std::size_t i = 0; i < 4; ++i) {
            REQUIRE(deep_out.states[i].size() == T);
            for (std::size_t t = 0; t < T; ++t) {
                for (std::size_t p = 0; p < 2; ++p) {
                    const Tensor<double> g = deep_out.states[i][t][p].grad();
                    CHECK(g.shape() == Shape{B, kHidden});
                    CHECK(all_finite<double>(g.view()));
                }
            }
        }
        // The forward direction's last step feeds the loss; the reverse one's first step too.
        CHECK(max_abs_difference<double>(deep_out.states[2][T - 1][0].grad().view(),
                                         Tensor<double>(B, kHidden, 1.0).view()) == 0.0);
        CHECK(max_abs_difference<double>(deep_out.states[3][T - 1][0].grad().view(),
                                         Tensor<double>(B, kHidden, 1.0).view()) == 0.0);
    }
}

TEST_CASE("recurrent: anomaly messages name the layer, direction, step and op") {
    std::mt19937_64 rng(51);
    LSTM<double> layer(small_options(2, true), rng);
    const std::size_t T = 7, B = 2;
    Tensor<double> x = uniform_tensor<double>(T * B, kInput, 1.0, rng);
    {
        Tape<double> tape;
        layer.cell(1).parameters()[1]->value(0, 0) = std::numeric_limits<double>::quiet_NaN();
        CHECK_NOTHROW(layer.forward(tape.constant(x), B)); // off by default
    }
    {
        AnomalyDetectionOn on;
        Tape<double> tape;
        const std::string message = error_message([&] { layer.forward(tape.constant(x), B); });
        INFO(message);
        CHECK(message.find("lstm.l1.fwd t=0") != std::string::npos);
        // The step's gates, computed in the rows of the projected inputs.
        CHECK(message.find("'linear_add_rows_in_place'") != std::string::npos);
        CHECK(message.find("NaN") != std::string::npos);
    }
    layer.cell(1).parameters()[1]->value(0, 0) = 0.1;
    {
        AnomalyDetectionOn on;
        Tape<double> tape;
        layer.cell(0, true).parameters()[1]->value(2, 1) = std::numeric_limits<double>::quiet_NaN();
        const std::string message = error_message([&] { layer.forward(tape.constant(x), B); });
        INFO(message);
        CHECK(message.find("lstm.l0.bwd t=6") != std::string::npos); // reverse starts at T-1
        layer.cell(0, true).parameters()[1]->value(2, 1) = 0.1;
    }
    {
        AnomalyDetectionOn on;
        Tape<double> tape;
        x(3 * B + 1, 2) = std::numeric_limits<double>::infinity();
        const std::string message = error_message([&] { layer.forward(tape.constant(x), B); });
        INFO(message);
        CHECK(message.find("lstm.l0.fwd") != std::string::npos);
        CHECK(message.find("'linear'") != std::string::npos);
    }
    CHECK_FALSE(anomaly_detection());
}

TEST_CASE("recurrent: bad inputs throw errors naming the layer and the shapes") {
    std::mt19937_64 rng(61);
    LSTM<double> lstm(small_options(2, true), rng);
    GRU<double> gru(small_options(1, false), rng);
    Tape<double> tape;
    const Var<double> x = tape.constant(Tensor<double>(6, kInput, 0.5)); // T = 3, B = 2
    const RecurrentState<double> good =
        state_on_tape(tape, lstm.zero_state(2)); // 4 entries of (h, c)

    std::string m = error_message([&] { lstm.forward(tape.constant(Tensor<double>(6, 5)), 2); });
    CHECK(m.find("lstm") != std::string::npos);
    CHECK(m.find("(6, 5)") != std::string::npos);
    CHECK(m.find("(T*B, 3)") != std::string::npos);
    m = error_message([&] { gru.forward(tape.constant(Tensor<double>(6, 2)), 2); });
    CHECK(m.find("gru") != std::string::npos);
    CHECK(m.find("(6, 2)") != std::string::npos);

    m = error_message([&] { lstm.forward(tape.constant(Tensor<double>(7, kInput)), 2); });
    CHECK(m.find("lstm") != std::string::npos);
    CHECK(m.find("(7, 3)") != std::string::npos);
    CHECK(m.find("B = 2") != std::string::npos);
    CHECK(error_message([&] { lstm.forward(x, 0); }).find("lstm") != std::string::npos);
    m = error_message([&] { lstm.forward(tape.constant(Tensor<double>(0, kInput)), 2); });
    CHECK(m.find("lstm") != std::string::npos);

    const std::vector<std::int32_t> three{3, 2, 1};
    m = error_message([&] { lstm.forward(x, 2, {}, three); });
    CHECK(m.find("lstm: got 3 lengths for a batch of 2") != std::string::npos);
    const std::vector<std::int32_t> too_long{3, 4};
    m = error_message([&] { lstm.forward(x, 2, {}, too_long); });
    CHECK(m.find("lstm: length 4 of sequence 1 is outside [0, 3]") != std::string::npos);
    const std::vector<std::int32_t> negative{-1, 2};
    CHECK(error_message([&] { lstm.forward(x, 2, {}, negative); }).find("length -1") !=
          std::string::npos);

    RecurrentState<double> bad = good;
    bad.pop_back();
    m = error_message([&] { lstm.forward(x, 2, bad); });
    CHECK(m.find("lstm") != std::string::npos);
    CHECK(m.find("has 3 entries, needs layers * directions = 4") != std::string::npos);
    bad = good;
    bad[2].pop_back();
    m = error_message([&] { lstm.forward(x, 2, bad); });
    CHECK(m.find("lstm: initial state 2 has 1 tensors, the cell needs 2") != std::string::npos);
    bad = good;
    bad[1][1] = tape.constant(Tensor<double>(2, 5));
    m = error_message([&] { lstm.forward(x, 2, bad); });
    CHECK(m.find("lstm") != std::string::npos);
    CHECK(m.find("(2, 5)") != std::string::npos);
    CHECK(m.find("(2, 4)") != std::string::npos);
    bad = good;
    bad[0][0] = tape.constant(Tensor<double>(3, 4));
    CHECK(error_message([&] { lstm.forward(x, 2, bad); }).find("(3, 4)") != std::string::npos);

    m = error_message([&] {
        Recurrent<double>("mine", small_options(1, false),
                          [&](std::size_t input, std::size_t, bool) {
                              return std::make_unique<GRUCell<double>>(input, kHidden + 1, rng);
                          });
    });
    CHECK(m.find("mine") != std::string::npos);
    CHECK(m.find("hidden 5") != std::string::npos);
    CHECK(error_message([&] { lstm.cell(2); }).find("lstm") != std::string::npos);
    CHECK(error_message([&] { gru.cell(0, true); }).find("gru") != std::string::npos);
    CHECK_NOTHROW(lstm.forward(x, 2, good, std::vector<std::int32_t>{3, 0}));
}
