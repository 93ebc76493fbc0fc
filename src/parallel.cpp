#include "cellgrad/parallel.hpp"

#include <algorithm>
#include <memory>
#include <thread>

#include <cblas.h>
#include <fmt/format.h>
#include <tbb/global_control.h>

#include "cellgrad/tensor.hpp"

namespace cellgrad {

namespace {
int current_threads = 0;
std::unique_ptr<tbb::global_control> thread_limit;
// OpenBLAS stays single-threaded: cellgrad splits each GEMM into fixed blocks itself (kernels.hpp),
// so that results do not depend on the thread count.
[[maybe_unused]] const bool blas_single_threaded = [] {
    openblas_set_num_threads(1);
    return true;
}();
} // namespace

void set_num_threads(int n) {
    if (n < 1) {
        throw Error(fmt::format("set_num_threads: needs n >= 1, got {}", n));
    }
    thread_limit.reset();
    thread_limit = std::make_unique<tbb::global_control>(
        tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(n));
    openblas_set_num_threads(1); // GEMM is parallel through cellgrad's fixed blocks instead
    current_threads = n;
}

int num_threads() {
    if (current_threads == 0) {
        current_threads = static_cast<int>(
            tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism));
    }
    return current_threads;
}

int suggested_threads(std::size_t batch, std::size_t gate_rows, std::size_t hidden) {
    constexpr double smallest_split_flops = 5e6;
    const double step_flops = 2.0 * double(batch) * double(gate_rows) * double(hidden);
    const auto cores = static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));
    return step_flops < smallest_split_flops ? 1 : std::min(cores, 256);
}

const char* blas_core_name() {
    return openblas_get_corename();
}

} // namespace cellgrad
