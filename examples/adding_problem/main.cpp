// adding_problem: train a tanh RNN, an LSTM or a GRU on the adding problem (long time lag).
//   adding_problem --cell lstm --T 100 --hidden 128 --batch 50 --steps 5000 --lr 1e-3 --clip 1
//                  --seed 0 --forget-bias 0 --threads 1 --csv curve.csv --test-size 1000
// Fresh training batches every step from a seeded generator, a fixed held-out test set from
// another one; train and test MSE against the 0.1667 baseline on a progress line, a one-line JSON
// summary on stdout (steps and seconds to test MSE < --target included), the learning curve as CSV.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <memory>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "adding.hpp"
#include "cellgrad/optim/optim.hpp"
#include "cellgrad/version.hpp"
#include "cli.hpp"
#include "progress.hpp"

namespace {

using examples::Clock;
using examples::seconds_since;

/// Everything the program takes.
struct Arguments {
    adding::ModelSpec model;
    std::size_t steps_per_sequence = 100;
    std::size_t batch = 50;
    std::int64_t steps = 5000;
    std::string optimizer = "rmsprop";
    double lr = 1e-3;
    double alpha = 0.9;
    double clip = 1.0;
    std::uint64_t seed = 0;
    int threads = 0; ///< 0: chosen from the model's shapes
    std::string csv;
    std::size_t test_size = 1000;
    std::int64_t eval_every = 100;
    double target = 0.01;
    bool stop_at_target = false;
    double max_seconds = 0;
};

/// Trains as `args` says and prints the JSON summary; returns the exit code.
int run(const Arguments& args) {
    using T = float;
    const std::size_t steps_per_sequence = args.steps_per_sequence;
    // Separate generators: weights, training batches, the held-out test set.
    std::mt19937_64 weight_rng(args.seed);
    std::mt19937_64 data_rng(args.seed * 1000003 + 1);
    std::mt19937_64 test_rng(args.seed * 1000003 + 2);
    adding::Model<T> model(args.model, weight_rng);
    const int threads = examples::resolve_threads(args.threads, model.parameters(), args.batch);
    cellgrad::set_num_threads(threads);
    const adding::Batch<T> test_set =
        adding::make_batch<T>(steps_per_sequence, args.test_size, test_rng);

    std::unique_ptr<cellgrad::Optimizer<T>> optimizer;
    if (args.optimizer == "rmsprop") {
        optimizer = std::make_unique<cellgrad::RMSprop<T>>(
            model.parameters(), cellgrad::RMSpropOptions{.lr = args.lr, .alpha = args.alpha});
    } else {
        optimizer = std::make_unique<cellgrad::Adam<T>>(model.parameters(),
                                                        cellgrad::AdamOptions{.lr = args.lr});
    }
    std::size_t parameter_count = 0;
    for (auto* parameter : model.parameters()) {
        parameter_count += parameter->value.size();
    }
    fmt::print(stderr,
               "adding_problem: {} hidden {} (forget bias {}), {} parameters, T = {}, batch {}, "
               "{} lr {} clip {}, test set {}, seed {}, {} threads, openblas core {}\n",
               args.model.cell, args.model.hidden, args.model.forget_bias, parameter_count,
               steps_per_sequence, args.batch, optimizer->name(), args.lr, args.clip,
               args.test_size, args.seed, threads, cellgrad::blas_core_name());

    std::ofstream csv;
    if (!args.csv.empty()) {
        csv.open(args.csv);
        if (!csv) {
            throw cellgrad::Error(fmt::format("adding_problem: cannot write --csv {}", args.csv));
        }
        csv << "cell,T,hidden,forget_bias,seed,step,train_mse,test_mse,seconds\n";
    }

    const auto start = Clock::now();
    cellgrad::Tape<T> tape;
    const examples::ProgressLine progress(args.steps);
    double smoothed = std::numeric_limits<double>::quiet_NaN();
    double interval_sum = 0;
    std::int64_t interval_count = 0;
    double interval_mean = std::numeric_limits<double>::quiet_NaN();
    double test_mse = model.evaluate(test_set);
    double best_test = test_mse;
    std::int64_t steps_to_target = -1;
    double seconds_to_target = -1;
    std::string stopped = "steps";
    if (csv) {
        csv << fmt::format("{},{},{},{},{},0,,{},0\n", args.model.cell, steps_per_sequence,
                           args.model.hidden, args.model.forget_bias, args.seed, test_mse);
    }
    std::int64_t step = 0;
    while (step < args.steps) {
        const adding::Batch<T> batch =
            adding::make_batch<T>(steps_per_sequence, args.batch, data_rng);
        cellgrad::nn::RecurrentOutput<T> output;
        const cellgrad::Var<T> prediction = model.forward(tape, batch, output);
        const cellgrad::Var<T> loss = cellgrad::mse_loss(prediction, tape.constant(batch.targets));
        const double train_mse = double(loss.item());
        optimizer->zero_grad();
        tape.backward(loss);
        if (args.clip > 0) {
            cellgrad::clip_grad_norm(optimizer->parameters(), args.clip);
        }
        optimizer->step();
        tape.clear();
        ++step;
        if (!std::isfinite(train_mse)) {
            throw cellgrad::Error(
                fmt::format("adding_problem: train MSE became {} at step {}", train_mse, step));
        }
        smoothed = step == 1 ? train_mse : 0.98 * smoothed + 0.02 * train_mse;
        interval_sum += train_mse;
        ++interval_count;
        const bool over_time = args.max_seconds > 0 && seconds_since(start) > args.max_seconds;
        const bool evaluate_now = step % args.eval_every == 0 || step == args.steps || over_time;
        if (evaluate_now) {
            test_mse = model.evaluate(test_set);
            best_test = std::min(best_test, test_mse);
            interval_mean = interval_sum / double(interval_count);
            interval_sum = 0;
            interval_count = 0;
            if (csv) {
                csv << fmt::format("{},{},{},{},{},{},{},{},{:.3f}\n", args.model.cell,
                                   steps_per_sequence, args.model.hidden, args.model.forget_bias,
                                   args.seed, step, interval_mean, test_mse, seconds_since(start));
                csv.flush();
            }
            if (steps_to_target < 0 && test_mse < args.target) {
                steps_to_target = step;
                seconds_to_target = seconds_since(start);
            }
        }
        const double steps_per_second = double(step) / seconds_since(start);
        progress.show(step,
                      fmt::format("train MSE {:.4f} test MSE {:.4f} (baseline {:.4f}) {:.1f} "
                                  "steps/s ETA {:.0f}s",
                                  smoothed, test_mse, adding::baseline_mse, steps_per_second,
                                  double(args.steps - step) / std::max(steps_per_second, 1e-9)),
                      evaluate_now);
        if (steps_to_target >= 0 && args.stop_at_target) {
            stopped = "target";
            break;
        }
        if (over_time) {
            stopped = "max_seconds";
            break;
        }
    }
    if (step < args.steps) {
        progress.finish();
    }
    const double wall = seconds_since(start);
    auto or_null = [](double value, bool present) {
        return present ? nlohmann::json(value) : nlohmann::json(nullptr);
    };
    const nlohmann::json summary = {
        {"cell", args.model.cell},
        {"T", steps_per_sequence},
        {"hidden", args.model.hidden},
        {"forget_bias", args.model.forget_bias},
        {"batch", args.batch},
        {"optimizer", optimizer->name()},
        {"lr", args.lr},
        {"alpha", args.alpha},
        {"clip", args.clip},
        {"seed", args.seed},
        {"steps", step},
        {"steps_requested", args.steps},
        {"stopped_by", stopped},
        {"train_mse", or_null(interval_mean, std::isfinite(interval_mean))},
        {"test_mse", test_mse},
        {"best_test_mse", best_test},
        {"baseline_mse", adding::baseline_mse},
        {"target_mse", args.target},
        {"eval_every", args.eval_every},
        {"steps_to_target", or_null(double(steps_to_target), steps_to_target >= 0)},
        {"seconds_to_target", or_null(seconds_to_target, steps_to_target >= 0)},
        {"test_size", args.test_size},
        {"wall_seconds", wall},
        {"threads", threads},
        {"precision", "float32"},
        {"blas_core", cellgrad::blas_core_name()},
    };
    fmt::print("{}\n", summary.dump());
    return 0;
}

} // namespace

/// Parses the command line and runs; errors go to stderr with exit code 1.
int main(int argc, char** argv) {
    CLI::App app{"adding_problem: the adding problem (long time lag) on cellgrad"};
    app.set_version_flag("--version", cellgrad::version_line("adding_problem"));
    using examples::Bound;
    using examples::real_number;
    using examples::whole_number;
    using examples::with_unit;
    examples::show_defaults(app);
    Arguments args;
    app.add_option("--cell", args.model.cell,
                   "recurrent cell: rnn (tanh), lstm, gru or a variant (lesson-lstm, "
                   "peephole-lstm, concat-peephole-lstm, cifg-lstm, nfg-lstm, layernorm-lstm, "
                   "cho-gru, mgu)")
        ->check(CLI::IsMember(cellgrad::nn::cell_names()));
    app.add_option("--T", args.steps_per_sequence, with_unit("sequence length", "time steps"))
        ->check(whole_number(2, 100000, "time steps"));
    app.add_option("--hidden", args.model.hidden, with_unit("hidden state size", "units"))
        ->check(whole_number(1, 65536, "units"));
    app.add_option("--batch", args.batch, with_unit("sequences per training step", "sequences"))
        ->check(whole_number(1, 100000, "sequences"));
    app.add_option("--steps", args.steps, with_unit("training steps", "steps"))
        ->check(whole_number(1, 1'000'000'000, "steps"));
    app.add_option("--optimizer", args.optimizer, "rmsprop or adam")
        ->check(CLI::IsMember({"rmsprop", "adam"}));
    app.add_option("--lr", args.lr, with_unit("learning rate", "step size per unit gradient"))
        ->check(real_number(0, 100, "", Bound::open));
    app.add_option("--alpha", args.alpha,
                   with_unit("RMSprop decay of the squared-gradient average", "factor per step"))
        ->check(real_number(0, 1, "", Bound::closed, Bound::open));
    app.add_option("--clip", args.clip,
                   with_unit("largest global gradient norm (0: no clipping)", "L2 norm"))
        ->check(real_number(0, 1e6));
    app.add_option("--seed", args.seed,
                   with_unit("seed of weights, training data and test set", "integer"))
        ->check(whole_number(0, std::numeric_limits<std::uint64_t>::max()));
    app.add_option("--forget-bias", args.model.forget_bias,
                   with_unit("LSTM: added to the forget-gate bias at init", "pre-activation"))
        ->check(real_number(-100, 100));
    app.add_option("--threads", args.threads, with_unit(examples::threads_help, "threads"))
        ->check(whole_number(0, 256, "threads"));
    app.add_option("--csv", args.csv,
                   with_unit("write the learning curve here (default: none)", "path"));
    app.add_option("--test-size", args.test_size, with_unit("held-out test sequences", "sequences"))
        ->check(whole_number(1, 1'000'000, "sequences"));
    app.add_option("--eval-every", args.eval_every,
                   with_unit("steps between test evaluations", "steps"))
        ->check(whole_number(1, 1'000'000'000, "steps"));
    app.add_option("--target", args.target,
                   with_unit("test loss that counts as solved", "mean squared error"))
        ->check(real_number(0, 1e6));
    app.add_flag("--stop-at-target", args.stop_at_target, "stop once the test MSE is below target");
    app.add_option("--max-seconds", args.max_seconds,
                   with_unit("stop after this wall time (0: no limit)", "seconds"))
        ->check(real_number(0, 1e9));
    CLI11_PARSE(app, argc, argv);
    try {
        return run(args);
    } catch (const std::exception& error) {
        fmt::print(stderr, "adding_problem: error: {}\n", error.what());
        return 1;
    }
}
