// The char_rnn program as a careless or hostile user meets it (issue 16): every case runs the real
// binary and checks its exit code, the exact message, and the files on disk afterwards.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "char_rnn.hpp"

namespace fs = std::filesystem;

namespace {

/// What a run of the program did.
struct Run {
    int exit_code = -1;
    std::string out;
    std::string err;
};

std::string slurp(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

/// A scratch directory holding a small training text; runs the program inside it.
struct Workspace {
    fs::path dir;
    Workspace() {
        static int counter = 0;
        dir = fs::temp_directory_path() / fmt::format("cellgrad-cli-{}-{}", ::getpid(), counter++);
        fs::create_directories(dir);
        std::string text;
        for (int i = 0; i < 60; ++i) {
            text += "the quick brown fox jumps over the lazy dog. ";
        }
        std::ofstream(dir / "text.txt", std::ios::binary) << text;
    }
    ~Workspace() {
        std::error_code ignored;
        fs::permissions(dir, fs::perms::owner_all, fs::perm_options::add, ignored);
        fs::remove_all(dir, ignored);
    }
    Workspace(const Workspace&) = delete;
    Workspace& operator=(const Workspace&) = delete;

    /// Runs `char_rnn <arguments>` in the directory (arguments are passed through the shell).
    Run run(const std::string& arguments) const {
        const std::string command =
            fmt::format("cd '{}' && '{}' {} >stdout.txt 2>stderr.txt </dev/null", dir.string(),
                        CELLGRAD_CHAR_RNN_BINARY, arguments);
        const int status = std::system(command.c_str());
        Run result;
        result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        result.out = slurp(dir / "stdout.txt");
        result.err = slurp(dir / "stderr.txt");
        return result;
    }
    /// A path inside the directory.
    fs::path operator/(const std::string& name) const { return dir / name; }
};

/// A small, fast model: every train command line of these tests starts with it.
const std::string tiny = "train --data text.txt --hidden 16 --layers 1 --embedding 8 --seq 8 "
                         "--batch 4 --threads 1";

} // namespace

TEST_CASE("char_rnn CLI: every numeric flag must be finite and in range, said in plain numbers") {
    Workspace work;
    const std::pair<std::string, std::string> cases[] = {
        {"--dropout nan", "--dropout: must be a number from 0 to 0.99, got 'nan'"},
        {"--forget-bias inf", "--forget-bias: must be a number from -100 to 100, got 'inf'"},
        {"--clip nan", "--clip: must be a number from 0 to 1000000, got 'nan'"},
        {"--lr 0", "--lr: must be a number above 0 and at most 100, got '0'"},
        {"--lr 1e300", "--lr: must be a number above 0 and at most 100, got '1e300'"},
        {"--hidden -1", "--hidden: must be a whole number from 1 to 65536 units, got '-1'"},
        {"--seq -1", "--seq: must be a whole number from 1 to 100000 characters, got '-1'"},
        {"--batch 0", "--batch: must be a whole number from 1 to 100000 streams, got '0'"},
        {"--steps -5", "--steps: must be a whole number from 0 to 1000000000000 steps, got '-5'"},
        {"--eval-every 1.5",
         "--eval-every: must be a whole number from 0 to 1000000000000 steps, got '1.5'"},
        {"--val-fraction 1",
         "--val-fraction: must be a number from 0 up to (not including) 1, got '1'"},
        {"--threads 257", "--threads: must be a whole number from 0 to 256 threads, got '257'"},
        {"--seed -1", "--seed: must be a whole number from 0 to 18446744073709551615, got '-1'"},
    };
    for (const auto& item : cases) {
        const std::string& flag = item.first;
        const std::string& expected = item.second;
        CAPTURE(flag);
        const Run run = work.run(fmt::format("{} --steps 1 --checkpoint out.st {}", tiny, flag));
        CHECK(run.exit_code == 105); // CLI11's validation-error code
        CHECK(contains(run.err, expected));
        CHECK_FALSE(contains(run.err, "1797")); // no CLI-library range text
        CHECK_FALSE(fs::exists(work / "out.st"));
    }
    const std::pair<std::string, std::string> sample_cases[] = {
        {"--length -1", "--length: must be a whole number from 0 to 1000000000 characters, got "
                        "'-1'"},
        {"--temperature nan", "--temperature: must be a number above 0 and at most 100, got 'nan'"},
        {"--temperature 0", "--temperature: must be a number above 0 and at most 100, got '0'"},
    };
    for (const auto& item : sample_cases) {
        const std::string& flag = item.first;
        const std::string& expected = item.second;
        CAPTURE(flag);
        const Run run = work.run(fmt::format("sample --checkpoint none.st {}", flag));
        CHECK(run.exit_code == 105);
        CHECK(contains(run.err, expected));
    }
}

TEST_CASE("char_rnn CLI: --help shows every option's default and unit") {
    Workspace work;
    const Run train = work.run("train --help");
    CHECK(train.exit_code == 0);
    for (const char* line :
         {"--hidden UINT:1 to 65536=128", "hidden state size per layer [units]",
          "--dropout FLOAT:0 to 0.99=0", "dropout between layers [probability]",
          "--seq UINT:1 to 100000=50", "[characters]", "--lr FLOAT:0 (excluded) to 100=0.002",
          "--clip FLOAT:0 to 1000000=5", "[L2 norm]", "--val-fraction FLOAT:0 to 1 (excluded)=0.05",
          "[fraction of the file]", "--eval-every INT:0 to 1000000000000=200",
          "--cell TEXT:{rnn,lstm,gru,lesson-lstm,peephole-lstm,concat-peephole-lstm,cifg-lstm,"
          "nfg-lstm,noaf-lstm,layernorm-lstm,cho-gru,mgu}=lstm",
          "written atomically (default: none) [path]"}) {
        CAPTURE(line);
        CHECK(contains(train.out, line));
    }
    const Run sample = work.run("sample --help");
    CHECK(contains(sample.out, "--length UINT:0 to 1000000000=500"));
    CHECK(contains(sample.out, "--temperature FLOAT:0 (excluded) to 100=1"));
}

TEST_CASE("char_rnn CLI: divergence stops the run and keeps the last good checkpoint") {
    Workspace work;
    REQUIRE(work.run(tiny + " --steps 4 --eval-every 2 --checkpoint run.st").exit_code == 0);
    const std::string good = slurp(work / "run.st");
    // --lr 100 with plain SGD: the loss leaves ln V behind within a few steps.
    const Run run = work.run(tiny + " --steps 40 --eval-every 10 --optimizer sgd --lr 100 "
                                    "--checkpoint run.st");
    CHECK(run.exit_code == 1);
    CHECK(contains(run.err, "the run diverged"));
    CHECK(contains(run.err, "far above the"));
    CHECK(contains(run.err, "likely cause: --lr 100 is too high"));
    CHECK(contains(run.err, "stopped without saving anything"));
    CHECK(slurp(work / "run.st") == good);
}

TEST_CASE("char_rnn CLI: --best after --resume keeps the best validation loss so far") {
    Workspace work;
    REQUIRE(work.run(tiny + " --steps 20 --eval-every 10 --lr 0.01 --checkpoint run.st "
                            "--best best.st")
                .exit_code == 0);
    const std::string best = slurp(work / "best.st");
    const auto info =
        char_rnn::read_checkpoint_info(cellgrad::io::load_safetensors(work / "best.st"));
    REQUIRE(info.best_val.has_value());
    // Resume on a text whose held-out tail is noise over the same letters: every later
    // validation is worse than the best so far, so best.st must not change.
    std::string text = slurp(work / "text.txt");
    std::string noise;
    for (std::size_t i = 0; i < 400; ++i) {
        noise += text[(i * 7919) % text.size()];
    }
    std::ofstream(work / "noisy.txt", std::ios::binary) << text + noise;
    const Run run =
        work.run("train --data noisy.txt --threads 1 --steps 20 --eval-every 10 "
                 "--val-fraction 0.15 --checkpoint run.st --best best.st --resume run.st");
    CHECK(run.exit_code == 0);
    CHECK(contains(run.err, fmt::format("best validation loss {}", *info.best_val)));
    CHECK(slurp(work / "best.st") == best);
    const auto after =
        char_rnn::read_checkpoint_info(cellgrad::io::load_safetensors(work / "run.st"));
    CHECK(after.step == 40);
    CHECK(after.best_val == info.best_val);
}

TEST_CASE("char_rnn CLI: output paths are checked before training; an input is never an output") {
    Workspace work;
    const std::string text = slurp(work / "text.txt");
    const std::pair<std::string, std::string> cases[] = {
        {"--checkpoint missing/run.st", "--checkpoint 'missing/run.st': the directory"},
        {"--checkpoint text.txt/run.st", "text.txt' is not a directory"},
        {"--best missing/best.st", "--best 'missing/best.st': the directory"},
        {"--checkpoint text.txt", "--checkpoint 'text.txt' is the same file as --data 'text.txt': "
                                  "it would be overwritten"},
        {"--checkpoint ./x/../text.txt", "is the same file as --data 'text.txt'"},
        {"--checkpoint a.st --best a.st", "--checkpoint and --best are the same file 'a.st'"},
        {"--checkpoint .", "--checkpoint '.' is a directory; give a file name"},
    };
    fs::create_directory(work / "x");
    for (const auto& item : cases) {
        const std::string& flags = item.first;
        const std::string& expected = item.second;
        CAPTURE(flags);
        const Run run = work.run(fmt::format("{} --steps 1000000 {}", tiny, flags));
        CHECK(run.exit_code == 1);
        CHECK(contains(run.err, expected));
        CHECK_FALSE(contains(run.err, "parameters")); // refused before the model was built
        CHECK(slurp(work / "text.txt") == text);
        CHECK_FALSE(fs::exists(work / "a.st"));
    }
    if (::geteuid() != 0) { // root may write anywhere, so only others meet a read-only directory
        fs::create_directory(work / "locked");
        fs::permissions(work / "locked", fs::perms::owner_read | fs::perms::owner_exec);
        const Run run = work.run(tiny + " --steps 1000000 --checkpoint locked/run.st");
        CHECK(run.exit_code == 1);
        CHECK(contains(run.err, "the directory"));
        CHECK(contains(run.err, "is not writable"));
    }
}

TEST_CASE("char_rnn CLI: --resume takes its settings from the checkpoint and refuses conflicts") {
    Workspace work;
    REQUIRE(work.run(tiny + " --steps 6 --eval-every 3 --lr 0.005 --clip 2 --checkpoint run.st")
                .exit_code == 0);
    const std::string saved = slurp(work / "run.st");
    const Run conflict = work.run(
        "train --data text.txt --steps 3 --lr 0.01 --seq 9 --checkpoint run.st --resume run.st");
    CHECK(conflict.exit_code == 1);
    CHECK(contains(conflict.err, "--resume 'run.st' continues that run with its own settings, but "
                                 "these flags would differ: --seq 9 (the checkpoint has 8), --lr "
                                 "0.01 (the checkpoint has 0.005)"));
    CHECK(contains(conflict.err, "start a new run from its weights with --init"));
    CHECK(slurp(work / "run.st") == saved);

    // Flags equal to the stored values are fine; the run says what it took from where.
    const Run resumed =
        work.run("train --data text.txt --steps 3 --lr 0.005 --checkpoint run.st --resume run.st");
    CHECK(resumed.exit_code == 0);
    CHECK(contains(resumed.err, "resuming 'run.st' at step 6: from the checkpoint: --cell lstm "
                                "--hidden 16 --layers 1 --embedding 8"));
    CHECK(contains(resumed.err, "--seq 8 --batch 4 --optimizer adam --lr 0.005 --clip 2"));
    CHECK(contains(resumed.err, "from the flags: --data, --steps"));
    CHECK(char_rnn::read_checkpoint_info(cellgrad::io::load_safetensors(work / "run.st")).step ==
          9);

    const Run init = work.run("train --data text.txt --hidden 32 --steps 1 --init run.st "
                              "--checkpoint b.st");
    CHECK(init.exit_code == 1);
    CHECK(contains(init.err, "--init 'run.st' fixes the architecture, but --hidden 32 (the "
                             "checkpoint has 16)"));
    CHECK_FALSE(fs::exists(work / "b.st"));
}

TEST_CASE("char_rnn CLI: devices, directories and bad checkpoints get clear errors, no hang") {
    Workspace work;
    const Run zero = work.run("train --data /dev/zero --steps 1");
    CHECK(zero.exit_code == 1);
    CHECK(contains(zero.err, "'/dev/zero' is not a regular file"));
    const Run directory = work.run("train --data . --steps 1");
    CHECK(directory.exit_code == 1);
    CHECK(contains(directory.err, "'.' is a directory, not a text file"));
    const Run eval_dir = work.run("eval --checkpoint . --data text.txt");
    CHECK(eval_dir.exit_code == 1);
    CHECK(contains(eval_dir.err, "safetensors '.': is a directory, not a checkpoint file"));
    std::ofstream(work / "junk.st") << "not a checkpoint at all";
    const Run junk = work.run("sample --checkpoint junk.st --length 5");
    CHECK(junk.exit_code == 1);
    CHECK(contains(junk.err, "safetensors 'junk.st': header length"));

    // A long sample streams out (and a length of -1 is refused above instead of running forever).
    REQUIRE(work.run(tiny + " --steps 2 --checkpoint run.st").exit_code == 0);
    const Run sample = work.run("sample --checkpoint run.st --prime the --length 20000 --seed 1");
    CHECK(sample.exit_code == 0);
    CHECK(sample.out.size() == 3 + 20000 + 1);
    CHECK(sample.out.substr(0, 3) == "the");
}

TEST_CASE("char_rnn CLI: --curve writes a CSV row per validation; --max-seconds stops early") {
    Workspace work;
    // 6 steps, validation every 2: rows at steps 2, 4 and 6; the last one is the summary's.
    const Run run = work.run(tiny + " --steps 6 --eval-every 2 --curve curve.csv");
    REQUIRE(run.exit_code == 0);
    const nlohmann::json summary = nlohmann::json::parse(run.out);
    CHECK(summary["stopped_by"] == "steps");
    std::istringstream lines(slurp(work / "curve.csv"));
    std::string line;
    std::getline(lines, line);
    CHECK(line == "step,train_nats,val_nats,train_seconds,wall_seconds,tokens_per_second");
    std::vector<std::vector<std::string>> rows;
    while (std::getline(lines, line)) {
        std::vector<std::string> fields;
        std::istringstream cells(line);
        for (std::string cell; std::getline(cells, cell, ',');) {
            fields.push_back(cell);
        }
        rows.push_back(fields);
    }
    REQUIRE(rows.size() == 3);
    for (std::size_t i = 0; i < rows.size(); ++i) {
        REQUIRE(rows[i].size() == 6);
        CHECK(rows[i][0] == std::to_string(2 * (i + 1)));
        CHECK(std::stod(rows[i][1]) > 0); // the mean training loss of the 2 steps before
        CHECK(std::stod(rows[i][5]) > 0);
    }
    CHECK(std::stod(rows[2][2]) == doctest::Approx(summary["val_nats"].get<double>()));

    // A wall-time limit far below what a million steps take: the run stops early, having
    // validated and saved the step it reached, and says why.
    const Run limited = work.run(tiny + " --steps 1000000 --eval-every 1000 --max-seconds 0.5 "
                                        "--checkpoint run.st");
    REQUIRE(limited.exit_code == 0);
    const nlohmann::json stopped = nlohmann::json::parse(limited.out);
    CHECK(stopped["stopped_by"] == "max_seconds");
    const std::int64_t steps = stopped["steps"].get<std::int64_t>();
    CHECK(steps > 0);
    CHECK(steps < 1000000);
    CHECK(!stopped["val_nats"].is_null());
    CHECK(char_rnn::read_checkpoint_info(cellgrad::io::load_safetensors(work / "run.st")).step ==
          steps);

    // The curve is an output: it may not overwrite the data or a checkpoint.
    const Run clash = work.run(tiny + " --steps 2 --curve text.txt");
    CHECK(clash.exit_code == 1);
    CHECK(contains(clash.err, "--curve 'text.txt' is the same file as --data 'text.txt'"));
    const Run clash2 = work.run(tiny + " --steps 2 --checkpoint run2.st --curve run2.st");
    CHECK(clash2.exit_code == 1);
    CHECK(contains(clash2.err, "--curve 'run2.st' is the same file as --checkpoint"));
}

TEST_CASE("char_rnn CLI: --val-fraction 0.1 is nanoGPT's split of tiny-shakespeare's length") {
    // nanoGPT's shakespeare_char trains on data[:int(n * 0.9)] and validates on the rest; for
    // tiny-shakespeare's n = 1,115,394 bytes that is 1,003,854 / 111,540.
    Workspace work;
    const std::string unit = "First Citizen:\nBefore we proceed any further, hear me speak.\n";
    std::string text;
    while (text.size() < 1115394) {
        text += unit;
    }
    text.resize(1115394);
    std::ofstream(work / "sized.txt", std::ios::binary) << text;
    const Run run = work.run("train --data sized.txt --hidden 8 --layers 1 --embedding 4 --seq 8 "
                             "--batch 4 --threads 1 --steps 1 --eval-every 0 --val-fraction 0.1");
    REQUIRE(run.exit_code == 0);
    CHECK(contains(run.err, "1003854 train / 111540 val chars"));
}
