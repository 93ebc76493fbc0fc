// The MPI suite's entry point: one MPI session around doctest, run by every rank under
// mpirun -np 2 (tests/CMakeLists.txt). A rank whose checks fail makes the whole run fail.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "cellgrad/distributed.hpp"

int main(int argc, char** argv) {
    cellgrad::distributed::Session session(argc, argv);
    doctest::Context context(argc, argv);
    const int failed = context.run();
    double any_failed[1] = {failed != 0 ? 1.0 : 0.0};
    cellgrad::distributed::allreduce_sum(std::span<double>(any_failed));
    return any_failed[0] > 0 ? 1 : 0;
}
