// cellgrad::distributed over MPI (include/cellgrad/distributed.hpp). Built only when CMake finds
// MPI; the sums run in rank order on top of MPI's data movement (Alltoallv, Allgatherv), never on
// MPI's own reductions, whose order the standard leaves open.
#include "cellgrad/distributed.hpp"

#include <algorithm>
#include <climits>
#include <cstdlib>

#include <fmt/format.h>
#include <mpi.h>

namespace cellgrad::distributed {

namespace {

bool started = false; // by a Session
int world_rank = 0;
int world_ranks = 1;

/// Throws Error naming the MPI call, this rank and MPI's message unless `code` is MPI_SUCCESS.
void check(int code, const char* call) {
    if (code == MPI_SUCCESS) {
        return;
    }
    char text[MPI_MAX_ERROR_STRING] = {};
    int length = 0;
    MPI_Error_string(code, text, &length);
    throw Error(fmt::format("distributed: {} failed on rank {} of {}: {}", call, world_rank,
                            world_ranks, std::string(text, static_cast<std::size_t>(length))));
}

template <class T>
MPI_Datatype mpi_type();
template <>
MPI_Datatype mpi_type<float>() {
    return MPI_FLOAT;
}
template <>
MPI_Datatype mpi_type<double>() {
    return MPI_DOUBLE;
}

/// MPI counts are ints: refuses a buffer longer than INT_MAX elements, naming the operation.
int as_count(std::size_t n, const char* operation) {
    if (n > static_cast<std::size_t>(INT_MAX)) {
        throw Error(fmt::format("distributed: {} of {} values: MPI counts stop at {}; split the "
                                "buffer",
                                operation, n, INT_MAX));
    }
    return static_cast<int>(n);
}

/// First element of block k when n elements are cut into `blocks` near-equal contiguous blocks.
std::size_t block_begin(std::size_t n, std::size_t blocks, std::size_t k) {
    return k * (n / blocks) + std::min(k, n % blocks);
}

} // namespace

bool launched_by_mpi() {
    // Open MPI's mpirun, MPICH/Intel's hydra (PMI), and PMIx launchers (srun, prterun).
    for (const char* variable : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
        if (std::getenv(variable) != nullptr) {
            return true;
        }
    }
    return false;
}

Session::Session(int& argc, char**& argv) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized != 0) {
        throw Error("distributed: MPI is already running; make one Session per process");
    }
    int provided = 0;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        throw Error("distributed: MPI_Init_thread failed (was the program started by mpirun?)");
    }
    started = true;
    check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank), "MPI_Comm_rank");
    check(MPI_Comm_size(MPI_COMM_WORLD, &world_ranks), "MPI_Comm_size");
    if (provided < MPI_THREAD_FUNNELED) {
        throw Error(fmt::format("distributed: this MPI library gives thread level {}, below "
                                "MPI_THREAD_FUNNELED ({}) that cellgrad's TBB workers need",
                                provided, MPI_THREAD_FUNNELED));
    }
}

Session::~Session() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized == 0) {
        MPI_Finalize();
    }
    started = false;
    world_rank = 0;
    world_ranks = 1;
}

bool active() {
    return started;
}

int world_size() {
    return world_ranks;
}

int rank() {
    return world_rank;
}

void barrier() {
    if (started) {
        check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
    }
}

void abort_job(int code) {
    if (started) {
        MPI_Abort(MPI_COMM_WORLD, code);
    }
    std::_Exit(code);
}

template <class T>
void allreduce_sum(std::span<T> values, std::vector<T>& scratch) {
    const auto N = static_cast<std::size_t>(world_ranks);
    if (!started || N == 1) {
        return;
    }
    const std::size_t n = values.size();
    as_count(n, "allreduce_sum");
    const auto me = static_cast<std::size_t>(world_rank);
    const std::size_t mine = block_begin(n, N, me + 1) - block_begin(n, N, me);
    // 1. Reduce-scatter by blocks: rank k receives every rank's copy of block k, in rank order.
    std::vector<int> send_counts(N), send_offsets(N), receive_counts(N), receive_offsets(N);
    for (std::size_t k = 0; k < N; ++k) {
        send_offsets[k] = static_cast<int>(block_begin(n, N, k));
        send_counts[k] = static_cast<int>(block_begin(n, N, k + 1) - block_begin(n, N, k));
        receive_counts[k] = static_cast<int>(mine);
        receive_offsets[k] = as_count(k * mine, "allreduce_sum");
    }
    scratch.resize(N * mine);
    check(MPI_Alltoallv(values.data(), send_counts.data(), send_offsets.data(), mpi_type<T>(),
                        scratch.data(), receive_counts.data(), receive_offsets.data(),
                        mpi_type<T>(), MPI_COMM_WORLD),
          "MPI_Alltoallv (allreduce_sum)");
    T* block = values.data() + block_begin(n, N, me);
    for (std::size_t i = 0; i < mine; ++i) {
        T total = scratch[i];
        for (std::size_t r = 1; r < N; ++r) {
            total += scratch[r * mine + i];
        }
        block[i] = total;
    }
    // 2. All-gather the summed blocks.
    check(MPI_Allgatherv(MPI_IN_PLACE, 0, mpi_type<T>(), values.data(), send_counts.data(),
                         send_offsets.data(), mpi_type<T>(), MPI_COMM_WORLD),
          "MPI_Allgatherv (allreduce_sum)");
}

template <class T>
void allreduce_sum(std::span<T> values) {
    std::vector<T> scratch;
    allreduce_sum(values, scratch);
}

template <class T>
void broadcast(std::span<T> values, int root) {
    if (started && world_ranks > 1) {
        check(MPI_Bcast(values.data(), as_count(values.size(), "broadcast"), mpi_type<T>(), root,
                        MPI_COMM_WORLD),
              "MPI_Bcast");
    }
}

template <class T>
GradientAllreduce<T>::GradientAllreduce(std::vector<Parameter<T>*> parameters, std::size_t extra)
    : parameters_(std::move(parameters)), extra_(extra) {
    std::size_t total = extra;
    for (const Parameter<T>* parameter : parameters_) {
        total += parameter->grad.size();
    }
    buffer_.assign(total, T(0));
    require_same(total, fmt::format("the gradient buffer's length ({} parameters + {} extra "
                                    "values)",
                                    parameters_.size(), extra));
}

template <class T>
void GradientAllreduce<T>::sum() {
    T* cursor = buffer_.data();
    for (const Parameter<T>* parameter : parameters_) {
        cursor = std::copy_n(parameter->grad.data(), parameter->grad.size(), cursor);
    }
    allreduce_sum(std::span<T>(buffer_), scratch_);
    const T* from = buffer_.data();
    for (Parameter<T>* parameter : parameters_) {
        std::copy_n(from, parameter->grad.size(), parameter->grad.data());
        from += parameter->grad.size();
    }
}

template <class T>
void broadcast_parameters(const std::vector<Parameter<T>*>& parameters, int root) {
    if (!started || world_ranks == 1) {
        return;
    }
    std::size_t total = 0;
    for (const Parameter<T>* parameter : parameters) {
        total += parameter->value.size();
    }
    require_same(total, "the parameters' total size (broadcast_parameters)");
    std::vector<T> buffer(total);
    T* cursor = buffer.data();
    for (const Parameter<T>* parameter : parameters) {
        cursor = std::copy_n(parameter->value.data(), parameter->value.size(), cursor);
    }
    broadcast(std::span<T>(buffer), root);
    const T* from = buffer.data();
    for (Parameter<T>* parameter : parameters) {
        std::copy_n(from, parameter->value.size(), parameter->value.data());
        from += parameter->value.size();
    }
}

template <class T>
Tensor<T> gather_rows(const Tensor<T>& local, int root) {
    if (!started || world_ranks == 1) {
        return local;
    }
    const auto N = static_cast<std::size_t>(world_ranks);
    const int shape[2] = {as_count(local.rows(), "gather_rows"),
                          as_count(local.cols(), "gather_rows")};
    std::vector<int> shapes(2 * N);
    check(MPI_Allgather(shape, 2, MPI_INT, shapes.data(), 2, MPI_INT, MPI_COMM_WORLD),
          "MPI_Allgather (gather_rows)");
    std::vector<int> counts(N), offsets(N);
    std::size_t rows = 0;
    for (std::size_t r = 0; r < N; ++r) {
        if (shapes[2 * r + 1] != shapes[1]) {
            throw Error(fmt::format("distributed: gather_rows: rank {} has {} columns but rank 0 "
                                    "has {}; every rank needs the same columns",
                                    r, shapes[2 * r + 1], shapes[1]));
        }
        offsets[r] = as_count(rows * local.cols(), "gather_rows");
        counts[r] = as_count(std::size_t(shapes[2 * r]) * local.cols(), "gather_rows");
        rows += static_cast<std::size_t>(shapes[2 * r]);
    }
    Tensor<T> all = world_rank == root ? Tensor<T>(rows, local.cols()) : Tensor<T>();
    check(MPI_Gatherv(local.data(), as_count(local.size(), "gather_rows"), mpi_type<T>(),
                      all.data(), counts.data(), offsets.data(), mpi_type<T>(), root,
                      MPI_COMM_WORLD),
          "MPI_Gatherv (gather_rows)");
    return all;
}

void require_same(std::uint64_t value, const std::string& what) {
    if (!started || world_ranks == 1) {
        return;
    }
    std::vector<std::uint64_t> values(static_cast<std::size_t>(world_ranks));
    check(MPI_Allgather(&value, 1, MPI_UINT64_T, values.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD),
          "MPI_Allgather (require_same)");
    for (std::size_t r = 1; r < values.size(); ++r) {
        if (values[r] != values[0]) {
            throw Error(fmt::format("distributed: the ranks disagree on {}: rank 0 has {}, rank "
                                    "{} has {}",
                                    what, values[0], r, values[r]));
        }
    }
}

template void allreduce_sum<float>(std::span<float>, std::vector<float>&);
template void allreduce_sum<double>(std::span<double>, std::vector<double>&);
template void allreduce_sum<float>(std::span<float>);
template void allreduce_sum<double>(std::span<double>);
template void broadcast<float>(std::span<float>, int);
template void broadcast<double>(std::span<double>, int);
template class GradientAllreduce<float>;
template class GradientAllreduce<double>;
template void broadcast_parameters<float>(const std::vector<Parameter<float>*>&, int);
template void broadcast_parameters<double>(const std::vector<Parameter<double>*>&, int);
template Tensor<float> gather_rows<float>(const Tensor<float>&, int);
template Tensor<double> gather_rows<double>(const Tensor<double>&, int);

} // namespace cellgrad::distributed
