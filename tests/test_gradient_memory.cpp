// Gradient memory: Tape::reuse_gradient_memory hands a node's gradient buffer to earlier nodes
// once its backward has run, and the weight-gradient products are summed in chunks during the
// reverse pass. Neither may change a parameter gradient by a single bit.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cellgrad/cellgrad.hpp"
#include "cellgrad/grad_check.hpp"
#include "cellgrad/nn.hpp"

#include "../src/ops/weight_products.hpp"

using namespace cellgrad;

namespace {

/// Parameter gradients and tape bytes of one step of embedding rows -> `cell` layer -> mean.
struct StepResult {
    std::vector<Tensor<float>> grads;
    Tensor<float> input_grad;
    std::size_t tape_bytes = 0;
    std::string intermediate_error;
};

StepResult lstm_step(const std::string& cell, bool reuse, std::size_t checkpoint_steps = 0) {
    const std::size_t T = 40, B = 16, E = 24, H = 256; // T*B = 640 rows: over one chunk
    std::mt19937_64 rng(3);
    nn::RecurrentOptions options;
    options.input_size = E;
    options.hidden_size = H;
    options.num_layers = 2;
    options.checkpoint_steps = checkpoint_steps;
    auto layer = nn::make_recurrent<float>(cell, options, rng);
    Tensor<float> x(T * B, E);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (std::size_t i = 0; i < x.size(); ++i) {
        x.data()[i] = static_cast<float>(normal(rng));
    }
    StepResult result;
    Tape<float> tape;
    tape.reuse_gradient_memory(reuse);
    for (int round = 0; round < 2; ++round) { // the second round runs in the merged arena
        tape.clear();
        for (Parameter<float>* parameter : layer->parameters()) {
            parameter->zero_grad();
        }
        const Var<float> input = tape.input(x);
        const nn::RecurrentOutput<float> out = layer->forward(input, B);
        const Var<float> loss = mean(mul(out.output, out.output));
        tape.backward(loss);
        result.input_grad = input.grad();
        try {
            (void)out.steps[7].grad();
        } catch (const Error& error) {
            result.intermediate_error = error.what();
        }
    }
    for (Parameter<float>* parameter : layer->parameters()) {
        result.grads.push_back(parameter->grad);
    }
    result.tape_bytes = tape.memory_bytes();
    return result;
}

bool bitwise_equal(const Tensor<float>& a, const Tensor<float>& b) {
    if (a.shape() != b.shape()) {
        return false;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (a.data()[i] != b.data()[i]) {
            return false;
        }
    }
    return true;
}

} // namespace

TEST_CASE("reuse_gradient_memory: the same gradients bit for bit, in less memory") {
    for (const std::string cell : {"lstm", "gru"}) {
        CAPTURE(cell);
        const StepResult kept = lstm_step(cell, false);
        const StepResult reused = lstm_step(cell, true);
        REQUIRE(kept.grads.size() == reused.grads.size());
        for (std::size_t i = 0; i < kept.grads.size(); ++i) {
            CAPTURE(i);
            CHECK(bitwise_equal(kept.grads[i], reused.grads[i]));
        }
        // A leaf keeps its gradient either way.
        CHECK(bitwise_equal(kept.input_grad, reused.input_grad));
        // The steps' gradients (B, H) and (B, 4H or 3H) no longer all live at once (measured:
        // 0.83 of the bytes for the LSTM, whose gates already share the projection's rows).
        CHECK(double(reused.tape_bytes) < 0.9 * double(kept.tape_bytes));
        // An intermediate gradient is readable only while buffers are kept.
        CHECK(kept.intermediate_error.empty());
        CHECK(reused.intermediate_error.find("reuse_gradient_memory") != std::string::npos);
    }
}

TEST_CASE("reuse_gradient_memory with checkpointed segments: the same gradients bit for bit") {
    // The segments' backward reads and overwrites the previous segment's gradient rows after
    // later nodes' buffers were handed on: none of that may reach a released buffer. (Against
    // the full graph, checkpointing itself changes weight gradients by float rounding:
    // test_checkpoint.cpp.)
    for (const std::string cell : {"lstm", "gru"}) {
        CAPTURE(cell);
        const StepResult kept = lstm_step(cell, false, 7); // 40 steps: 5 x 7 + 5
        const StepResult reused = lstm_step(cell, true, 7);
        REQUIRE(kept.grads.size() == reused.grads.size());
        for (std::size_t i = 0; i < kept.grads.size(); ++i) {
            CAPTURE(i);
            CHECK(bitwise_equal(kept.grads[i], reused.grads[i]));
        }
        CHECK(bitwise_equal(kept.input_grad, reused.input_grad));
        CHECK(double(reused.tape_bytes) < double(kept.tape_bytes));
    }
}

TEST_CASE("weight gradients summed in chunks during backward match central differences") {
    // 120 steps of (200, 8) rows through one (8, 8) weight: 24,000 rows of dy and x, more than
    // WeightProducts sums in one chunk, so chunks are summed while the reverse pass goes on.
    const std::size_t steps = 120, rows = 200, width = 8;
    std::mt19937_64 rng(5);
    std::normal_distribution<double> normal(0.0, 1.0);
    Tensor<double> w0(width, width), x0(rows, width);
    for (std::size_t i = 0; i < w0.size(); ++i) {
        w0.data()[i] = 0.4 * normal(rng);
    }
    for (std::size_t i = 0; i < x0.size(); ++i) {
        x0.data()[i] = normal(rng);
    }
    Parameter<double> w("w", w0);
    Parameter<double> b("b", Tensor<double>(1, width, 0.1), true);
    const auto loss = [&](Tape<double>& tape) {
        Var<double> h = tape.constant(x0);
        for (std::size_t t = 0; t < steps; ++t) {
            h = tanh(linear(h, tape.param(w), tape.param(b)));
        }
        return mean(mul(h, h));
    };
    GradCheckOptions options;
    options.full_check_limit = 64;
    const GradCheckReport report = grad_check(loss, {&w, &b}, options);
    INFO(report.summary());
    CHECK(report.passed);
    CHECK(report.checked == 72);
}

namespace {

/// One LSTM step over `steps` x 64 rows (hidden 256): the loss mean(h^2) and every parameter's
/// gradient, with the weights of `source` when given (converted to T), and the tape's counts of
/// weight-gradient GEMMs.
template <class T>
struct WideLstmRun {
    std::unique_ptr<nn::Recurrent<T>> layer;
    std::vector<Tensor<T>> grads;
    typename WeightProducts<T>::SumCounts counts;

    template <class Source>
    WideLstmRun(std::size_t steps, const std::vector<Parameter<Source>*>* source) {
        const std::size_t batch = 64;
        nn::RecurrentOptions options;
        options.input_size = 8;
        options.hidden_size = 256;
        std::mt19937_64 rng(7);
        layer = nn::make_recurrent<T>("lstm", options, rng);
        std::vector<Parameter<T>*> params = layer->parameters();
        for (std::size_t i = 0; source != nullptr && i < params.size(); ++i) {
            const Tensor<Source>& from = (*source)[i]->value;
            for (std::size_t e = 0; e < from.size(); ++e) {
                params[i]->value.data()[e] = T(from.data()[e]);
            }
        }
        std::mt19937_64 data_rng(8);
        std::uniform_real_distribution<double> uniform(-1.0, 1.0);
        Tensor<T> input(steps * batch, options.input_size);
        for (std::size_t e = 0; e < input.size(); ++e) {
            input.data()[e] = T(uniform(data_rng));
        }
        Tape<T> tape;
        const Var<T> h = layer->forward(tape.input(input), batch).output;
        for (Parameter<T>* p : params) {
            p->zero_grad();
        }
        tape.backward(mean(mul(h, h)));
        for (Parameter<T>* p : params) {
            grads.push_back(p->grad);
        }
        counts = tape.template extension<WeightProducts<T>>().sum_counts();
    }
};

} // namespace

TEST_CASE("weight gradients summed from rows read in place, over several chunks, match float64") {
    // Hidden 256 over 40 steps of 64 rows: the recurrent weight's dy rows (its gate gradients)
    // lie in one buffer and are read in place; its x rows (the states) are copied, 1 KB a row in
    // float, so its GEMMs are cut at the stacking budget. A wrong in-place view or chunk edge
    // would show here against the float64 run of the same weights.
    const std::size_t steps = 40;
    const WideLstmRun<float> single(steps, static_cast<std::vector<Parameter<float>*>*>(nullptr));
    const std::vector<Parameter<float>*> weights = single.layer->parameters();
    const WideLstmRun<double> reference(steps, &weights);
    REQUIRE(single.grads.size() == reference.grads.size());
    for (std::size_t i = 0; i < single.grads.size(); ++i) {
        CAPTURE(weights[i]->name);
        double largest = 0, worst = 0;
        for (std::size_t e = 0; e < single.grads[i].size(); ++e) {
            const double want = reference.grads[i].data()[e];
            largest = std::max(largest, std::abs(want));
            worst = std::max(worst, std::abs(double(single.grads[i].data()[e]) - want));
        }
        CHECK(largest > 0);
        CHECK(worst <= 1e-4 * largest);
    }
    // W_ih: one GEMM over every row, both operands in place. W_hh: one product a step, its
    // copied states cut into chunks of budget / (256 * sizeof(T)) rows (whole steps here).
    const std::size_t rows = steps * 64;
    const auto hh_chunks = [&](std::size_t element_bytes) {
        const std::size_t chunk_rows =
            WeightProducts<float>::stack_budget_bytes / (256 * element_bytes);
        return (rows + chunk_rows - 1) / chunk_rows;
    };
    REQUIRE(hh_chunks(sizeof(float)) >= 2);
    CHECK(single.counts.gemms == 1 + hh_chunks(sizeof(float)));
    CHECK(reference.counts.gemms == 1 + hh_chunks(sizeof(double)));
    CHECK(single.counts.dy_rows_in_place == 2 * rows);
    CHECK(single.counts.x_rows_in_place == rows);
}

namespace {

/// A tanh RNN cell on GatedWeights whose step reads its event as `order` says: "gates" (gates()
/// alone: the runner's rows are taken over in place), "var-then-gates" (a copy-free read first,
/// so gates() must leave the rows alone) or "gates-then-var" (a misuse: the rows are gone).
class ReadingCell : public nn::Cell<float> {
  public:
    ReadingCell(std::size_t input, std::size_t hidden, std::string order, std::mt19937_64& rng)
        : weights(input, hidden, 1, true, "", rng), order_(std::move(order)) {}
    std::size_t input_size() const override { return weights.input_size; }
    std::size_t hidden_size() const override { return weights.hidden_size; }
    std::vector<Parameter<float>*> parameters() override { return weights.parameters(); }
    void attach(Tape<float>& tape) override { weights.attach(tape); }
    Var<float> project_inputs(const Var<float>& x) override { return weights.project_inputs(x); }
    std::vector<Var<float>> step(const nn::StepInput<float>& event,
                                 std::span<const Var<float>> state) override {
        if (order_ == "var-then-gates") {
            (void)event.var();
        }
        const Var<float> h = tanh(weights.gates(event, state[0]));
        if (order_ == "gates-then-var") {
            (void)event.var();
        }
        return {h};
    }
    nn::GatedWeights<float> weights;

  private:
    std::string order_;
};

/// Output and parameter gradients of a 30-step run of ReadingCell(order) on fixed rows.
std::vector<Tensor<float>> reading_run(const std::string& order) {
    const std::size_t T = 30, B = 4, E = 5, H = 6;
    std::mt19937_64 rng(11);
    nn::RecurrentOptions options;
    options.input_size = E;
    options.hidden_size = H;
    nn::Recurrent<float> layer("reading", options, [&](std::size_t in, std::size_t, bool) {
        return std::make_unique<ReadingCell>(in, H, order, rng);
    });
    Tensor<float> x(T * B, E);
    for (std::size_t i = 0; i < x.size(); ++i) {
        x.data()[i] = std::sin(0.37f * float(i));
    }
    Tape<float> tape;
    const Var<float> input = tape.input(x);
    const nn::RecurrentOutput<float> out = layer.forward(input, B);
    tape.backward(mean(mul(out.output, out.output)));
    std::vector<Tensor<float>> result{out.output.value_tensor(), input.grad()};
    for (Parameter<float>* parameter : layer.parameters()) {
        result.push_back(parameter->grad);
    }
    return result;
}

} // namespace

TEST_CASE("a step's gates computed in its projected rows equal the copying path bit for bit") {
    const std::vector<Tensor<float>> in_place = reading_run("gates");
    const std::vector<Tensor<float>> copied = reading_run("var-then-gates");
    REQUIRE(in_place.size() == copied.size());
    for (std::size_t i = 0; i < in_place.size(); ++i) {
        CAPTURE(i);
        CHECK(bitwise_equal(in_place[i], copied[i]));
    }
    // Reading the event after gates() took its rows over is an error naming the fix.
    CHECK_THROWS_WITH_AS(reading_run("gates-then-var"),
                         doctest::Contains("read event.var() before gates()"), Error);
}
