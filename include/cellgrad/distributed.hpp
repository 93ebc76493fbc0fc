// Data-parallel training across processes over MPI: world size, rank, a fixed-order allreduce of a
// parameter list's gradients through one flat buffer, a broadcast of parameters, a gather of rows
// and a barrier. Optional: built as cellgrad::distributed (src/distributed/) only when CMake finds
// MPI (-DCELLGRAD_MPI=ON, the default); the cellgrad library itself never needs MPI.
//
// Every sum adds the ranks' values in rank order 0, 1, ..., N-1, whatever algorithm the MPI library
// picks, so its result is bitwise the same on every rank and in every run with the same N. Every
// failing MPI call throws cellgrad::Error naming the call, the rank and MPI's own message.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "cellgrad/tape.hpp"

namespace cellgrad::distributed {

/// True when this process was started by an MPI launcher (mpirun, mpiexec, srun with PMIx), seen
/// from the environment the launcher sets; a plain start runs alone without initialising MPI.
bool launched_by_mpi();

/// Starts MPI (MPI_Init_thread, funneled: only the thread that made the Session calls MPI, TBB's
/// workers never do) with errors returned instead of fatal, and ends it (MPI_Finalize) when
/// destroyed. One per process; throws if MPI is already running or cannot start.
class Session {
  public:
    /// MPI_Init_thread(argc, argv); throws naming what failed.
    Session(int& argc, char**& argv);
    /// MPI_Finalize.
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;
};

/// True between a Session's start and its end.
bool active();
/// Number of processes in the job (1 when MPI is not active).
int world_size();
/// This process's index, 0 .. world_size() - 1 (0 when MPI is not active).
int rank();
/// Returns when every rank has called it.
void barrier();
/// Ends every process of the job with exit code `code` (MPI_Abort); a rank that cannot go on
/// calls it so that the others do not wait for it forever. Plain exit when MPI is not active.
[[noreturn]] void abort_job(int code);

/// values[i] = sum over ranks r of values_r[i], added in rank order (a reduce-scatter by blocks,
/// then an all-gather: each rank sends and receives 2 (N-1)/N x the buffer, as in a ring
/// allreduce). Every rank must pass the same length. `scratch` is reused between calls.
template <class T>
void allreduce_sum(std::span<T> values, std::vector<T>& scratch);

/// allreduce_sum with a scratch buffer of its own.
template <class T>
void allreduce_sum(std::span<T> values);

/// Root's values copied to every rank (same length everywhere).
template <class T>
void broadcast(std::span<T> values, int root = 0);

/// The gradients of a parameter list summed across ranks through one flat buffer (Horovod's
/// fused buffer, PyTorch DDP with a single bucket): pack, allreduce_sum, unpack. A few `extra`
/// values (a loss sum, a count) ride in the same buffer.
template <class T>
class GradientAllreduce {
  public:
    /// For `parameters` (the same names and shapes in the same order on every rank) and `extra`
    /// additional values. Collective: every rank constructs it; throws on every rank, naming the
    /// sizes, if the ranks' buffers differ.
    GradientAllreduce(std::vector<Parameter<T>*> parameters, std::size_t extra = 0);
    /// The extra values: set them before sum(), read the sums after.
    std::span<T> extra() { return {buffer_.data() + buffer_.size() - extra_, extra_}; }
    /// Every parameter's grad, and extra(), replaced by its sum over the ranks (allreduce_sum).
    void sum();
    /// Size of the flat buffer in bytes (gradients and extra values).
    std::size_t bytes() const { return buffer_.size() * sizeof(T); }

  private:
    std::vector<Parameter<T>*> parameters_;
    std::size_t extra_;
    std::vector<T> buffer_;
    std::vector<T> scratch_;
};

/// Root's parameter values copied to every rank through one flat buffer, so that every rank starts
/// from the same weights. The same parameter list on every rank.
template <class T>
void broadcast_parameters(const std::vector<Parameter<T>*>& parameters, int root = 0);

/// Every rank's `local` rows stacked in rank order, on `root` (the others get an empty tensor).
/// Ranks may hold different numbers of rows, all with the same number of columns (else throws).
template <class T>
Tensor<T> gather_rows(const Tensor<T>& local, int root = 0);

/// Throws on every rank, naming `what` and the first rank that differs, unless every rank passed
/// the same `value` (a size, a hash of the inputs).
void require_same(std::uint64_t value, const std::string& what);

} // namespace cellgrad::distributed
