// Ranks for a build without MPI: always one rank; refuses to run under an MPI launcher.
#include <cstdlib>

#include <fmt/format.h>

#include "ranks.hpp"

namespace char_rnn {

struct Ranks::Mpi {};

Ranks::Ranks(int& /*argc*/, char**& /*argv*/) {
    const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
    if (size == nullptr) {
        size = std::getenv("PMI_SIZE");
    }
    if (size != nullptr && std::string(size) != "1") {
        throw cellgrad::Error(fmt::format("train: started by an MPI launcher with {} ranks, but "
                                          "this char_rnn was built without MPI, so each rank "
                                          "would train alone; install libopenmpi-dev and rebuild "
                                          "(CMake option CELLGRAD_MPI=ON)",
                                          size));
    }
}

Ranks::~Ranks() = default;

DataParallel Ranks::data_parallel(Trainer& /*trainer*/) {
    return {};
}

double Ranks::share(double value) {
    return value;
}

void Ranks::share_weights(Trainer& /*trainer*/) {}

void Ranks::require_same(std::uint64_t /*value*/, const std::string& /*what*/) {}

void Ranks::abort(int code) {
    std::exit(code);
}

} // namespace char_rnn
