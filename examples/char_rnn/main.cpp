// char_rnn: train, evaluate and sample a character-level recurrent language model.
//   char_rnn train  --data FILE --cell lstm --hidden 128 --layers 2 ... --checkpoint OUT
//   char_rnn eval   --checkpoint CKPT --data FILE [--json]
//   char_rnn sample --checkpoint CKPT --length N --temperature T --prime TEXT --seed S [--argmax]
//   char_rnn inspect --checkpoint CKPT --text FILE|--prime TEXT --out page.html [--json FILE]
//                    [--lstmvis DIR]   (examples/char_rnn/inspect_command.cpp, docs/inspect.md)
#include <chrono>
#include <cstdio>
#include <fstream>
#include <limits>
#include <numbers>
#include <optional>
#include <set>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cellgrad/version.hpp"
#include "char_rnn.hpp"
#include "cli.hpp"
#include "inspect_command.hpp"
#include "progress.hpp"
#include "ranks.hpp"

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
    double max_seconds = 0;
    std::string curve;
    int threads = 0; ///< 0: chosen from the model's shapes
    std::string checkpoint;
    std::string best;
    std::string init;
    std::string resume;
    /// The flags given on the command line (the others hold their defaults).
    std::set<std::string> given;
};

/// "--lr 0.01 (the checkpoint has 0.002)" for each flag given that differs from `stored`.
std::vector<std::string> conflicts(const TrainArguments& args, const char_rnn::ModelConfig& model,
                                   const char_rnn::TrainConfig* train) {
    std::vector<std::string> found;
    auto compare = [&](const char* flag, const auto& mine, const auto& stored) {
        if (args.given.contains(flag) && !(mine == stored)) {
            found.push_back(fmt::format("{} {} (the checkpoint has {})", flag, mine, stored));
        }
    };
    compare("--cell", args.model.cell, model.cell);
    compare("--hidden", args.model.hidden, model.hidden);
    compare("--layers", args.model.layers, model.layers);
    compare("--embedding", args.model.embedding, model.embedding);
    compare("--dropout", args.model.dropout, model.dropout);
    compare("--forget-bias", args.model.forget_bias, model.forget_bias);
    if (train != nullptr) {
        compare("--seq", args.train.seq, train->seq);
        compare("--batch", args.train.batch, train->batch);
        compare("--optimizer", args.train.optimizer, train->optimizer);
        compare("--lr", args.train.lr, train->lr);
        compare("--clip", args.train.clip, train->clip);
        compare("--seed", args.train.seed, train->seed);
    }
    return found;
}

/// Refuses output paths that cannot be written, or that are also inputs, before any work.
void check_outputs(const TrainArguments& args) {
    for (const auto& [flag, path] :
         {std::pair{"--checkpoint", &args.checkpoint}, std::pair{"--best", &args.best},
          std::pair{"--curve", &args.curve}}) {
        if (path->empty()) {
            continue;
        }
        char_rnn::check_output_path(*path, flag);
        for (const auto& [input_flag, input] :
             {std::pair{"--data", &args.data}, std::pair{"--init", &args.init}}) {
            if (!input->empty() && char_rnn::same_path(*path, *input)) {
                throw cellgrad::Error(fmt::format("{} '{}' is the same file as {} '{}': it "
                                                  "would be overwritten; write elsewhere",
                                                  flag, *path, input_flag, *input));
            }
        }
    }
    for (const auto& [flag, path] :
         {std::pair{"--checkpoint", &args.checkpoint}, std::pair{"--best", &args.best},
          std::pair{"--resume", &args.resume}}) {
        if (!args.curve.empty() && !path->empty() && char_rnn::same_path(args.curve, *path)) {
            throw cellgrad::Error(fmt::format("--curve '{}' is the same file as {}; give two names",
                                              args.curve, flag));
        }
    }
    if (!args.checkpoint.empty() && !args.best.empty() &&
        char_rnn::same_path(args.checkpoint, args.best)) {
        throw cellgrad::Error(fmt::format("--checkpoint and --best are the same file '{}'; give "
                                          "two names",
                                          args.checkpoint));
    }
    if (!args.init.empty() && !args.resume.empty()) {
        throw cellgrad::Error("--init and --resume exclude each other: --resume continues a run "
                              "(weights, optimizer, step), --init starts a new one from weights");
    }
}

/// Loss in one unit everywhere: "1.6160 nats/char (2.331 bits)".
std::string loss_text(double nats) {
    return fmt::format("{:.4f} nats/char ({:.3f} bits)", nats, nats / std::numbers::ln2);
}

/// Trains as one rank of `ranks` (alone when the job has one): each rank takes its share of the
/// streams, gradients are summed over the ranks every step, rank 0 validates, prints and writes.
int run_train(TrainArguments args, char_rnn::Ranks& ranks) {
    check_outputs(args);
    const bool leads = ranks.rank() == 0;
    const std::string text = char_rnn::read_file(args.data);
    char_rnn::Vocabulary vocabulary = char_rnn::Vocabulary::from_text(text);
    char_rnn::ModelConfig model_config = args.model;
    char_rnn::TrainConfig train_config = args.train;
    std::optional<cellgrad::io::SafetensorsFile> resume_file;
    if (!args.resume.empty()) {
        // A resume continues the stored run: model, optimizer and schedule come from the file.
        resume_file = cellgrad::io::load_safetensors(args.resume);
        const char_rnn::CheckpointInfo info = char_rnn::read_checkpoint_info(*resume_file);
        const std::vector<std::string> differ = conflicts(args, info.model, &info.train);
        if (!differ.empty()) {
            throw cellgrad::Error(fmt::format(
                "--resume '{}' continues that run with its own settings, but {} differ: {}; drop "
                "them, or start a new run from its weights with --init",
                args.resume, differ.size() == 1 ? "this flag would" : "these flags would",
                fmt::join(differ, ", ")));
        }
        model_config = info.model;
        train_config = info.train;
        vocabulary = info.vocabulary;
        if (leads) {
            fmt::print(
                stderr,
                "char_rnn: resuming '{}' at step {}: from the checkpoint: --cell {} --hidden {} "
                "--layers {} --embedding {} --dropout {} --forget-bias {} --seq {} --batch {} "
                "--optimizer {} --lr {} --clip {} --seed {}, vocabulary, weights, optimizer "
                "state{}; from the flags: --data, --steps, --val-fraction, --eval-every, "
                "--threads and the output paths\n",
                args.resume, info.step, model_config.cell, model_config.hidden, model_config.layers,
                model_config.embedding, model_config.dropout, model_config.forget_bias,
                train_config.seq, train_config.batch, train_config.optimizer, train_config.lr,
                train_config.clip, train_config.seed,
                info.best_val ? fmt::format(", best validation loss {}", *info.best_val) : "");
        }
    }
    std::optional<cellgrad::io::SafetensorsFile> init_file;
    if (!args.init.empty()) {
        // Weights (and so vocabulary and architecture) come from the checkpoint.
        init_file = cellgrad::io::load_safetensors(args.init);
        auto initial = char_rnn::load_model(*init_file);
        const std::vector<std::string> differ = conflicts(args, initial->config(), nullptr);
        if (!differ.empty()) {
            throw cellgrad::Error(fmt::format("--init '{}' fixes the architecture, but {}",
                                              args.init, fmt::join(differ, ", ")));
        }
        model_config = initial->config();
        vocabulary = initial->vocabulary();
    }
    const auto train_size = static_cast<std::size_t>(double(text.size()) * (1 - args.val_fraction));
    const std::vector<std::int32_t> all = vocabulary.encode(text, args.data);
    std::vector<std::int32_t> train_part(all.begin(), all.begin() + std::ptrdiff_t(train_size));
    const std::span<const std::int32_t> val_part(all.data() + train_size, all.size() - train_size);

    char_rnn::Trainer trainer(model_config, train_config, vocabulary, std::move(train_part));
    trainer.set_data_parallel(ranks.data_parallel(trainer));
    if (init_file) {
        char_rnn::load_weights(*init_file, trainer.model());
    }
    if (resume_file) {
        trainer.resume(*resume_file);
        resume_file.reset();
    }
    // Every rank must read the same text with the same settings and start from the same weights.
    const std::hash<std::string> hash;
    ranks.require_same((hash(text) * 1099511628211ULL) ^
                           hash(model_config.to_json() + train_config.to_json() +
                                std::to_string(trainer.step()) + std::to_string(args.steps)),
                       "the text of --data, the settings and the step (a hash of them)");
    ranks.share_weights(trainer);
    args.threads =
        examples::resolve_threads(args.threads, trainer.model().parameters(), train_config.batch);
    cellgrad::set_num_threads(args.threads);
    const std::size_t parameter_count = [&] {
        std::size_t total = 0;
        for (auto* parameter : trainer.model().parameters()) {
            total += parameter->value.size();
        }
        return total;
    }();
    if (leads) {
        fmt::print(
            stderr,
            "char_rnn: {} ({} x {}, embedding {}), {} parameters, vocabulary {}, {} train / {} "
            "val chars, {} windows per epoch, {} threads, openblas core {}{}\n",
            model_config.cell, model_config.layers, model_config.hidden, model_config.embedding,
            parameter_count, vocabulary.size(), train_size, val_part.size(),
            trainer.windows_per_epoch(), args.threads, cellgrad::blas_core_name(),
            ranks.size() > 1 ? fmt::format(", {} ranks sharing the {} streams (rank 0 "
                                           "validates and writes)",
                                           ranks.size(), train_config.batch)
                             : std::string());
    }

    // The learning curve: one CSV row per validation (appended to on --resume).
    std::ofstream curve;
    if (!args.curve.empty() && leads) { // only rank 0 writes the curve
        const bool fresh = !std::filesystem::exists(args.curve) || args.resume.empty();
        curve.open(args.curve, fresh ? std::ios::trunc : std::ios::app);
        if (!curve) {
            throw cellgrad::Error(fmt::format("train: cannot write --curve '{}'", args.curve));
        }
        if (fresh) {
            curve << "step,train_nats,val_nats,train_seconds,wall_seconds,tokens_per_second\n";
        }
    }
    const auto start = Clock::now();
    double train_seconds = 0;
    // A uniform guess scores ln V; a run far above that has diverged and is stopped unsaved.
    const double uniform = std::log(double(vocabulary.size()));
    const double diverged_above = 3 * uniform + 1;
    double smoothed_loss = uniform;
    double last_loss = smoothed_loss;
    double val_nats = std::numeric_limits<double>::quiet_NaN();
    const std::int64_t first_step = trainer.step();
    if (args.steps > char_rnn::max_step - first_step) {
        throw cellgrad::Error(fmt::format("train: --steps {} from step {} would pass the limit of "
                                          "{} steps",
                                          args.steps, first_step, char_rnn::max_step));
    }
    const std::int64_t last_step = first_step + args.steps;
    std::int64_t saved_step = -1;
    // The training loss since the previous validation, for the checkpoint's history.
    double interval_nats = 0;
    std::int64_t interval_steps = 0;
    const double tokens_per_step = double(train_config.seq * train_config.batch);
    const examples::ProgressLine progress(last_step);
    auto validate = [&] {
        if (val_part.size() < 2) {
            return;
        }
        // Rank 0 validates; every rank then knows the loss (for --best, a collective save).
        if (leads) {
            val_nats = char_rnn::evaluate(trainer.model(), val_part).nats;
        }
        val_nats = ranks.share(val_nats);
        if (val_nats > diverged_above) {
            progress.finish();
            throw cellgrad::Error(fmt::format(
                "train: the run diverged by step {}: the validation loss is {}, far above the {} "
                "of a uniform guess (ln {}); likely cause: --lr {} is too high{}; stopped without "
                "saving {}",
                trainer.step(), loss_text(val_nats), loss_text(uniform), vocabulary.size(),
                train_config.lr, train_config.clip > 0 ? "" : " with --clip 0 (off)",
                saved_step >= 0 ? fmt::format("(the checkpoint of step {} is kept)", saved_step)
                                : std::string("anything")));
        }
        // The history (in the checkpoint's metadata): losses and a short sample at each
        // validation, drawn with a seed fixed by the step so that a resumed run writes the same.
        trainer.history().add_point({trainer.step(),
                                     interval_steps > 0
                                         ? std::optional(interval_nats / double(interval_steps))
                                         : std::nullopt,
                                     val_nats});
        if (curve) {
            const double done = double(trainer.step() - first_step);
            curve << fmt::format("{},{},{},{:.3f},{:.3f},{:.1f}\n", trainer.step(),
                                 interval_steps > 0
                                     ? fmt::format("{}", interval_nats / double(interval_steps))
                                     : std::string(),
                                 val_nats, train_seconds, seconds_since(start),
                                 done * tokens_per_step / std::max(train_seconds, 1e-9));
            curve.flush();
        }
        interval_nats = 0;
        interval_steps = 0;
        char_rnn::SampleConfig taste;
        taste.length = char_rnn::TrainingHistory::max_sample_bytes - 1;
        taste.temperature = 0.8;
        taste.seed = std::uint64_t(trainer.step());
        taste.prime =
            std::string(1, char(vocabulary.contains('\n') ? '\n' : vocabulary.bytes()[0]));
        if (leads) { // only rank 0 writes the history
            trainer.history().add_sample(trainer.step(), char_rnn::sample(trainer.model(), taste));
        }
        if (!args.best.empty() && !(trainer.best_val() && *trainer.best_val() <= val_nats)) {
            trainer.set_best_val(val_nats);
            trainer.save(args.best);
        }
    };
    auto save = [&] {
        if (!args.checkpoint.empty()) {
            trainer.save(args.checkpoint);
            saved_step = trainer.step();
        }
    };
    std::string stopped_by = "steps";
    while (trainer.step() < last_step) {
        const auto step_start = Clock::now();
        last_loss = trainer.train_step(); // throws, before anything is saved, if non-finite
        interval_nats += last_loss;
        ++interval_steps;
        train_seconds += seconds_since(step_start);
        smoothed_loss =
            trainer.step() - first_step == 1 ? last_loss : 0.95 * smoothed_loss + 0.05 * last_loss;
        if (smoothed_loss > diverged_above) {
            progress.finish();
            throw cellgrad::Error(fmt::format(
                "train: the run diverged at step {}: the training loss is {}, far above the {} "
                "of a uniform guess (ln {}); likely cause: --lr {} is too high{}; stopped without "
                "saving {}",
                trainer.step(), loss_text(smoothed_loss), loss_text(uniform), vocabulary.size(),
                train_config.lr, train_config.clip > 0 ? "" : " with --clip 0 (off)",
                saved_step >= 0 ? fmt::format("(the checkpoint of step {} is kept)", saved_step)
                                : std::string("anything")));
        }
        // Rank 0's clock decides, so that every rank stops after the same step.
        const bool over_time =
            args.max_seconds > 0 &&
            ranks.share(seconds_since(start) > args.max_seconds ? 1.0 : 0.0) > 0.5;
        const bool evaluate_now = args.eval_every > 0 && (trainer.step() % args.eval_every == 0 ||
                                                          trainer.step() == last_step || over_time);
        if (evaluate_now) {
            validate();
            save();
        }
        const double done = double(trainer.step() - first_step);
        const double rate = done * tokens_per_step / std::max(train_seconds, 1e-9);
        const double eta = seconds_since(start) / done * double(last_step - trainer.step());
        const std::string val = std::isnan(val_nats) ? std::string("-") : loss_text(val_nats);
        if (leads) {
            progress.show(trainer.step(),
                          fmt::format("train {} val {} {:.0f} tok/s ETA {:.0f}s",
                                      loss_text(smoothed_loss), val, rate, eta),
                          evaluate_now);
        }
        if (over_time) {
            progress.finish();
            stopped_by = "max_seconds";
            break;
        }
    }
    if (args.eval_every <= 0 && val_part.size() >= 2) {
        validate();
    }
    if (saved_step != trainer.step()) {
        save();
    }
    const double wall = seconds_since(start);
    nlohmann::json summary = {
        {"cell", model_config.cell},
        {"hidden", model_config.hidden},
        {"layers", model_config.layers},
        {"steps", trainer.step()},
        {"stopped_by", stopped_by},
        {"train_loss", last_loss},
        {"train_loss_smoothed", smoothed_loss},
        {"train_bits_smoothed", smoothed_loss / std::numbers::ln2},
        {"val_nats", std::isnan(val_nats) ? nlohmann::json(nullptr) : nlohmann::json(val_nats)},
        {"val_bits", std::isnan(val_nats) ? nlohmann::json(nullptr)
                                          : nlohmann::json(val_nats / std::numbers::ln2)},
        {"tokens_per_second",
         double(trainer.step() - first_step) * tokens_per_step / std::max(train_seconds, 1e-9)},
        {"train_seconds", train_seconds},
        {"wall_seconds", wall},
        {"threads", args.threads},
        {"ranks", ranks.size()},
        {"blas_core", cellgrad::blas_core_name()},
    };
    if (leads) {
        fmt::print("{}\n", summary.dump());
    }
    return 0;
}

int run_eval(const std::string& checkpoint, const std::string& data, bool as_json, int threads) {
    auto model = char_rnn::load_model(checkpoint);
    cellgrad::set_num_threads(examples::resolve_threads(threads, model->parameters(), 1));
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
        fmt::print("{}: {} over {} predictions\n", data, loss_text(result.nats),
                   result.predictions);
    }
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"char_rnn: character-level recurrent language model on cellgrad"};
    app.set_version_flag("--version", cellgrad::version_line("char_rnn"));
    app.require_subcommand(1);

    using char_rnn::ModelConfig;
    using char_rnn::TrainConfig;
    using examples::Bound;
    using examples::real_number;
    using examples::whole_number;
    using examples::with_unit;
    examples::show_defaults(app);
    constexpr std::uint64_t most_steps = 1'000'000'000'000;
    constexpr std::uint64_t most_seed = std::numeric_limits<std::uint64_t>::max();
    const std::string file = "path";

    TrainArguments train;
    CLI::App* train_command = app.add_subcommand("train", "train a model on a text file");
    train_command
        ->add_option("--data", train.data,
                     with_unit("training text (any bytes, at most 1 GiB)", file))
        ->required();
    train_command
        ->add_option("--cell", train.model.cell,
                     "recurrent cell: lstm, gru, rnn (tanh) or a variant (lesson-lstm, "
                     "peephole-lstm, concat-peephole-lstm, cifg-lstm, nfg-lstm, noaf-lstm, "
                     "layernorm-lstm, cho-gru, mgu; docs/lstm.md)")
        ->check(CLI::IsMember(cellgrad::nn::cell_names()));
    train_command
        ->add_option("--hidden", train.model.hidden,
                     with_unit("hidden state size per layer", "units"))
        ->check(whole_number(1, ModelConfig::max_width, "units"));
    train_command->add_option("--layers", train.model.layers, with_unit("stacked layers", "layers"))
        ->check(whole_number(1, ModelConfig::max_layers, "layers"));
    train_command
        ->add_option("--embedding", train.model.embedding,
                     with_unit("embedding size of each character", "units"))
        ->check(whole_number(1, ModelConfig::max_width, "units"));
    train_command
        ->add_option("--dropout", train.model.dropout,
                     with_unit("dropout between layers", "probability"))
        ->check(real_number(0, ModelConfig::max_dropout));
    train_command
        ->add_option("--forget-bias", train.model.forget_bias,
                     with_unit("added to the LSTM forget-gate bias at init", "pre-activation"))
        ->check(real_number(-ModelConfig::max_forget_bias, ModelConfig::max_forget_bias));
    train_command
        ->add_option("--seq", train.train.seq,
                     with_unit("time steps per window (truncated BPTT)", "characters"))
        ->check(whole_number(1, TrainConfig::max_seq, "characters"));
    train_command
        ->add_option("--batch", train.train.batch, with_unit("parallel streams", "streams"))
        ->check(whole_number(1, TrainConfig::max_batch, "streams"));
    train_command
        ->add_option("--steps", train.steps,
                     with_unit("training steps in this run (0: just write the model)", "steps"))
        ->check(whole_number(0, most_steps, "steps"));
    train_command->add_option("--optimizer", train.train.optimizer, "adam, sgd, adagrad or rmsprop")
        ->check(CLI::IsMember({"adam", "sgd", "adagrad", "rmsprop"}));
    train_command
        ->add_option("--lr", train.train.lr,
                     with_unit("learning rate", "step size per unit gradient"))
        ->check(real_number(0, TrainConfig::max_lr, "", Bound::open));
    train_command
        ->add_option("--clip", train.train.clip,
                     with_unit("largest global gradient norm (0: no clipping)", "L2 norm"))
        ->check(real_number(0, TrainConfig::max_clip));
    train_command
        ->add_option("--seed", train.train.seed,
                     with_unit("seed of the initial weights and dropout", "integer"))
        ->check(whole_number(0, most_seed));
    train_command
        ->add_option("--val-fraction", train.val_fraction,
                     with_unit("tail of the file held out for validation", "fraction of the file"))
        ->check(real_number(0, 1, "", Bound::closed, Bound::open));
    train_command
        ->add_option(
            "--eval-every", train.eval_every,
            with_unit("validate and checkpoint every K steps (0: at the end only)", "steps"))
        ->check(whole_number(0, most_steps, "steps"));
    train_command
        ->add_option("--max-seconds", train.max_seconds,
                     with_unit("stop (validate and save first) once training has run this long "
                               "(0: no limit)",
                               "seconds of wall time"))
        ->check(real_number(0, 1e9));
    train_command->add_option(
        "--curve", train.curve,
        with_unit("write the learning curve here as CSV, a row per validation (default: none)",
                  file));
    train_command
        ->add_option("--threads", train.threads, with_unit(examples::threads_help, "threads"))
        ->check(whole_number(0, 256, "threads"));
    train_command->add_option(
        "--checkpoint", train.checkpoint,
        with_unit("the latest state goes here, written atomically (default: none)", file));
    train_command->add_option(
        "--best", train.best,
        with_unit("the state with the best validation loss goes here (default: none)", file));
    train_command->add_option(
        "--init", train.init,
        with_unit("start a new run from this checkpoint's weights (default: none)", file));
    train_command->add_option("--resume", train.resume,
                              with_unit("continue this checkpoint's run exactly: its settings, "
                                        "optimizer, step and state (default: none)",
                                        file));

    std::string checkpoint;
    std::string data;
    bool as_json = false;
    int threads = 0;
    CLI::App* eval_command = app.add_subcommand("eval", "mean cross-entropy of a text");
    eval_command->add_option("--checkpoint", checkpoint, with_unit("model checkpoint", file))
        ->required();
    eval_command->add_option("--data", data, with_unit("text to score (at most 1 GiB)", file))
        ->required();
    eval_command->add_flag("--json", as_json, "print JSON (nats and bits per character)");
    eval_command->add_option("--threads", threads, with_unit(examples::threads_help, "threads"))
        ->check(whole_number(0, 256, "threads"));

    char_rnn::SampleConfig sample;
    CLI::App* sample_command = app.add_subcommand("sample", "generate text");
    sample_command->add_option("--checkpoint", checkpoint, with_unit("model checkpoint", file))
        ->required();
    sample_command
        ->add_option("--length", sample.length,
                     with_unit("characters to generate after the prime", "characters"))
        ->check(whole_number(0, 1'000'000'000, "characters"));
    sample_command
        ->add_option("--temperature", sample.temperature,
                     with_unit("softmax temperature (lower: more likely characters)", "ratio"))
        ->check(real_number(0, 100, "", Bound::open));
    sample_command
        ->add_option("--prime", sample.prime, with_unit("text to start from", "characters"))
        ->default_str("\\n"); // shown escaped: the default is one newline
    sample_command->add_option("--seed", sample.seed, with_unit("sampling seed", "integer"))
        ->check(whole_number(0, most_seed));
    sample_command->add_flag("--argmax", sample.argmax, "always take the most likely character");

    char_rnn::InspectArguments inspect;
    CLI::App* inspect_command = char_rnn::add_inspect_command(app, inspect);

    CLI11_PARSE(app, argc, argv);
    std::unique_ptr<char_rnn::Ranks> ranks; // outlives the try block: an error must reach MPI
    try {
        if (train_command->parsed()) {
            for (const CLI::Option* option : train_command->get_options()) {
                if (option->count() > 0) {
                    train.given.insert(option->get_name());
                }
            }
            ranks = std::make_unique<char_rnn::Ranks>(argc, argv); // MPI, under mpirun
            return run_train(train, *ranks);
        }
        if (eval_command->parsed()) {
            return run_eval(checkpoint, data, as_json, threads);
        }
        if (inspect_command->parsed()) {
            return char_rnn::run_inspect(inspect);
        }
        cellgrad::set_num_threads(1);
        auto model = char_rnn::load_model(checkpoint);
        // Streamed: a long sample is written as it is made, not held in memory.
        char_rnn::sample(*model, sample, [](std::string_view piece) {
            std::fwrite(piece.data(), 1, piece.size(), stdout);
        });
        std::fputc('\n', stdout);
        return 0;
    } catch (const std::exception& error) {
        if (ranks && ranks->size() > 1) {
            // The other ranks would wait for this one forever: end the whole job.
            fmt::print(stderr, "char_rnn: rank {} of {}: error: {}\n", ranks->rank(), ranks->size(),
                       error.what());
            ranks->abort(1);
        }
        fmt::print(stderr, "char_rnn: error: {}\n", error.what());
        return 1;
    }
}
