// The ranks of a data-parallel `char_rnn train` (mpirun -np N char_rnn train ...), as the program
// sees them. ranks_mpi.cpp implements it over cellgrad::distributed when the build has MPI;
// ranks_alone.cpp, one rank, when it has not.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "char_rnn.hpp"

namespace char_rnn {

/// This process's place among the job's ranks: MPI started when an MPI launcher started the
/// program, one rank otherwise. One per process; MPI ends with it.
class Ranks {
  public:
    /// Starts MPI if an MPI launcher started this program (or joins the MPI session already
    /// running); throws if it did but the program was built without MPI (each rank would train
    /// alone), or if MPI cannot start.
    Ranks(int& argc, char**& argv);
    /// Ends MPI (after every rank got here).
    ~Ranks();
    Ranks(const Ranks&) = delete;
    Ranks& operator=(const Ranks&) = delete;
    /// This process's rank.
    std::size_t rank() const { return rank_; }
    /// Number of ranks in the job.
    std::size_t size() const { return size_; }
    /// What `trainer` needs to be one of the ranks (its gradients summed through one flat buffer
    /// of its parameters). Collective.
    DataParallel data_parallel(Trainer& trainer);
    /// Rank 0's `value`, returned on every rank. Collective.
    double share(double value);
    /// Rank 0's weights copied to every rank. Collective.
    void share_weights(Trainer& trainer);
    /// Throws on every rank, naming `what`, unless every rank passed the same `value`. Collective.
    void require_same(std::uint64_t value, const std::string& what);
    /// Ends every rank of the job with `code`: what a rank that cannot go on does, so that the
    /// others do not wait for it.
    [[noreturn]] void abort(int code);

  private:
    struct Mpi;
    std::unique_ptr<Mpi> mpi_;
    std::size_t rank_ = 0;
    std::size_t size_ = 1;
};

} // namespace char_rnn
