// adding_problem: train a recurrent cell (tanh RNN, LSTM, GRU or a variant) on a long-time-lag
// task: the adding problem (--task adding, the default) or the copy-memory task (--task copy).
//   adding_problem --cell lstm --T 100 --hidden 128 --batch 50 --steps 5000 --lr 1e-3 --clip 1
//                  --seed 0 --forget-bias 0 --threads 1 --csv curve.csv --test-size 1000
// Fresh training batches every step from a seeded generator, a fixed held-out test set from
// another one; train and test loss against the task's baseline (adding: MSE 1/6; copy: 10 ln 8 /
// (T + 20) nats per step) on a progress line, a one-line JSON summary on stdout (steps and seconds
// to test loss < --target included), the learning curve as CSV.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "adding.hpp"
#include "cellgrad/optim/optim.hpp"
#include "cellgrad/version.hpp"
#include "cli.hpp"
#include "copy.hpp"
#include "progress.hpp"

namespace {

using examples::Clock;
using examples::seconds_since;

/// Everything the program takes.
struct Arguments {
    std::string task = "adding";
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

/// A test-set reading: the task's loss and, for the copy task, the recall accuracy (else NaN).
struct Reading {
    double loss = 0;
    double recall_accuracy = std::numeric_limits<double>::quiet_NaN();
};

/// What the training loop needs from a task: one step's loss on `tape` from fresh data, a reading
/// on the fixed test set, the parameters, the baseline loss and the loss's name.
struct Task {
    std::function<cellgrad::Var<float>(cellgrad::Tape<float>&)> step_loss;
    std::function<Reading()> evaluate;
    std::vector<cellgrad::Parameter<float>*> parameters;
    double baseline = 0;
    std::string loss_name;
};

/// The adding problem (MSE of a head on h_T) or the copy task (cross-entropy on every step); the
/// task's functions own the model, the data generator and the test set (they refer to `args`).
Task make_task(const Arguments& args) {
    using T = float;
    const std::size_t length = args.steps_per_sequence;
    // Separate generators: weights, training batches, the held-out test set.
    std::mt19937_64 weight_rng(args.seed);
    auto data_rng = std::make_shared<std::mt19937_64>(args.seed * 1000003 + 1);
    std::mt19937_64 test_rng(args.seed * 1000003 + 2);
    Task task;
    if (args.task == "copy") {
        auto model = std::make_shared<copy_task::Model<T>>(args.model, weight_rng);
        auto test_set = std::make_shared<const copy_task::Batch<T>>(
            copy_task::make_batch<T>(length, args.test_size, test_rng));
        task.step_loss = [&args, length, model, data_rng](cellgrad::Tape<T>& tape) {
            const copy_task::Batch<T> batch =
                copy_task::make_batch<T>(length, args.batch, *data_rng);
            return model->loss(tape, batch);
        };
        task.evaluate = [model, test_set] {
            const copy_task::Score score = model->evaluate(*test_set);
            return Reading{score.loss, score.recall_accuracy};
        };
        task.parameters = model->parameters();
        task.baseline = copy_task::baseline_loss(length);
        task.loss_name = "cross-entropy";
        return task;
    }
    auto model = std::make_shared<adding::Model<T>>(args.model, weight_rng);
    auto test_set = std::make_shared<const adding::Batch<T>>(
        adding::make_batch<T>(length, args.test_size, test_rng));
    task.step_loss = [&args, length, model, data_rng](cellgrad::Tape<T>& tape) {
        const adding::Batch<T> batch = adding::make_batch<T>(length, args.batch, *data_rng);
        cellgrad::nn::RecurrentOutput<T> output;
        const cellgrad::Var<T> prediction = model->forward(tape, batch, output);
        return cellgrad::mse_loss(prediction, tape.constant(batch.targets));
    };
    task.evaluate = [model, test_set] { return Reading{model->evaluate(*test_set)}; };
    task.parameters = model->parameters();
    task.baseline = adding::baseline_mse;
    task.loss_name = "MSE";
    return task;
}

/// A CSV field: empty for NaN (gnuplot and pandas read that as missing).
std::string csv_field(double value) {
    return std::isfinite(value) ? fmt::format("{}", value) : std::string();
}

/// Trains as `args` says and prints the JSON summary; returns the exit code.
int run(const Arguments& args) {
    using T = float;
    const std::size_t steps_per_sequence = args.steps_per_sequence;
    const Task task = make_task(args);
    const int threads = examples::resolve_threads(args.threads, task.parameters, args.batch);
    cellgrad::set_num_threads(threads);

    std::unique_ptr<cellgrad::Optimizer<T>> optimizer;
    if (args.optimizer == "rmsprop") {
        optimizer = std::make_unique<cellgrad::RMSprop<T>>(
            task.parameters, cellgrad::RMSpropOptions{.lr = args.lr, .alpha = args.alpha});
    } else {
        optimizer = std::make_unique<cellgrad::Adam<T>>(task.parameters,
                                                        cellgrad::AdamOptions{.lr = args.lr});
    }
    std::size_t parameter_count = 0;
    for (auto* parameter : task.parameters) {
        parameter_count += parameter->value.size();
    }
    fmt::print(stderr,
               "adding_problem: task {} ({} baseline {:.4f}), {} hidden {} (forget bias {}), {} "
               "parameters, T = {}, batch {}, {} lr {} clip {}, test set {}, seed {}, {} threads, "
               "openblas core {}\n",
               args.task, task.loss_name, task.baseline, args.model.cell, args.model.hidden,
               args.model.forget_bias, parameter_count, steps_per_sequence, args.batch,
               optimizer->name(), args.lr, args.clip, args.test_size, args.seed, threads,
               cellgrad::blas_core_name());

    std::ofstream csv;
    if (!args.csv.empty()) {
        csv.open(args.csv);
        if (!csv) {
            throw cellgrad::Error(fmt::format("adding_problem: cannot write --csv {}", args.csv));
        }
        csv << "cell,T,hidden,forget_bias,seed,step,train_loss,test_loss,seconds,task,baseline,"
               "test_recall_accuracy\n";
    }
    auto csv_row = [&](std::int64_t step, double train_loss, const Reading& reading,
                       double seconds) {
        if (csv) {
            csv << fmt::format("{},{},{},{},{},{},{},{},{:.3f},{},{},{}\n", args.model.cell,
                               steps_per_sequence, args.model.hidden, args.model.forget_bias,
                               args.seed, step, csv_field(train_loss), reading.loss, seconds,
                               args.task, task.baseline, csv_field(reading.recall_accuracy));
            csv.flush();
        }
    };

    const auto start = Clock::now();
    cellgrad::Tape<T> tape;
    const examples::ProgressLine progress(args.steps);
    double smoothed = std::numeric_limits<double>::quiet_NaN();
    double interval_sum = 0;
    std::int64_t interval_count = 0;
    double interval_mean = std::numeric_limits<double>::quiet_NaN();
    Reading reading = task.evaluate();
    double best_test = reading.loss;
    std::int64_t steps_to_target = -1;
    double seconds_to_target = -1;
    std::string stopped = "steps";
    csv_row(0, std::numeric_limits<double>::quiet_NaN(), reading, 0);
    std::int64_t step = 0;
    while (step < args.steps) {
        const cellgrad::Var<T> loss = task.step_loss(tape);
        const double train_loss = double(loss.item());
        optimizer->zero_grad();
        tape.backward(loss);
        if (args.clip > 0) {
            cellgrad::clip_grad_norm(optimizer->parameters(), args.clip);
        }
        optimizer->step();
        tape.clear();
        ++step;
        if (!std::isfinite(train_loss)) {
            throw cellgrad::Error(fmt::format("adding_problem: train {} became {} at step {}",
                                              task.loss_name, train_loss, step));
        }
        smoothed = step == 1 ? train_loss : 0.98 * smoothed + 0.02 * train_loss;
        interval_sum += train_loss;
        ++interval_count;
        const bool over_time = args.max_seconds > 0 && seconds_since(start) > args.max_seconds;
        const bool evaluate_now = step % args.eval_every == 0 || step == args.steps || over_time;
        if (evaluate_now) {
            reading = task.evaluate();
            best_test = std::min(best_test, reading.loss);
            interval_mean = interval_sum / double(interval_count);
            interval_sum = 0;
            interval_count = 0;
            csv_row(step, interval_mean, reading, seconds_since(start));
            if (steps_to_target < 0 && reading.loss < args.target) {
                steps_to_target = step;
                seconds_to_target = seconds_since(start);
            }
        }
        const double steps_per_second = double(step) / seconds_since(start);
        progress.show(step,
                      fmt::format("train {} {:.4f} test {:.4f} (baseline {:.4f}) {:.1f} "
                                  "steps/s ETA {:.0f}s",
                                  task.loss_name, smoothed, reading.loss, task.baseline,
                                  steps_per_second,
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
    nlohmann::json summary = {
        {"task", args.task},
        {"loss", task.loss_name},
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
        {"train_loss", or_null(interval_mean, std::isfinite(interval_mean))},
        {"test_loss", reading.loss},
        {"best_test_loss", best_test},
        {"baseline_loss", task.baseline},
        {"test_recall_accuracy",
         or_null(reading.recall_accuracy, std::isfinite(reading.recall_accuracy))},
        {"target_loss", args.target},
        {"eval_every", args.eval_every},
        {"steps_to_target", or_null(double(steps_to_target), steps_to_target >= 0)},
        {"seconds_to_target", or_null(seconds_to_target, steps_to_target >= 0)},
        {"test_size", args.test_size},
        {"wall_seconds", wall},
        {"threads", threads},
        {"precision", "float32"},
        {"blas_core", cellgrad::blas_core_name()},
    };
    if (args.task == "adding") { // the names the adding problem's summaries always had
        summary["train_mse"] = summary["train_loss"];
        summary["test_mse"] = summary["test_loss"];
        summary["best_test_mse"] = summary["best_test_loss"];
        summary["baseline_mse"] = summary["baseline_loss"];
        summary["target_mse"] = summary["target_loss"];
    }
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
    app.add_option("--task", args.task,
                   "adding (MSE of the sum of two marked numbers, read at the last step) or copy "
                   "(recall 10 symbols after --T blanks; cross-entropy over all T + 20 steps)")
        ->check(CLI::IsMember({"adding", "copy"}));
    app.add_option("--cell", args.model.cell,
                   "recurrent cell: rnn (tanh), lstm, gru or a variant (lesson-lstm, "
                   "peephole-lstm, concat-peephole-lstm, cifg-lstm, nfg-lstm, noaf-lstm, "
                   "layernorm-lstm, cho-gru, mgu)")
        ->check(CLI::IsMember(cellgrad::nn::cell_names()));
    app.add_option(
           "--T", args.steps_per_sequence,
           with_unit("adding: sequence length; copy: blanks between the symbols and the delimiter",
                     "time steps"))
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
    app.add_option(
           "--target", args.target,
           with_unit("test loss that counts as solved", "MSE (adding) or nats per step (copy)"))
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
