// The long-time-lag tasks of examples/adding_problem: the copy-memory task's data layout, its
// memoryless baseline, the recall accuracy, the model's gradients, and that an LSTM learns it; the
// gradient-flow lab's model ids and decay fit (examples/vanishing_gradients/flow.hpp).
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "cellgrad/optim/optim.hpp"
#include "copy.hpp"
#include "flow.hpp"

using cellgrad::Tensor;

namespace {

/// The class whose entry is 1 in a one-hot row; -1 unless the row is exactly one-hot.
int one_hot_class(const Tensor<double>& inputs, std::size_t row) {
    int found = -1;
    for (std::size_t k = 0; k < inputs.cols(); ++k) {
        if (inputs(row, k) == 1.0) {
            if (found >= 0) {
                return -1;
            }
            found = int(k);
        } else if (inputs(row, k) != 0.0) {
            return -1;
        }
    }
    return found;
}

/// Logits (L*B, 10) of the memoryless strategy: certain blank where the target is blank, uniform
/// over the symbols 1..8 on the last 10 steps (a huge negative logit stands for probability 0).
Tensor<double> memoryless_logits(const copy_task::Batch<double>& batch) {
    Tensor<double> logits(batch.steps * batch.batch, copy_task::classes, -1e4);
    const std::size_t recall_from = (batch.steps - copy_task::remembered) * batch.batch;
    for (std::size_t row = 0; row < logits.rows(); ++row) {
        if (row < recall_from) {
            logits(row, std::size_t(copy_task::blank)) = 0;
        } else {
            for (std::size_t k = 1; k <= 8; ++k) {
                logits(row, k) = 0;
            }
        }
    }
    return logits;
}

} // namespace

TEST_CASE("copy task: 10 symbols, the delay's blanks, the delimiter, and targets that recall") {
    std::mt19937_64 rng(3);
    const std::size_t delay = 5, batch = 4;
    const auto data = copy_task::make_batch<double>(delay, batch, rng);
    REQUIRE(data.steps == 25);
    REQUIRE(data.inputs.rows() == 25 * batch);
    REQUIRE(data.inputs.cols() == 10);
    REQUIRE(data.targets.size() == 25 * batch);
    for (std::size_t b = 0; b < batch; ++b) {
        for (std::size_t t = 0; t < data.steps; ++t) {
            const int symbol = one_hot_class(data.inputs, t * batch + b);
            const int target = data.targets[t * batch + b];
            INFO("sequence " << b << " step " << t);
            if (t < 10) {
                CHECK(symbol >= 1);
                CHECK(symbol <= 8);
            } else if (t == 10 + delay) {
                CHECK(symbol == copy_task::delimiter);
            } else {
                CHECK(symbol == copy_task::blank);
            }
            if (t < data.steps - 10) {
                CHECK(target == copy_task::blank);
            } else { // the last 10 steps reproduce the first 10 inputs in order
                CHECK(target == one_hot_class(data.inputs, (t - (data.steps - 10)) * batch + b));
            }
        }
    }
    // The symbols are drawn, not fixed: over the batch all 8 of them occur.
    std::vector<int> seen(10, 0);
    for (std::size_t row = 0; row < 10 * batch; ++row) {
        ++seen[std::size_t(one_hot_class(data.inputs, row))];
    }
    for (int symbol = 1; symbol <= 8; ++symbol) {
        CHECK(seen[std::size_t(symbol)] > 0);
    }
    CHECK_THROWS_WITH_AS(copy_task::make_batch<double>(0, 2, rng), doctest::Contains("delay >= 1"),
                         cellgrad::Error);
}

TEST_CASE("copy task: the memoryless strategy scores 10 ln 8 / (T + 20) on the batch") {
    // The reference values of Arjovsky et al.: 0.173 at T = 100, 0.0945 at T = 200.
    CHECK(copy_task::baseline_loss(100) == doctest::Approx(0.17329).epsilon(1e-4));
    CHECK(copy_task::baseline_loss(200) == doctest::Approx(0.094522).epsilon(1e-4));
    for (const std::size_t delay : {1u, 7u, 100u}) {
        std::mt19937_64 rng(delay);
        const auto data = copy_task::make_batch<double>(delay, 3, rng);
        cellgrad::Tape<double> tape;
        const double loss =
            cellgrad::cross_entropy<double>(tape.constant(memoryless_logits(data)), data.targets)
                .item();
        INFO("delay " << delay);
        CHECK(loss == doctest::Approx(copy_task::baseline_loss(delay)).epsilon(1e-12));
    }
}

TEST_CASE("copy task: recall accuracy counts the right argmax on the last 10 steps only") {
    std::mt19937_64 rng(5);
    const auto data = copy_task::make_batch<double>(4, 2, rng);
    Tensor<double> logits(data.steps * data.batch, 10);
    const std::size_t recall_from = (data.steps - 10) * data.batch;
    for (std::size_t row = 0; row < logits.rows(); ++row) {
        // Wrong (class 9) before the recall, right on it: the accuracy ignores the first part.
        logits(row, row < recall_from ? 9 : std::size_t(data.targets[row])) = 1;
    }
    CHECK(copy_task::recall_accuracy<double>(logits.view(), data) == 1.0);
    // Move 5 of the 20 recalled rows to a wrong symbol: 15 / 20 right.
    for (std::size_t row = recall_from; row < recall_from + 5; ++row) {
        const auto right = std::size_t(data.targets[row]);
        logits(row, right) = 0;
        logits(row, right % 8 + 1) = 1;
    }
    CHECK(copy_task::recall_accuracy<double>(logits.view(), data) == 0.75);
}

TEST_CASE("copy task: the model's gradients match central differences (float64)") {
    for (const char* cell : {"lstm", "gru", "rnn"}) {
        std::mt19937_64 rng(11);
        copy_task::Model<double> model({cell, 3, 1.0}, rng);
        const auto data = copy_task::make_batch<double>(2, 2, rng);
        const cellgrad::GradCheckReport report = cellgrad::grad_check(
            [&](cellgrad::Tape<double>& tape) { return model.loss(tape, data); },
            model.parameters());
        INFO(cell << ": " << report.summary());
        CHECK(report.passed);
    }
}

TEST_CASE("copy task: an LSTM beats the memoryless baseline at a short delay") {
    // 10 symbols after 3 blanks: a small LSTM trained for 1500 steps must recall well above chance
    // (1/8 of the symbols; it reaches 0.46) and score below 10 ln 8 / 23 = 0.904 nats per step.
    cellgrad::set_num_threads(1);
    std::mt19937_64 weight_rng(0), data_rng(1), test_rng(2);
    copy_task::Model<float> model({"lstm", 32, 1.0}, weight_rng);
    cellgrad::RMSprop<float> optimizer(model.parameters(), {.lr = 1e-2, .alpha = 0.9});
    const auto test_set = copy_task::make_batch<float>(3, 200, test_rng);
    const copy_task::Score before = model.evaluate(test_set);
    cellgrad::Tape<float> tape;
    for (int step = 0; step < 1500; ++step) {
        const auto batch = copy_task::make_batch<float>(3, 32, data_rng);
        const cellgrad::Var<float> loss = model.loss(tape, batch);
        optimizer.zero_grad();
        tape.backward(loss);
        cellgrad::clip_grad_norm(optimizer.parameters(), 1.0);
        optimizer.step();
        tape.clear();
    }
    const copy_task::Score after = model.evaluate(test_set);
    INFO("before: loss " << before.loss << " accuracy " << before.recall_accuracy
                         << "; after: loss " << after.loss << " accuracy "
                         << after.recall_accuracy);
    CHECK(before.loss > copy_task::baseline_loss(3));
    CHECK(after.loss < copy_task::baseline_loss(3));
    CHECK(after.recall_accuracy > 0.3);
}

TEST_CASE("gradient-flow lab: model ids name any cell, with or without a forget bias") {
    const flow::ModelEntry lstm = flow::model_entry("lstm_fb1", 16);
    CHECK(lstm.spec.cell == "lstm");
    CHECK(lstm.spec.forget_bias == 1.0);
    CHECK(lstm.spec.hidden == 16);
    CHECK(lstm.label == "LSTM forget bias 1");
    const flow::ModelEntry cifg = flow::model_entry("cifg-lstm_fb-0.5", 8);
    CHECK(cifg.spec.cell == "cifg-lstm");
    CHECK(cifg.spec.forget_bias == -0.5);
    const flow::ModelEntry mgu = flow::model_entry("mgu", 8);
    CHECK(mgu.spec.cell == "mgu");
    CHECK(mgu.spec.forget_bias == 0.0);
    CHECK(mgu.label == "minimal gated unit");
    for (const std::string& cell : cellgrad::nn::cell_names()) {
        CHECK(flow::model_entry(cell, 4).spec.cell == cell);
        CHECK(flow::cell_label(cell) != "");
    }
    CHECK_THROWS_WITH_AS(flow::model_entry("lstm_fb", 8), doctest::Contains("'_fb' must be"),
                         cellgrad::Error);
    CHECK_THROWS_WITH_AS(flow::model_entry("lstm_fb1x", 8), doctest::Contains("'_fb' must be"),
                         cellgrad::Error);
    CHECK_THROWS_WITH_AS(flow::model_entry("transformer", 8),
                         doctest::Contains("unknown model 'transformer'; a cell (rnn, lstm, gru"),
                         cellgrad::Error);
}

TEST_CASE("gradient-flow lab: the decay fit recovers a geometric factor per step") {
    // log10 norm at step t of T = 60 falls by log10(0.6) per step of lag (lag = T - 1 - t); steps
    // outside the fitted lags [5, 40] are spoiled and must not matter, nor may a missing point.
    const std::size_t steps = 60;
    std::vector<double> curve(steps);
    for (std::size_t t = 0; t < steps; ++t) {
        const double lag = double(steps - 1 - t);
        curve[t] = -1.5 + lag * std::log10(0.6);
    }
    curve[steps - 1] = 3.0;                                           // lag 0: outside the fit
    curve[steps - 1 - 50] = 7.0;                                      // lag 50: outside the fit
    curve[steps - 1 - 20] = std::numeric_limits<double>::quiet_NaN(); // lag 20: skipped
    const auto [slope, r2, points] = flow::fit_curve(curve, 5, 40);
    CHECK(points == 35);
    CHECK(std::pow(10.0, slope) == doctest::Approx(0.6).epsilon(1e-12));
    CHECK(r2 == doctest::Approx(1.0).epsilon(1e-12));
    // A spoiled point inside the range moves the fit and lowers R^2.
    curve[steps - 1 - 30] += 2.0;
    const auto [spoiled_slope, spoiled_r2, spoiled_points] = flow::fit_curve(curve, 5, 40);
    CHECK(std::pow(10.0, spoiled_slope) != doctest::Approx(0.6).epsilon(1e-3));
    CHECK(spoiled_r2 < 0.999);
    CHECK(flow::quantile({4, 1, std::numeric_limits<double>::quiet_NaN(), 3, 2}, 0.5) == 2.5);
}
