#include "inspect_command.hpp"

#include <chrono>
#include <fstream>

#include "cli.hpp"
#include "inspect.hpp"

namespace char_rnn {

CLI::App* add_inspect_command(CLI::App& app, InspectArguments& args) {
    using examples::whole_number;
    using examples::with_unit;
    CLI::App* command = app.add_subcommand(
        "inspect", "run a model over a text and show what its gates do: an HTML page, JSON, "
                   "LSTMVis files");
    command->add_option("--checkpoint", args.checkpoint, with_unit("model checkpoint", "path"))
        ->required();
    CLI::Option* text = command->add_option(
        "--text", args.text_file, with_unit("text to run the model over (default: none)", "path"));
    CLI::Option* prime = command->add_option(
        "--prime", args.prime,
        with_unit("the text given inline instead (default: none)", "characters"));
    text->excludes(prime);
    command
        ->add_option("--length", args.length,
                     with_unit("characters of the text to use, from its start", "characters"))
        ->check(whole_number(1, 1'000'000, "characters"));
    command->add_option("--out", args.out,
                        with_unit("the HTML page to write (default: none)", "path"));
    command->add_option(
        "--json", args.json,
        with_unit("the recordings as JSON, schema in docs/inspect.md (default: none)", "path"));
    command->add_option("--lstmvis", args.lstmvis,
                        with_unit("a directory for LSTMVis files: states.h5, train.h5, words.dict, "
                                  "lstm.yml (default: none)",
                                  "path"));
    command
        ->add_option("--max-page-bytes", args.max_bytes,
                     with_unit("largest page; precision drops from 8 to 4 bits to fit", "bytes"))
        ->check(whole_number(10'000, 1'000'000'000, "bytes"));
    command->add_option("--threads", args.threads, with_unit("threads", "threads"))
        ->check(whole_number(1, 256, "threads"));
    return command;
}

namespace {

void write_text(const std::string& path, const std::string& content, const char* option) {
    check_output_path(path, option);
    std::ofstream file(path, std::ios::binary | std::ios::trunc);
    file.write(content.data(), std::streamsize(content.size()));
    if (!file) {
        throw cellgrad::Error(fmt::format("{} '{}': cannot write", option, path));
    }
}

} // namespace

int run_inspect(const InspectArguments& args) {
    if (args.text_file.empty() == args.prime.empty()) {
        throw cellgrad::Error("inspect: give the text with --text FILE or --prime TEXT (one)");
    }
    if (args.out.empty() && args.json.empty() && args.lstmvis.empty()) {
        throw cellgrad::Error("inspect: nothing to write: give --out, --json and/or --lstmvis");
    }
    if (!args.lstmvis.empty() && !lstmvis_supported()) {
        throw cellgrad::Error("inspect: --lstmvis needs HDF5, and this char_rnn was built without "
                              "it (install libhdf5-dev and rebuild)");
    }
    for (const auto& [option, path] :
         {std::pair{"--out", &args.out}, std::pair{"--json", &args.json}}) {
        if (!path->empty()) {
            check_output_path(*path, option);
        }
    }
    cellgrad::set_num_threads(args.threads);
    const auto start = std::chrono::steady_clock::now();
    const cellgrad::io::SafetensorsFile file = cellgrad::io::load_safetensors(args.checkpoint);
    std::unique_ptr<CharModel> model = load_model(file);
    std::string text = args.text_file.empty() ? args.prime : read_file(args.text_file);
    if (text.size() > args.length) {
        text.resize(args.length);
    }
    Inspection inspection = inspect(parts_of(*model), text);
    inspection.source = args.checkpoint;
    if (const auto found = file.metadata().find("history"); found != file.metadata().end()) {
        inspection.history_json = found->second;
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::string series;
    for (const Series& s : inspection.layers.front().series) {
        series += (series.empty() ? "" : ", ") + s.name;
    }
    fmt::print(stderr,
               "char_rnn inspect: {} characters through {} ({} x {}) in {:.2f} s; per layer: {}\n",
               inspection.length(), inspection.cell, inspection.num_layers, inspection.hidden,
               seconds, series);
    if (!args.out.empty()) {
        PageInfo info;
        const std::string page = make_page(
            inspection, {args.max_bytes, fmt::format("{}: {}", args.checkpoint, inspection.cell)},
            &info);
        write_text(args.out, page, "--out");
        fmt::print(stderr, "char_rnn inspect: wrote {} ({} bytes, {} to {} bits per value)\n",
                   args.out, info.bytes, info.bits, info.max_bits);
    }
    if (!args.json.empty()) {
        write_text(args.json, inspection_json(inspection), "--json");
        fmt::print(stderr, "char_rnn inspect: wrote {}\n", args.json);
    }
    if (!args.lstmvis.empty()) {
        write_lstmvis(inspection, args.lstmvis);
        fmt::print(stderr, "char_rnn inspect: wrote LSTMVis files into {}\n", args.lstmvis);
    }
    return 0;
}

} // namespace char_rnn
