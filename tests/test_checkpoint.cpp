// Tests of activation checkpointing in the sequence runner (RecurrentOptions::checkpoint_steps):
// a checkpointed layer gives the full graph's loss, outputs, input and initial-state gradients
// bitwise, its weight gradients bitwise with one segment and to float rounding with several
// (per-segment sums), passes a float64 gradient check, refuses lengths, and holds less memory.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cellgrad/cellgrad.hpp"
#include "cellgrad/nn.hpp"

using namespace cellgrad;
using namespace cellgrad::nn;

namespace {

constexpr std::size_t kBatch = 4;
constexpr std::size_t kSteps = 7;
constexpr std::size_t kInput = 5;
constexpr std::size_t kHidden = 6;
constexpr std::size_t kClasses = 9;

/// A random (rows, cols) tensor from `seed`.
template <class T>
Tensor<T> random_tensor(std::size_t rows, std::size_t cols, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> uniform(-1.0, 1.0);
    Tensor<T> out(rows, cols);
    for (std::size_t r = 0; r < rows; ++r) {
        for (std::size_t c = 0; c < cols; ++c) {
            out(r, c) = T(uniform(rng));
        }
    }
    return out;
}

/// A layer, a linear decoder and the gradients of one cross-entropy step over every output.
template <class T>
struct Run {
    std::unique_ptr<Recurrent<T>> layer;
    std::unique_ptr<Linear<T>> decoder;
    Tape<T> tape;
    double loss = 0;
    Tensor<T> output, input_grad;
    std::vector<Tensor<T>> initial_grads, final_state, parameter_grads;

    /// Builds `cell` (layers, bidirectional) with weights from seed 3, checkpointed every `k`
    /// steps (0: the full graph), and runs forward and backward from a given initial state.
    Run(const std::string& cell, std::size_t layers, bool bidirectional, std::size_t k) {
        RecurrentOptions options;
        options.input_size = kInput;
        options.hidden_size = kHidden;
        options.num_layers = layers;
        options.bidirectional = bidirectional;
        options.checkpoint_steps = k;
        std::mt19937_64 rng(3);
        layer = make_recurrent<T>(cell, options, rng);
        decoder = std::make_unique<Linear<T>>(kHidden * layer->directions(), kClasses, rng);
        const Var<T> x = tape.input(random_tensor<T>(kSteps * kBatch, kInput, 11));
        RecurrentState<T> initial(layers * layer->directions());
        std::uint64_t seed = 20;
        for (std::vector<Var<T>>& state : initial) {
            for (std::size_t s = 0; s < layer->state_size(); ++s) {
                state.push_back(tape.input(random_tensor<T>(kBatch, kHidden, seed++)));
            }
        }
        const RecurrentOutput<T> out = layer->forward(x, kBatch, initial);
        std::vector<std::int32_t> targets(kSteps * kBatch);
        for (std::size_t i = 0; i < targets.size(); ++i) {
            targets[i] = std::int32_t((i * 7 + 3) % kClasses);
        }
        const Var<T> result = cross_entropy<T>(decoder->forward(out.output), targets);
        for (Parameter<T>* p : parameters()) {
            p->zero_grad();
        }
        tape.backward(result);
        loss = double(result.item());
        output = out.output.value_tensor();
        input_grad = x.grad();
        for (const std::vector<Var<T>>& state : initial) {
            for (const Var<T>& part : state) {
                initial_grads.push_back(part.grad());
            }
        }
        for (const std::vector<Var<T>>& state : out.final_state) {
            for (const Var<T>& part : state) {
                final_state.push_back(part.value_tensor());
            }
        }
        for (Parameter<T>* p : parameters()) {
            parameter_grads.push_back(p->grad);
        }
    }

    /// The layer's and the decoder's parameters.
    std::vector<Parameter<T>*> parameters() {
        std::vector<Parameter<T>*> list = layer->parameters();
        for (Parameter<T>* p : decoder->parameters()) {
            list.push_back(p);
        }
        return list;
    }
};

/// True when every element of `a` equals `b`'s bit for bit (same shapes).
template <class T>
bool bitwise_equal(const Tensor<T>& a, const Tensor<T>& b) {
    return a.shape() == b.shape() && std::equal(a.data(), a.data() + a.size(), b.data());
}

/// Largest |a - b| over the largest |b| (0 when b is all zeros and a equals it).
template <class T>
double relative_difference(const Tensor<T>& a, const Tensor<T>& b) {
    double worst = 0, scale = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        worst = std::max(worst, std::abs(double(a.data()[i]) - double(b.data()[i])));
        scale = std::max(scale, std::abs(double(b.data()[i])));
    }
    return scale == 0 ? worst : worst / scale;
}

} // namespace

TEST_CASE("checkpointed layers give the full graph's values and gradients") {
    struct Case {
        const char* cell;
        std::size_t layers;
        bool bidirectional;
    };
    for (const Case& c :
         {Case{"lstm", 1, false}, Case{"gru", 1, false}, Case{"rnn", 1, false},
          Case{"lstm", 2, true}, Case{"gru", 2, true}, Case{"peephole-lstm", 1, false}}) {
        const Run<float> full(c.cell, c.layers, c.bidirectional, 0);
        for (const std::size_t k : {std::size_t(1), std::size_t(3), kSteps, kSteps + 5}) {
            CAPTURE(c.cell);
            CAPTURE(c.layers);
            CAPTURE(c.bidirectional);
            CAPTURE(k);
            const Run<float> checkpointed(c.cell, c.layers, c.bidirectional, k);
            // Bitwise while each segment's input projection (k*B rows) takes the same BLAS kernel
            // as the full graph's (T*B rows). OpenBLAS switches kernels for tiny products: at
            // k = 1 (4 rows) the 2-layer runs differ in the last bits, so k = 1 is held to
            // float rounding instead.
            const auto same = [&](const Tensor<float>& a, const Tensor<float>& b) {
                return k >= 3 ? bitwise_equal(a, b) : relative_difference(a, b) < 1e-5;
            };
            CHECK(std::abs(checkpointed.loss - full.loss) <= (k >= 3 ? 0.0 : 1e-6 * full.loss));
            CHECK(same(checkpointed.output, full.output));
            CHECK(same(checkpointed.input_grad, full.input_grad));
            REQUIRE(checkpointed.initial_grads.size() == full.initial_grads.size());
            for (std::size_t i = 0; i < full.initial_grads.size(); ++i) {
                CHECK(same(checkpointed.initial_grads[i], full.initial_grads[i]));
            }
            REQUIRE(checkpointed.final_state.size() == full.final_state.size());
            for (std::size_t i = 0; i < full.final_state.size(); ++i) {
                CHECK(same(checkpointed.final_state[i], full.final_state[i]));
            }
            // One segment (k >= T) sums every weight gradient exactly as the full graph; several
            // sum them per segment, which rounds differently in float.
            for (std::size_t i = 0; i < full.parameter_grads.size(); ++i) {
                if (k >= kSteps) {
                    CHECK(bitwise_equal(checkpointed.parameter_grads[i], full.parameter_grads[i]));
                } else {
                    CHECK(relative_difference(checkpointed.parameter_grads[i],
                                              full.parameter_grads[i]) < 1e-5);
                }
            }
        }
    }
}

TEST_CASE("checkpointed layers pass a float64 gradient check, parameters and input") {
    RecurrentOptions options;
    options.input_size = kInput;
    options.hidden_size = kHidden;
    options.checkpoint_steps = 2;
    std::mt19937_64 rng(5);
    const std::unique_ptr<Recurrent<double>> layer = make_recurrent<double>("lstm", options, rng);
    Parameter<double> x("x", random_tensor<double>(kSteps * kBatch, kInput, 8));
    const Tensor<double> weights = random_tensor<double>(kSteps * kBatch, kHidden, 9);
    std::vector<Parameter<double>*> checked = layer->parameters();
    checked.push_back(&x);
    const GradCheckReport report = grad_check(
        [&](Tape<double>& tape) {
            const RecurrentOutput<double> out = layer->forward(tape.param(x), kBatch);
            return sum(mul(out.output, tape.constant(weights)));
        },
        checked);
    CHECK_MESSAGE(report.passed, report.summary());
}

TEST_CASE("checkpointing refuses lengths by name") {
    RecurrentOptions options;
    options.input_size = kInput;
    options.hidden_size = kHidden;
    options.checkpoint_steps = 2;
    std::mt19937_64 rng(5);
    LSTM<float> layer(options, rng);
    Tape<float> tape;
    const std::vector<std::int32_t> lengths(kBatch, 3);
    CHECK_THROWS_WITH_AS(
        layer.forward(tape.constant(random_tensor<float>(kSteps * kBatch, kInput, 1)), kBatch, {},
                      lengths),
        doctest::Contains("checkpoint_steps does not support lengths"), Error);
}

TEST_CASE("checkpointing holds a fraction of the full graph's arena") {
    // T = 128 steps, hidden 64, batch 16: 16 segments of 8 keep the outputs, 16 boundary states
    // and one segment's graph; the full graph keeps all 128 steps' graphs. (Smaller sizes measure
    // the arenas' 256 KB minimum blocks and the weight-gradient stacking buffers.)
    const auto arena = [](std::size_t k) {
        RecurrentOptions options;
        options.input_size = 16;
        options.hidden_size = 64;
        options.checkpoint_steps = k;
        std::mt19937_64 rng(1);
        LSTM<float> layer(options, rng);
        Tape<float> tape;
        for (int round = 0; round < 2; ++round) { // the second round's arenas are one block each,
            tape.clear();                         // of the first round's high-water mark
            const RecurrentOutput<float> out =
                layer.forward(tape.input(random_tensor<float>(128 * 16, 16, 2)), 16);
            tape.backward(sum(out.output));
        }
        return tape.memory_bytes(); // the scratch tape's arena and stacking buffers included
    };
    const std::size_t full = arena(0);
    const std::size_t checkpointed = arena(8);
    CAPTURE(full);
    CAPTURE(checkpointed);
    CHECK(double(checkpointed) < 0.5 * double(full));
}

namespace {

/// One step of layer + decoder + cross-entropy (summed over rows, divided by T*B) on `cell`, in
/// double: the full graph (k = 0) or checkpointed_sequence_loss with segments of k steps.
/// Returns the loss, then the input's and every parameter's gradient.
std::pair<double, std::vector<Tensor<double>>> loss_step(const std::string& cell, std::size_t k) {
    RecurrentOptions options;
    options.input_size = kInput;
    options.hidden_size = kHidden;
    std::mt19937_64 rng(3);
    const std::unique_ptr<Recurrent<double>> layer = make_recurrent<double>(cell, options, rng);
    Linear<double> decoder(kHidden, kClasses, rng);
    std::vector<std::int32_t> targets(kSteps * kBatch);
    for (std::size_t i = 0; i < targets.size(); ++i) {
        targets[i] = std::int32_t((i * 7 + 3) % kClasses);
    }
    const double rows = double(targets.size());
    Tape<double> tape;
    const Var<double> x = tape.input(random_tensor<double>(kSteps * kBatch, kInput, 11));
    Var<double> loss;
    if (k == 0) {
        const RecurrentOutput<double> out = layer->forward(x, kBatch);
        loss =
            scale(cross_entropy<double>(decoder.forward(out.output), targets, {}, Reduction::sum),
                  1.0 / rows);
    } else {
        loss = checkpointed_sequence_loss<double>(
            *layer, x, kBatch, k,
            [&](const Var<double>& outputs, std::size_t first, std::size_t steps) {
                const std::span<const std::int32_t> part(targets.data() + first * kBatch,
                                                         steps * kBatch);
                return scale(
                    cross_entropy<double>(decoder.forward(outputs), part, {}, Reduction::sum),
                    1.0 / rows);
            });
    }
    std::vector<Parameter<double>*> parameters = layer->parameters();
    for (Parameter<double>* p : decoder.parameters()) {
        parameters.push_back(p);
    }
    for (Parameter<double>* p : parameters) {
        p->zero_grad();
    }
    tape.backward(loss);
    std::vector<Tensor<double>> grads = {x.grad()};
    for (Parameter<double>* p : parameters) {
        grads.push_back(p->grad);
    }
    return {double(loss.item()), grads};
}

} // namespace

TEST_CASE("checkpointed_sequence_loss gives the full graph's loss and gradients") {
    for (const std::string cell : {"lstm", "gru", "rnn"}) {
        const auto [full_loss, full_grads] = loss_step(cell, 0);
        for (const std::size_t k : {std::size_t(1), std::size_t(3), kSteps, kSteps + 5}) {
            CAPTURE(cell);
            CAPTURE(k);
            const auto [loss, grads] = loss_step(cell, k);
            CHECK(loss == doctest::Approx(full_loss).epsilon(1e-13));
            REQUIRE(grads.size() == full_grads.size());
            for (std::size_t i = 0; i < grads.size(); ++i) {
                CAPTURE(i); // 0: the input, then the layer's and the decoder's parameters
                CHECK(relative_difference(grads[i], full_grads[i]) < 1e-12);
                CHECK(relative_difference(full_grads[i], Tensor<double>(full_grads[i].rows(),
                                                                        full_grads[i].cols())) >
                      0); // every gradient reached
            }
        }
    }
}

TEST_CASE("checkpointed_sequence_loss refuses what it cannot run, by name") {
    RecurrentOptions options;
    options.input_size = kInput;
    options.hidden_size = kHidden;
    options.num_layers = 2;
    std::mt19937_64 rng(5);
    LSTM<float> two_layers(options, rng);
    Tape<float> tape;
    const Var<float> x = tape.constant(random_tensor<float>(kSteps * kBatch, kInput, 1));
    const SegmentLoss<float> mean_output = [](const Var<float>& outputs, std::size_t, std::size_t) {
        return mean(outputs);
    };
    CHECK_THROWS_WITH_AS(checkpointed_sequence_loss<float>(two_layers, x, kBatch, 2, mean_output),
                         doctest::Contains("needs one layer in one direction"), Error);
    options.num_layers = 1;
    LSTM<float> layer(options, rng);
    CHECK_THROWS_WITH_AS(
        checkpointed_sequence_loss<float>(layer, x, kBatch + 1, 2, mean_output),
        doctest::Contains("checkpointed_sequence_loss: input (28, 5) with batch 5"), Error);
    const SegmentLoss<float> not_scalar = [](const Var<float>& outputs, std::size_t, std::size_t) {
        return outputs;
    };
    CHECK_THROWS_WITH_AS(checkpointed_sequence_loss<float>(layer, x, kBatch, 2, not_scalar),
                         doctest::Contains("must be a (1, 1) Var"), Error);
}

TEST_CASE("checkpointed_sequence_loss holds no step's output on the caller's tape") {
    // T = 256, hidden 64, batch 16, decoder to 32 classes: with the loss inside, the caller's
    // tape keeps the input, 16 boundary states and 16 losses; RecurrentOptions::checkpoint_steps
    // keeps every output, their copy for the decoder, the logits and their gradients.
    const auto arena = [](bool loss_inside) {
        const std::size_t T = 256, B = 16, E = 16, H = 64, V = 32, k = 16;
        RecurrentOptions options;
        options.input_size = E;
        options.hidden_size = H;
        options.checkpoint_steps = loss_inside ? 0 : k;
        std::mt19937_64 rng(1);
        LSTM<float> layer(options, rng);
        Linear<float> decoder(H, V, rng);
        std::vector<std::int32_t> targets(T * B);
        for (std::size_t i = 0; i < targets.size(); ++i) {
            targets[i] = std::int32_t(i % V);
        }
        Tape<float> tape;
        for (int round = 0; round < 2; ++round) { // the second round runs in merged arenas
            tape.clear();
            const Var<float> x = tape.input(random_tensor<float>(T * B, E, 2));
            Var<float> loss;
            if (loss_inside) {
                loss = checkpointed_sequence_loss<float>(
                    layer, x, B, k,
                    [&](const Var<float>& outputs, std::size_t first, std::size_t n) {
                        return cross_entropy<float>(
                            decoder.forward(outputs),
                            std::span<const std::int32_t>(targets.data() + first * B, n * B));
                    });
            } else {
                loss = cross_entropy<float>(decoder.forward(layer.forward(x, B).output), targets);
            }
            tape.backward(loss);
        }
        return tape.memory_bytes(); // the scratch tapes' arenas included
    };
    const std::size_t outputs_kept = arena(false);
    const std::size_t loss_inside = arena(true);
    CAPTURE(outputs_kept);
    CAPTURE(loss_inside);
    CHECK(double(loss_inside) < 0.5 * double(outputs_kept));
}
