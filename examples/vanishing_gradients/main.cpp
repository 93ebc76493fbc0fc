// vanishing_gradients: how the error signal fades with time lag in a tanh RNN, an LSTM (forget
// bias 0 and 1), a GRU or any variant cell, read straight off the graph
// (RecurrentOutput::states[..][t][k].grad()).
//   vanishing_gradients --T 200 --hidden 128 --batch 50 --seeds 5 --train-steps 300 --out-dir DIR
// Adding-problem sequences, loss = MSE of a Linear head on h_T (last step only). For every t:
// ||dL/dh_t|| per sequence (and ||dL/dc_t|| for the LSTMs), the median (or mean) over the batch,
// log10, then median / quartiles / min / max over seeds; at initialisation and after
// --train-steps steps of RMSprop (lr 1e-3, decay 0.9, clip 1). Float64 throughout, so norms down to
// 1e-300 stay exact. Writes DIR/gradient_flow.csv (tidy), DIR/decay_table.md and .csv
// (least-squares slope of log10 norm against lag over [--fit-from, --fit-to], as a factor per
// step 10^slope),
// DIR/gradient_flow.gp and, through gnuplot, DIR/gradient_flow.png and DIR/gradient_flow.svg.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <tuple>

#include <CLI/CLI.hpp>

#include "adding.hpp"
#include "cellgrad/optim/optim.hpp"
#include "cellgrad/version.hpp"
#include "cli.hpp"
#include "flow.hpp"
#include "progress.hpp"

namespace {

using T = double;
using examples::Clock;
using examples::seconds_since;
constexpr double nan = std::numeric_limits<double>::quiet_NaN();

/// Everything the program takes.
struct Arguments {
    std::size_t steps_per_sequence = 200;
    std::size_t hidden = 128;
    std::size_t batch = 50;
    std::size_t seeds = 5;
    std::int64_t train_steps = 300;
    std::size_t train_batch = 50;
    double lr = 1e-3;
    double alpha = 0.9;
    double clip = 1.0;
    std::vector<std::string> models{"rnn", "lstm_fb0", "lstm_fb1", "gru"};
    std::size_t fit_from = 10;
    std::size_t fit_to = 150;
    std::string batch_stat = "median";
    std::string out_dir = ".";
    int threads = 0; ///< 0: chosen from the shapes (a 4-gate cell at --train-batch)
    bool plot = true;
};

using flow::fit_curve;
using flow::model_entry;
using flow::ModelEntry;
using flow::quantile;

/// log10 of the batch statistic ("median" or "mean") of the per-row L2 norms of `grad` (B, H).
double log10_batch_norm(const cellgrad::Tensor<T>& grad, const std::string& batch_stat) {
    std::vector<double> norms(grad.rows());
    for (std::size_t b = 0; b < grad.rows(); ++b) {
        double sum = 0;
        for (std::size_t j = 0; j < grad.cols(); ++j) {
            sum += double(grad(b, j)) * double(grad(b, j));
        }
        norms[b] = std::sqrt(sum);
    }
    double value = 0;
    if (batch_stat == "mean") {
        for (double norm : norms) {
            value += norm / double(norms.size());
        }
    } else {
        value = quantile(norms, 0.5);
    }
    return value > 0 ? std::log10(value) : nan;
}

/// One backward pass from the loss on h_T: log10 norms [k][t] (k = 0: h, k = 1: c for an LSTM).
std::vector<std::vector<double>> measure(adding::Model<T>& model, const adding::Batch<T>& batch,
                                         const std::string& batch_stat) {
    cellgrad::Tape<T> tape;
    cellgrad::nn::RecurrentOutput<T> output;
    const cellgrad::Var<T> prediction = model.forward(tape, batch, output);
    const cellgrad::Var<T> loss = cellgrad::mse_loss(prediction, tape.constant(batch.targets));
    for (cellgrad::Parameter<T>* parameter : model.parameters()) {
        parameter->zero_grad();
    }
    tape.backward(loss);
    const auto& states = output.states[0]; // [t][k]
    std::vector<std::vector<double>> result(states.front().size(),
                                            std::vector<double>(states.size()));
    for (std::size_t t = 0; t < states.size(); ++t) {
        for (std::size_t k = 0; k < states[t].size(); ++k) {
            result[k][t] = log10_batch_norm(states[t][k].grad(), batch_stat);
        }
    }
    for (cellgrad::Parameter<T>* parameter : model.parameters()) {
        parameter->zero_grad();
    }
    return result;
}

/// `steps` steps of RMSprop with global-norm clipping on fresh batches; returns the last MSE.
double train(adding::Model<T>& model, const Arguments& args, std::mt19937_64& data_rng) {
    cellgrad::RMSprop<T> optimizer(model.parameters(),
                                   cellgrad::RMSpropOptions{.lr = args.lr, .alpha = args.alpha});
    cellgrad::Tape<T> tape;
    double last = nan;
    for (std::int64_t step = 0; step < args.train_steps; ++step) {
        const adding::Batch<T> batch =
            adding::make_batch<T>(args.steps_per_sequence, args.train_batch, data_rng);
        cellgrad::nn::RecurrentOutput<T> output;
        const cellgrad::Var<T> prediction = model.forward(tape, batch, output);
        const cellgrad::Var<T> loss = cellgrad::mse_loss(prediction, tape.constant(batch.targets));
        last = double(loss.item());
        optimizer.zero_grad();
        tape.backward(loss);
        if (args.clip > 0) {
            cellgrad::clip_grad_norm(optimizer.parameters(), args.clip);
        }
        optimizer.step();
        tape.clear();
    }
    return last;
}

/// Formats a number for a CSV field; empty for NaN/Inf (gnuplot reads that as missing).
std::string field(double value) {
    return std::isfinite(value) ? fmt::format("{:.6g}", value) : std::string();
}

/// `text` inside a single-quoted gnuplot string: each ' doubled ("lesson's LSTM").
std::string gnuplot_quoted(const std::string& text) {
    std::string out;
    for (char c : text) {
        out += c == '\'' ? std::string("''") : std::string(1, c);
    }
    return out;
}

/// The gnuplot script: two panels (at initialisation, after training), log y, one line per model.
/// `has_cell_state[id]` says whether the model's curves include dL/dc_t (the LSTM family).
std::string gnuplot_script(const std::vector<ModelEntry>& models,
                           const std::map<std::string, bool>& has_cell_state,
                           const Arguments& args) {
    const char* colours[] = {"#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
                             "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000", "#aec7e8"};
    std::ostringstream gp;
    gp << "# Generated by vanishing_gradients: gnuplot gradient_flow.gp (in this directory).\n"
       << "set datafile separator ','\n"
       << "set logscale y\nset format y '10^{%L}'\nset grid\n"
       << "set xlabel 't (time step; the loss reads h at t = T-1)'\n"
       << "set key bottom right font ',9'\n";
    std::string panels;
    for (const std::string phase : {"init", "trained"}) {
        std::ostringstream panel;
        panel << fmt::format("set title '{}' font ',11'\n",
                             phase == "init"
                                 ? std::string("at initialisation")
                                 : fmt::format("after {} RMSprop steps", args.train_steps));
        panel << "set ylabel 'gradient norm (median over seeds; band: quartiles)'\n";
        panel << "plot ";
        bool first = true;
        for (std::size_t m = 0; m < models.size(); ++m) {
            const char* colour = colours[m % 12];
            for (const std::string quantity : {"h", "c"}) {
                if (quantity == "c" && !has_cell_state.at(models[m].id)) {
                    continue;
                }
                const std::string selected =
                    fmt::format("(strcol(1) eq '{}' && strcol(3) eq '{}' && strcol(4) eq '{}' ? "
                                "$5 : NaN)",
                                models[m].id, phase, quantity);
                const std::string title =
                    gnuplot_quoted(fmt::format("{} ||dL/d{}_t||", models[m].label, quantity));
                panel << (first ? "" : ", \\\n     ")
                      << fmt::format("'gradient_flow.csv' using {}:(10**$8):(10**$9) with "
                                     "filledcurves fs transparent solid 0.15 noborder lc rgb '{}' "
                                     "notitle, \\\n     ",
                                     selected, colour)
                      << fmt::format("'gradient_flow.csv' using {}:(10**$7) with lines lw 2 dt {} "
                                     "lc rgb '{}' title '{}'",
                                     selected, quantity == "h" ? 1 : 2, colour, title);
                first = false;
            }
        }
        panel << "\n";
        panels += panel.str();
    }
    const std::string title = fmt::format(
        "log10 ||dL/dh_t|| against t, adding problem T = {}, hidden {}, {} seeds, batch {} "
        "({} over the batch), float64",
        args.steps_per_sequence, args.hidden, args.seeds, args.batch, args.batch_stat);
    for (const auto& [terminal, file] :
         {std::pair{"pngcairo size 1500,620 font 'sans,10'", "gradient_flow.png"},
          std::pair{"svg size 1500,620 dynamic font 'sans,10'", "gradient_flow.svg"}}) {
        gp << fmt::format("set terminal {}\nset output '{}'\n", terminal, file)
           << fmt::format("set multiplot layout 1,2 title '{}' font ',12'\n", title) << panels
           << "unset multiplot\nset output\n";
    }
    return gp.str();
}

/// Runs the lab as `args` says; returns the exit code.
int run(const Arguments& args) {
    // The largest model of the lab is an LSTM (4 gate blocks); its training batch sets the rule.
    const int threads =
        args.threads > 0
            ? args.threads
            : cellgrad::suggested_threads(args.train_batch, 4 * args.hidden, args.hidden);
    cellgrad::set_num_threads(threads);
    const auto start = Clock::now();
    const std::size_t steps = args.steps_per_sequence;
    std::vector<ModelEntry> models;
    for (const std::string& id : args.models) {
        models.push_back(model_entry(id, args.hidden));
    }
    const std::filesystem::path out_dir(args.out_dir);
    std::filesystem::create_directories(out_dir);
    fmt::print(stderr,
               "vanishing_gradients: T = {}, hidden {}, measure batch {}, {} seeds, {} training "
               "steps (batch {}, RMSprop lr {} decay {}, clip {}), float64, {} threads\n",
               steps, args.hidden, args.batch, args.seeds, args.train_steps, args.train_batch,
               args.lr, args.alpha, args.clip, threads);

    // curves[model][phase][quantity][seed][t] = log10 norm.
    using Curves = std::vector<std::vector<std::vector<double>>>; // [quantity][seed][t]
    std::map<std::string, std::map<std::string, Curves>> curves;
    const std::vector<std::string> phases{"init", "trained"};
    std::map<std::string, bool> has_cell_state;
    for (const ModelEntry& entry : models) {
        for (std::size_t seed = 0; seed < args.seeds; ++seed) {
            const auto seed_start = Clock::now();
            std::mt19937_64 weight_rng(seed);
            std::mt19937_64 measure_rng(seed * 1000003 + 7);
            std::mt19937_64 data_rng(seed * 1000003 + 1);
            adding::Model<T> model(entry.spec, weight_rng);
            const adding::Batch<T> batch = adding::make_batch<T>(steps, args.batch, measure_rng);
            auto at_init = measure(model, batch, args.batch_stat);
            const double last_mse = args.train_steps > 0 ? train(model, args, data_rng) : nan;
            auto trained = measure(model, batch, args.batch_stat);
            const std::size_t quantities = at_init.size(); // 2 (h, c) for the LSTM family
            has_cell_state[entry.id] = quantities > 1;
            for (const std::string& phase : phases) {
                curves[entry.id][phase].resize(quantities);
            }
            for (std::size_t k = 0; k < quantities; ++k) {
                curves[entry.id]["init"][k].push_back(std::move(at_init[k]));
                curves[entry.id]["trained"][k].push_back(std::move(trained[k]));
            }
            const auto& h0 = curves[entry.id]["init"][0].back();
            const auto& h1 = curves[entry.id]["trained"][0].back();
            fmt::print(stderr,
                       "  {:<28} seed {}: log10||dL/dh|| at lag 0 / {}: init {:.2f} / {:.2f}, "
                       "trained {:.2f} / {:.2f}; last train MSE {:.4f} ({:.1f}s)\n",
                       entry.label, seed, steps - 1, h0[steps - 1], h0[0], h1[steps - 1], h1[0],
                       last_mse, seconds_since(seed_start));
        }
    }

    // The tidy CSV: one row per model, phase, quantity and t.
    std::ofstream csv(out_dir / "gradient_flow.csv");
    if (!csv) {
        throw cellgrad::Error(fmt::format("vanishing_gradients: cannot write {}",
                                          (out_dir / "gradient_flow.csv").string()));
    }
    csv << "model,label,phase,quantity,t,lag,median_log10_norm,q25_log10_norm,q75_log10_norm,"
           "min_log10_norm,max_log10_norm,seeds\n";
    // Median-over-seeds curves for the slope fit: [model][phase][quantity][t].
    std::map<std::string, std::map<std::string, std::vector<std::vector<double>>>> medians;
    for (const ModelEntry& entry : models) {
        for (const std::string& phase : phases) {
            const Curves& per_quantity = curves[entry.id][phase];
            for (std::size_t k = 0; k < per_quantity.size(); ++k) {
                std::vector<double> median_curve(steps);
                for (std::size_t t = 0; t < steps; ++t) {
                    std::vector<double> values;
                    for (const auto& seed_curve : per_quantity[k]) {
                        values.push_back(seed_curve[t]);
                    }
                    median_curve[t] = quantile(values, 0.5);
                    csv << fmt::format("{},{},{},{},{},{},{},{},{},{},{},{}\n", entry.id,
                                       entry.label, phase, k == 0 ? "h" : "c", t, steps - 1 - t,
                                       field(median_curve[t]), field(quantile(values, 0.25)),
                                       field(quantile(values, 0.75)), field(quantile(values, 0)),
                                       field(quantile(values, 1)), values.size());
                }
                medians[entry.id][phase].push_back(std::move(median_curve));
            }
        }
    }
    csv.close();

    // The decay table: slope of the seed-median curve, and the range of the per-seed slopes.
    const std::size_t fit_to = std::min(args.fit_to, steps - 1);
    std::ostringstream table;
    table << fmt::format(
        "Least-squares slope of log10 ||dL/dx_t|| against lag = T-1-t over lags {}..{} (T = {}, "
        "hidden {}, {} seeds, {} of per-sequence norms over a batch of {}, float64); factor per "
        "step = 10^slope. `trained` = after {} RMSprop steps (lr {}, decay {}, clip {}, batch "
        "{}).\n\n",
        args.fit_from, fit_to, steps, args.hidden, args.seeds, args.batch_stat, args.batch,
        args.train_steps, args.lr, args.alpha, args.clip, args.train_batch);
    table << "| model | phase | x | slope (decades/step) | factor per step | per-seed factors "
             "(min-max) | R^2 | log10 norm at lag 0 / lag "
          << steps - 1 << " |\n";
    table << "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |\n";
    // The same numbers for other scripts (scripts/variants-lab.sh reads the factors from here).
    std::ofstream decay_csv(out_dir / "decay_table.csv");
    decay_csv << "model,cell,forget_bias,label,phase,quantity,slope,factor_per_step,"
                 "seed_factor_min,seed_factor_max,r2\n";
    for (const ModelEntry& entry : models) {
        for (const std::string& phase : phases) {
            const auto& per_quantity = medians[entry.id][phase];
            for (std::size_t k = 0; k < per_quantity.size(); ++k) {
                const auto [slope, r2, points] = fit_curve(per_quantity[k], args.fit_from, fit_to);
                std::vector<double> seed_factors;
                for (const auto& seed_curve : curves[entry.id][phase][k]) {
                    seed_factors.push_back(
                        std::pow(10.0, std::get<0>(fit_curve(seed_curve, args.fit_from, fit_to))));
                }
                const std::string points_note =
                    points + args.fit_from <= fit_to ? fmt::format(" ({} pts)", points) : "";
                table << fmt::format(
                    "| {} | {} | {} | {:.4f} | {:.3f}{} | {:.3f}-{:.3f} | {:.3f} | {:.2f} / {:.2f} "
                    "|\n",
                    entry.label, phase, k == 0 ? "h" : "c", slope, std::pow(10.0, slope),
                    points_note, quantile(seed_factors, 0), quantile(seed_factors, 1), r2,
                    per_quantity[k][steps - 1], per_quantity[k][0]);
                decay_csv << fmt::format(
                    "{},{},{},{},{},{},{},{},{},{},{}\n", entry.id, entry.spec.cell,
                    entry.spec.forget_bias, entry.label, phase, k == 0 ? "h" : "c", field(slope),
                    field(std::pow(10.0, slope)), field(quantile(seed_factors, 0)),
                    field(quantile(seed_factors, 1)), field(r2));
            }
        }
    }
    {
        std::ofstream markdown(out_dir / "decay_table.md");
        markdown << table.str();
    }
    fmt::print("{}\n", table.str());

    {
        std::ofstream gp(out_dir / "gradient_flow.gp");
        gp << gnuplot_script(models, has_cell_state, args);
    }
    if (args.plot) {
        const std::string command =
            fmt::format("cd '{}' && gnuplot gradient_flow.gp", out_dir.string());
        if (std::system(command.c_str()) != 0) {
            fmt::print(stderr,
                       "vanishing_gradients: gnuplot failed or is missing (apt-get install "
                       "gnuplot-nox); the script is {}\n",
                       (out_dir / "gradient_flow.gp").string());
        }
    }
    fmt::print(stderr,
               "vanishing_gradients: wrote {}/gradient_flow.{{csv,gp,png,svg}} and "
               "decay_table.{{md,csv}} in {:.1f}s\n",
               out_dir.string(), seconds_since(start));
    return 0;
}

} // namespace

/// Parses the command line and runs; errors go to stderr with exit code 1.
int main(int argc, char** argv) {
    CLI::App app{"vanishing_gradients: gradient norms through time, RNN vs LSTM vs GRU"};
    app.set_version_flag("--version", cellgrad::version_line("vanishing_gradients"));
    using examples::Bound;
    using examples::real_number;
    using examples::whole_number;
    using examples::with_unit;
    examples::show_defaults(app);
    Arguments args;
    app.add_option("--T", args.steps_per_sequence, with_unit("sequence length", "time steps"))
        ->check(whole_number(2, 100000, "time steps"));
    app.add_option("--hidden", args.hidden, with_unit("hidden state size", "units"))
        ->check(whole_number(1, 65536, "units"));
    app.add_option("--batch", args.batch,
                   with_unit("sequences in the measurement batch", "sequences"))
        ->check(whole_number(1, 100000, "sequences"));
    app.add_option("--seeds", args.seeds, with_unit("seeds (weights and data)", "runs"))
        ->check(whole_number(1, 1000, "runs"));
    app.add_option("--train-steps", args.train_steps,
                   with_unit("training steps before the second reading", "steps"))
        ->check(whole_number(0, 1'000'000'000, "steps"));
    app.add_option("--train-batch", args.train_batch,
                   with_unit("sequences per training step", "sequences"))
        ->check(whole_number(1, 100000, "sequences"));
    app.add_option("--lr", args.lr,
                   with_unit("RMSprop learning rate", "step size per unit gradient"))
        ->check(real_number(0, 100, "", Bound::open));
    app.add_option("--alpha", args.alpha, with_unit("RMSprop decay", "factor per step"))
        ->check(real_number(0, 1, "", Bound::closed, Bound::open));
    app.add_option("--clip", args.clip,
                   with_unit("largest global gradient norm (0: no clipping)", "L2 norm"))
        ->check(real_number(0, 1e6));
    app.add_option(
           "--models", args.models,
           with_unit("models to compare: any --cell of adding_problem, optionally with _fb<forget "
                     "bias> (lstm_fb0, lstm_fb1, cifg-lstm_fb1, ...)",
                     "comma-separated names"))
        ->delimiter(',');
    app.add_option("--fit-from", args.fit_from,
                   with_unit("first lag of the slope fit", "time steps"))
        ->check(whole_number(0, 100000, "time steps"));
    app.add_option("--fit-to", args.fit_to, with_unit("last lag of the slope fit", "time steps"))
        ->check(whole_number(1, 100000, "time steps"));
    app.add_option("--batch-stat", args.batch_stat, "median or mean of per-sequence norms")
        ->check(CLI::IsMember({"median", "mean"}));
    app.add_option("--out-dir", args.out_dir,
                   with_unit("where the CSV, table, script and plots go", "directory"));
    app.add_option("--threads", args.threads, with_unit(examples::threads_help, "threads"))
        ->check(whole_number(0, 256, "threads"));
    bool no_plot = false;
    app.add_flag("--no-plot", no_plot, "write the gnuplot script but do not run it");
    CLI11_PARSE(app, argc, argv);
    args.plot = !no_plot;
    try {
        if (args.fit_from >= args.fit_to) {
            throw cellgrad::Error(fmt::format("vanishing_gradients: --fit-from ({}) must be below "
                                              "--fit-to ({})",
                                              args.fit_from, args.fit_to));
        }
        return run(args);
    } catch (const std::exception& error) {
        fmt::print(stderr, "vanishing_gradients: error: {}\n", error.what());
        return 1;
    }
}
