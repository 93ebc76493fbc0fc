// char_rnn's Trainer as one rank of a data-parallel run (mpirun -np N): the same losses as one
// process training the same global batch, the same weights on every rank, bitwise-identical
// checkpoints from two runs, and a checkpoint of N ranks resumed by one.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <unistd.h>
#include <vector>

#include <doctest/doctest.h>

#include "cellgrad/distributed.hpp"
#include "char_rnn.hpp"
#include "ranks.hpp"

namespace distributed = cellgrad::distributed;
namespace fs = std::filesystem;
using char_rnn::Trainer;

namespace {

/// A small text with some structure, the same on every rank.
std::string corpus() {
    std::string text;
    for (int i = 1; i <= 300; ++i) {
        text += "Line " + std::to_string(i) + ": and the evening and the morning were the day " +
                std::to_string(i * 7 % 13) + ".\n";
    }
    return text;
}

char_rnn::ModelConfig model_config() {
    char_rnn::ModelConfig config;
    config.cell = "lstm";
    config.hidden = 48;
    config.layers = 2;
    config.embedding = 16;
    return config;
}

char_rnn::TrainConfig train_config() {
    char_rnn::TrainConfig config;
    config.seq = 16;
    config.batch = 8; // split over the ranks
    config.lr = 3e-3;
    config.clip = 0.5; // small enough to clip: the clip must see the global norm
    config.seed = 7;
    return config;
}

std::unique_ptr<Trainer> make_trainer() {
    const std::string text = corpus();
    const auto vocabulary = char_rnn::Vocabulary::from_text(text);
    return std::make_unique<Trainer>(model_config(), train_config(), vocabulary,
                                     vocabulary.encode(text, "corpus"));
}

/// A trainer that is this process's rank of the job.
std::unique_ptr<Trainer> make_rank_trainer(char_rnn::Ranks& ranks) {
    auto trainer = make_trainer();
    trainer->set_data_parallel(ranks.data_parallel(*trainer));
    return trainer;
}

std::vector<double> train(Trainer& trainer, int steps) {
    std::vector<double> losses;
    for (int i = 0; i < steps; ++i) {
        losses.push_back(trainer.train_step());
    }
    return losses;
}

void check_close(const std::vector<double>& got, const std::vector<double>& expected) {
    REQUIRE(got.size() == expected.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
        CAPTURE(i);
        CHECK(std::abs(got[i] - expected[i]) <= 1e-5 * std::abs(expected[i]));
    }
}

/// A directory name made by rank 0 and shared with every rank.
fs::path shared_directory(const std::string& stem) {
    double pid[1] = {double(::getpid())};
    distributed::broadcast(std::span<double>(pid));
    const fs::path directory =
        fs::temp_directory_path() / fmt::format("cellgrad-mpi-{}-{}", stem, std::int64_t(pid[0]));
    if (distributed::rank() == 0) {
        fs::create_directories(directory);
    }
    distributed::barrier();
    return directory;
}

std::string bytes_of(const fs::path& path) {
    std::ifstream file(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

int argc_none = 0;
char** argv_none = nullptr;

} // namespace

TEST_CASE("N ranks give the losses of one process on the same global batch, 50 steps") {
    char_rnn::Ranks ranks(argc_none, argv_none);
    REQUIRE(ranks.size() >= 2);
    auto shared = make_rank_trainer(ranks);
    const std::vector<double> parallel_losses = train(*shared, 50);

    auto alone = make_trainer(); // every rank checks against its own single-process run
    const std::vector<double> alone_losses = train(*alone, 50);
    check_close(parallel_losses, alone_losses);
    CHECK(parallel_losses.back() < parallel_losses.front() - 0.5); // it learns

    // Every rank took the same optimizer steps: the weights are the same bits everywhere.
    std::uint64_t hash = 1469598103934665603ull; // FNV-1a over the weights' bytes
    for (const auto* parameter : shared->model().parameters()) {
        const auto* byte = reinterpret_cast<const unsigned char*>(parameter->value.data());
        for (std::size_t i = 0; i < parameter->value.size() * sizeof(float); ++i) {
            hash = (hash ^ byte[i]) * 1099511628211ull;
        }
    }
    CHECK_NOTHROW(ranks.require_same(hash, "the weights after 50 steps"));
}

TEST_CASE("two runs with N ranks write bitwise-identical checkpoints") {
    char_rnn::Ranks ranks(argc_none, argv_none);
    const fs::path directory = shared_directory("determinism");
    for (const char* name : {"first.safetensors", "second.safetensors"}) {
        auto trainer = make_rank_trainer(ranks);
        train(*trainer, 12);
        trainer->save(directory / name); // collective: rank 0 writes
    }
    distributed::barrier();
    if (ranks.rank() == 0) {
        const std::string first = bytes_of(directory / "first.safetensors");
        CHECK(first.size() > 1000);
        CHECK(first == bytes_of(directory / "second.safetensors"));
        fs::remove_all(directory);
    }
}

TEST_CASE("a checkpoint of N ranks resumed by one process continues the run") {
    char_rnn::Ranks ranks(argc_none, argv_none);
    const fs::path directory = shared_directory("resume");
    const fs::path checkpoint = directory / "step20.safetensors";
    auto shared = make_rank_trainer(ranks);
    train(*shared, 20);
    shared->save(checkpoint);
    const std::vector<double> continued = train(*shared, 15); // steps 21..35 on N ranks
    distributed::barrier();
    if (ranks.rank() == 0) {
        auto resumed = make_trainer(); // one process
        resumed->resume(checkpoint);
        CHECK(resumed->step() == 20);
        check_close(train(*resumed, 15), continued);
        CHECK(resumed->step() == 35);

        // And one process from the start gives those losses too.
        auto alone = make_trainer();
        train(*alone, 20);
        check_close(train(*alone, 15), continued);
        fs::remove_all(directory);
    }
    distributed::barrier();
}

TEST_CASE("a checkpoint of one process resumed by N ranks continues the run") {
    char_rnn::Ranks ranks(argc_none, argv_none);
    const fs::path directory = shared_directory("resume-n");
    const fs::path checkpoint = directory / "alone.safetensors";
    std::vector<double> expected(10);
    if (ranks.rank() == 0) {
        auto alone = make_trainer();
        train(*alone, 17); // mid-pass, with carried state
        alone->save(checkpoint);
        expected = train(*alone, 10);
    }
    distributed::broadcast(std::span<double>(expected));
    auto shared = make_rank_trainer(ranks);
    shared->resume(checkpoint);
    check_close(train(*shared, 10), expected);
    distributed::barrier();
    if (ranks.rank() == 0) {
        fs::remove_all(directory);
    }
}

TEST_CASE("more ranks than streams is refused by name") {
    char_rnn::Ranks ranks(argc_none, argv_none);
    const std::string text = corpus();
    const auto vocabulary = char_rnn::Vocabulary::from_text(text);
    char_rnn::TrainConfig config = train_config();
    config.batch = ranks.size() - 1;
    Trainer trainer(model_config(), config, vocabulary, vocabulary.encode(text, "corpus"));
    CHECK_THROWS_WITH(trainer.set_data_parallel(ranks.data_parallel(trainer)),
                      doctest::Contains("ranks need at least one stream each, but --batch is"));
}
