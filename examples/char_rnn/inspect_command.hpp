// `char_rnn inspect`: its options and what it runs (kept out of main.cpp).
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace char_rnn {

/// The inspect subcommand's arguments.
struct InspectArguments {
    std::string checkpoint;
    std::string text_file;
    std::string prime;
    std::size_t length = 3000;
    std::string out;
    std::string json;
    std::string lstmvis;
    std::size_t max_bytes = 4'900'000;
    int threads = 2;
};

/// Adds `inspect` to `app`, its options stored in `args`.
CLI::App* add_inspect_command(CLI::App& app, InspectArguments& args);

/// Runs the model over the text and writes the page and the exports asked for.
int run_inspect(const InspectArguments& args);

} // namespace char_rnn
