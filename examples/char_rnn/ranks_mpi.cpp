// Ranks over MPI (cellgrad::distributed): a Session when an MPI launcher started the program, and
// the trainer's gradient sums, gathers and broadcasts.
#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <memory>
#include <optional>
#include <unistd.h>

#include <fmt/format.h>

#include "cellgrad/distributed.hpp"
#include "ranks.hpp"

namespace char_rnn {

namespace distributed = cellgrad::distributed;

namespace {

char stopped_message[256] = {};
std::size_t stopped_length = 0;

/// SIGTERM is how mpirun ends the other ranks when one fails: say so before going.
extern "C" void on_terminate(int /*signal*/) {
    [[maybe_unused]] const auto written = ::write(STDERR_FILENO, stopped_message, stopped_length);
    std::_Exit(128 + SIGTERM);
}

} // namespace

struct Ranks::Mpi {
    distributed::Session session;
    Mpi(int& argc, char**& argv) : session(argc, argv) {}
};

Ranks::Ranks(int& argc, char**& argv) {
    if (!distributed::active() && distributed::launched_by_mpi()) {
        mpi_ = std::make_unique<Mpi>(argc, argv);
    }
    // Joins a running MPI session too (the MPI tests start their own).
    rank_ = static_cast<std::size_t>(distributed::rank());
    size_ = static_cast<std::size_t>(distributed::world_size());
    if (mpi_ && size_ > 1) {
        const std::string message = fmt::format(
            "char_rnn: rank {} of {}: stopped by SIGTERM (mpirun ends the job when a rank fails; "
            "the checkpoint on disk is the last complete one)\n",
            rank_, size_);
        stopped_length = std::min(message.size(), sizeof(stopped_message));
        std::copy_n(message.data(), stopped_length, stopped_message);
        std::signal(SIGTERM, on_terminate);
    }
}

Ranks::~Ranks() = default;

DataParallel Ranks::data_parallel(Trainer& trainer) {
    DataParallel parallel;
    parallel.rank = rank_;
    parallel.ranks = size_;
    if (size_ == 1) {
        return parallel;
    }
    // One flat buffer: every gradient, then the extra values (the loss).
    auto reducer = std::make_shared<std::optional<distributed::GradientAllreduce<float>>>();
    auto parameters = trainer.model().parameters();
    parallel.sum_gradients = [reducer, parameters](std::span<float> extra) {
        if (!reducer->has_value() || (*reducer)->extra().size() != extra.size()) {
            reducer->emplace(parameters, extra.size());
        }
        std::copy(extra.begin(), extra.end(), (*reducer)->extra().begin());
        (*reducer)->sum();
        std::copy_n((*reducer)->extra().begin(), extra.size(), extra.begin());
    };
    parallel.gather_rows = [](const Tensor<float>& local) {
        return distributed::gather_rows(local);
    };
    parallel.broadcast = [](std::span<double> values) { distributed::broadcast(values); };
    return parallel;
}

double Ranks::share(double value) {
    distributed::broadcast(std::span<double>(&value, 1));
    return value;
}

void Ranks::share_weights(Trainer& trainer) {
    distributed::broadcast_parameters(trainer.model().parameters());
}

void Ranks::require_same(std::uint64_t value, const std::string& what) {
    distributed::require_same(value, what);
}

void Ranks::abort(int code) {
    if (size_ > 1) {
        distributed::abort_job(code);
    }
    std::exit(code);
}

} // namespace char_rnn
