// TBB helpers: thread count shared with OpenBLAS, fixed-partition loops, deterministic reductions.
//
// Determinism: work is cut into chunks whose boundaries depend only on the problem size and the
// grain, never on the thread count; each chunk is done by one thread; reductions add chunk
// partials in chunk order. So 1 and 2 threads give bitwise-identical results.
// GEMM follows the same rule: the output is cut into fixed blocks, one single-threaded OpenBLAS
// call per block in a TBB task (OpenBLAS's own threading changes the summation order with the
// thread count), so there is one thread pool and the cores are never oversubscribed.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>

namespace cellgrad {

/// Sets the threads used by cellgrad's kernels, GEMM included (TBB); OpenBLAS stays at 1; n >= 1.
void set_num_threads(int n);
/// The thread count last set (default: all cores).
int num_threads();
/// Threads that run a recurrent training step fastest, by a rule from measurements
/// (docs/performance.md, "Choosing the thread count"): 1 while one time step's recurrent GEMM,
/// 2 * batch * gate_rows * hidden FLOPs (W_hh is gate_rows x hidden), is under 5 MFLOP, where
/// a second thread costs more than it saves (batch 32, LSTM 128, 4.2 MFLOP: 238K tok/s at 1
/// thread, 232K at 2; batch 1, LSTM 100: 128K vs 94K); else every core the machine has.
int suggested_threads(std::size_t batch, std::size_t gate_rows, std::size_t hidden);
/// Name of the OpenBLAS kernel family in use, e.g. "SkylakeX" or "Haswell".
const char* blas_core_name();
/// Turns the packed-weight GEMM on or off (on by default; CELLGRAD_PACKED_GEMM=0 turns it off at
/// start-up). With it, float linear and linear_add_rows of 4 to 128 rows pack each weight once
/// per tape and multiply with cellgrad's AVX-512 kernel instead of OpenBLAS.
void set_packed_weight_gemm(bool enabled);
/// True when the packed-weight GEMM is on and this CPU has AVX-512F.
bool packed_weight_gemm_active();

/// Elements per chunk for cheap elementwise kernels (add, mul).
inline constexpr std::size_t cheap_grain = 32768;
/// Elements per chunk for transcendental kernels (exp, tanh, sigmoid).
inline constexpr std::size_t costly_grain = 8192;

/// Calls body(begin, end) on fixed chunks of [0, n) of `grain` items; serial when n <= grain.
template <class Body>
void parallel_chunks(std::size_t n, std::size_t grain, const Body& body) {
    if (grain == 0) {
        grain = 1;
    }
    if (n <= grain || num_threads() == 1) {
        for (std::size_t begin = 0; begin < n; begin += grain) {
            body(begin, begin + grain < n ? begin + grain : n);
        }
        return;
    }
    const std::size_t chunks = (n + grain - 1) / grain;
    tbb::parallel_for(
        tbb::blocked_range<std::size_t>(0, chunks, 1),
        [&](const tbb::blocked_range<std::size_t>& range) {
            for (std::size_t chunk = range.begin(); chunk != range.end(); ++chunk) {
                const std::size_t begin = chunk * grain;
                body(begin, begin + grain < n ? begin + grain : n);
            }
        },
        tbb::static_partitioner());
}

/// Calls body(r, c_begin, c_end) over pieces covering (rows, cols), about `grain` elements each.
template <class Body>
void for_each_piece(std::size_t rows, std::size_t cols, std::size_t grain, const Body& body) {
    if (rows == 0 || cols == 0) {
        return;
    }
    if (cols >= grain) {
        const std::size_t pieces_per_row = (cols + grain - 1) / grain;
        parallel_chunks(rows * pieces_per_row, 1, [&](std::size_t first, std::size_t last) {
            for (std::size_t piece = first; piece < last; ++piece) {
                const std::size_t r = piece / pieces_per_row;
                const std::size_t c0 = (piece % pieces_per_row) * grain;
                body(r, c0, std::min(c0 + grain, cols));
            }
        });
        return;
    }
    parallel_chunks(rows, std::max<std::size_t>(1, grain / cols),
                    [&](std::size_t first, std::size_t last) {
                        for (std::size_t r = first; r < last; ++r) {
                            body(r, 0, cols);
                        }
                    });
}

/// Sum over fixed chunks of [0, n): partial(begin, end) per chunk, added in chunk order.
template <class Result, class Partial>
Result parallel_sum(std::size_t n, std::size_t grain, const Partial& partial) {
    if (grain == 0) {
        grain = 1;
    }
    const std::size_t chunks = (n + grain - 1) / grain;
    std::vector<Result> partials(chunks, Result(0));
    parallel_chunks(chunks, 1, [&](std::size_t first, std::size_t last) {
        for (std::size_t chunk = first; chunk < last; ++chunk) {
            const std::size_t begin = chunk * grain;
            partials[chunk] = partial(begin, begin + grain < n ? begin + grain : n);
        }
    });
    Result total(0);
    for (const Result& value : partials) {
        total += value;
    }
    return total;
}

} // namespace cellgrad
