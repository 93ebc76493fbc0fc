// char_rnn: train, evaluate and sample a character-level recurrent language model.
//   char_rnn train  --data FILE --cell lstm --hidden 128 --layers 2 ... --checkpoint OUT
//   char_rnn eval   --checkpoint CKPT --data FILE [--json]
//   char_rnn sample --checkpoint CKPT --length N --temperature T --prime TEXT --seed S [--argmax]
#include <chrono>
#include <cstdio>
#include <limits>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cellgrad/version.hpp"
#include "char_rnn.hpp"
#include "progress.hpp"

namespace {

using examples::Clock;
using examples::seconds_since;

/// Everything the train subcommand takes.
struct TrainArguments {
    std::string data;
    char_rnn::ModelConfig model;
    char_rnn::TrainConfig train;
    std::int64_t steps = 1000;
    double val_fraction = 0.05;
    std::int64_t eval_every = 200;
    int threads = 2;
    std::string checkpoint;
    std::string best;
    std::string init;
    std::string resume;
};

int run_train(const TrainArguments& args) {
    cellgrad::set_num_threads(args.threads);
    const std::string text = char_rnn::read_file(args.data);
    if (!(args.val_fraction >= 0 && args.val_fraction < 1)) {
        throw cellgrad::Error(
            fmt::format("train: --val-fraction must be in [0, 1), got {}", args.val_fraction));
    }
    char_rnn::Vocabulary vocabulary = char_rnn::Vocabulary::from_text(text);
    char_rnn::ModelConfig model_config = args.model;
    if (!args.init.empty()) {
        // Weights (and so vocabulary and architecture) come from the checkpoint.
        auto initial = char_rnn::load_model(args.init);
        model_config = initial->config();
        vocabulary = initial->vocabulary();
    }
    const auto train_size = static_cast<std::size_t>(double(text.size()) * (1 - args.val_fraction));
    const std::vector<std::int32_t> all = vocabulary.encode(text, args.data);
    std::vector<std::int32_t> train_part(all.begin(), all.begin() + std::ptrdiff_t(train_size));
    const std::span<const std::int32_t> val_part(all.data() + train_size, all.size() - train_size);

    char_rnn::Trainer trainer(model_config, args.train, vocabulary, std::move(train_part));
    if (!args.init.empty()) {
        char_rnn::load_weights(cellgrad::io::load_safetensors(args.init), trainer.model());
    }
    if (!args.resume.empty()) {
        trainer.resume(args.resume);
    }
    const std::size_t parameter_count = [&] {
        std::size_t total = 0;
        for (auto* parameter : trainer.model().parameters()) {
            total += parameter->value.size();
        }
        return total;
    }();
    fmt::print(stderr,
               "char_rnn: {} ({} x {}, embedding {}), {} parameters, vocabulary {}, {} train / {} "
               "val chars, {} windows per epoch, {} threads, openblas core {}\n",
               model_config.cell, model_config.layers, model_config.hidden, model_config.embedding,
               parameter_count, vocabulary.size(), train_size, val_part.size(),
               trainer.windows_per_epoch(), args.threads, cellgrad::blas_core_name());

    const auto start = Clock::now();
    double train_seconds = 0;
    double smoothed_loss = std::log(double(vocabulary.size()));
    double last_loss = smoothed_loss;
    double val_nats = std::numeric_limits<double>::quiet_NaN();
    double best_val = std::numeric_limits<double>::infinity();
    const std::int64_t first_step = trainer.step();
    const std::int64_t last_step = first_step + args.steps;
    const double tokens_per_step = double(args.train.seq * args.train.batch);
    const examples::ProgressLine progress(last_step);
    auto validate = [&] {
        if (val_part.size() < 2) {
            return;
        }
        val_nats = char_rnn::evaluate(trainer.model(), val_part).nats;
        if (!args.best.empty() && val_nats < best_val) {
            best_val = val_nats;
            trainer.save(args.best);
        }
    };
    while (trainer.step() < last_step) {
        const auto step_start = Clock::now();
        last_loss = trainer.train_step();
        train_seconds += seconds_since(step_start);
        if (!std::isfinite(last_loss)) {
            throw cellgrad::Error(fmt::format("train: loss became {} at step {}; try a lower --lr "
                                              "or --clip",
                                              last_loss, trainer.step()));
        }
        smoothed_loss =
            trainer.step() - first_step == 1 ? last_loss : 0.95 * smoothed_loss + 0.05 * last_loss;
        const bool evaluate_now = args.eval_every > 0 && (trainer.step() % args.eval_every == 0 ||
                                                          trainer.step() == last_step);
        if (evaluate_now) {
            validate();
            if (!args.checkpoint.empty()) {
                trainer.save(args.checkpoint);
            }
        }
        const double done = double(trainer.step() - first_step);
        const double rate = done * tokens_per_step / std::max(train_seconds, 1e-9);
        const double eta = seconds_since(start) / done * double(last_step - trainer.step());
        const std::string val = std::isnan(val_nats)
                                    ? std::string("  -  ")
                                    : fmt::format("{:.3f}", val_nats / std::numbers::ln2);
        progress.show(trainer.step(),
                      fmt::format("loss {:.4f} val {} bits/char {:.0f} tok/s ETA {:.0f}s",
                                  smoothed_loss, val, rate, eta),
                      evaluate_now);
    }
    if (args.eval_every <= 0 && val_part.size() >= 2) {
        validate();
    }
    if (!args.checkpoint.empty()) {
        trainer.save(args.checkpoint);
    }
    const double wall = seconds_since(start);
    nlohmann::json summary = {
        {"cell", model_config.cell},
        {"hidden", model_config.hidden},
        {"layers", model_config.layers},
        {"steps", trainer.step()},
        {"train_loss", last_loss},
        {"train_loss_smoothed", smoothed_loss},
        {"val_nats", std::isnan(val_nats) ? nlohmann::json(nullptr) : nlohmann::json(val_nats)},
        {"val_bits", std::isnan(val_nats) ? nlohmann::json(nullptr)
                                          : nlohmann::json(val_nats / std::numbers::ln2)},
        {"tokens_per_second",
         double(trainer.step() - first_step) * tokens_per_step / std::max(train_seconds, 1e-9)},
        {"train_seconds", train_seconds},
        {"wall_seconds", wall},
        {"threads", args.threads},
        {"blas_core", cellgrad::blas_core_name()},
    };
    fmt::print("{}\n", summary.dump());
    return 0;
}

int run_eval(const std::string& checkpoint, const std::string& data, bool as_json, int threads) {
    cellgrad::set_num_threads(threads);
    auto model = char_rnn::load_model(checkpoint);
    const std::vector<std::int32_t> indices =
        model->vocabulary().encode(char_rnn::read_file(data), data);
    const auto start = Clock::now();
    const char_rnn::EvalResult result = char_rnn::evaluate(*model, indices);
    if (as_json) {
        fmt::print("{}\n", nlohmann::json{{"nats", result.nats},
                                          {"bits", result.bits()},
                                          {"predictions", result.predictions},
                                          {"seconds", seconds_since(start)}}
                               .dump());
    } else {
        fmt::print("{}: {:.4f} nats/char, {:.4f} bits/char over {} predictions\n", data,
                   result.nats, result.bits(), result.predictions);
    }
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"char_rnn: character-level recurrent language model on cellgrad"};
    app.set_version_flag("--version", cellgrad::version_line("char_rnn"));
    app.require_subcommand(1);

    TrainArguments train;
    CLI::App* train_command = app.add_subcommand("train", "train a model on a text file");
    train_command->add_option("--data", train.data, "training text (any bytes)")->required();
    train_command->add_option("--cell", train.model.cell, "lstm, gru or rnn")
        ->check(CLI::IsMember({"lstm", "gru", "rnn"}));
    train_command->add_option("--hidden", train.model.hidden, "hidden units per layer")
        ->check(CLI::PositiveNumber);
    train_command->add_option("--layers", train.model.layers, "stacked layers")
        ->check(CLI::PositiveNumber);
    train_command->add_option("--embedding", train.model.embedding, "embedding size")
        ->check(CLI::PositiveNumber);
    train_command->add_option("--dropout", train.model.dropout, "dropout between layers")
        ->check(CLI::Range(0.0, 0.99));
    train_command->add_option("--forget-bias", train.model.forget_bias, "LSTM forget-gate bias");
    train_command->add_option("--seq", train.train.seq, "time steps per window")
        ->check(CLI::PositiveNumber);
    train_command->add_option("--batch", train.train.batch, "parallel streams")
        ->check(CLI::PositiveNumber);
    train_command->add_option("--steps", train.steps, "training steps (0: just write the model)")
        ->check(CLI::NonNegativeNumber);
    train_command->add_option("--optimizer", train.train.optimizer, "adam, sgd, adagrad, rmsprop")
        ->check(CLI::IsMember({"adam", "sgd", "adagrad", "rmsprop"}));
    train_command->add_option("--lr", train.train.lr, "learning rate")->check(CLI::PositiveNumber);
    train_command->add_option("--clip", train.train.clip, "gradient-norm clip (0: none)")
        ->check(CLI::NonNegativeNumber);
    train_command->add_option("--seed", train.train.seed, "seed of init and dropout");
    train_command->add_option("--val-fraction", train.val_fraction, "tail of the file held out");
    train_command->add_option("--eval-every", train.eval_every,
                              "validate and checkpoint every K steps (0: at the end only)");
    train_command->add_option("--threads", train.threads, "threads (TBB and OpenBLAS)")
        ->check(CLI::PositiveNumber);
    train_command->add_option("--checkpoint", train.checkpoint, "latest state goes here");
    train_command->add_option("--best", train.best, "best state by validation loss goes here");
    train_command->add_option("--init", train.init, "start from this checkpoint's weights");
    train_command->add_option("--resume", train.resume,
                              "continue this checkpoint's run exactly (optimizer, step, state)");

    std::string checkpoint;
    std::string data;
    bool as_json = false;
    int threads = 2;
    CLI::App* eval_command = app.add_subcommand("eval", "mean cross-entropy of a text");
    eval_command->add_option("--checkpoint", checkpoint, "model checkpoint")->required();
    eval_command->add_option("--data", data, "text to score")->required();
    eval_command->add_flag("--json", as_json, "print JSON");
    eval_command->add_option("--threads", threads, "threads")->check(CLI::PositiveNumber);

    char_rnn::SampleConfig sample;
    CLI::App* sample_command = app.add_subcommand("sample", "generate text");
    sample_command->add_option("--checkpoint", checkpoint, "model checkpoint")->required();
    sample_command->add_option("--length", sample.length, "characters to generate");
    sample_command->add_option("--temperature", sample.temperature, "softmax temperature (> 0)");
    sample_command->add_option("--prime", sample.prime, "text to start from");
    sample_command->add_option("--seed", sample.seed, "sampling seed");
    sample_command->add_flag("--argmax", sample.argmax, "always take the most likely character");

    CLI11_PARSE(app, argc, argv);
    try {
        if (train_command->parsed()) {
            return run_train(train);
        }
        if (eval_command->parsed()) {
            return run_eval(checkpoint, data, as_json, threads);
        }
        cellgrad::set_num_threads(1);
        auto model = char_rnn::load_model(checkpoint);
        fmt::print("{}\n", char_rnn::sample(*model, sample));
        return 0;
    } catch (const std::exception& error) {
        fmt::print(stderr, "char_rnn: error: {}\n", error.what());
        return 1;
    }
}
