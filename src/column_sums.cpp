// The column sums of a gradient (a linear layer's bias gradient, dB += sum over rows of dY),
// vectorised for the machine it runs on: the library is built for baseline x86-64, so the hot
// loop is cloned for AVX-512 and AVX2 as the pointwise kernels are.
#include <algorithm>

#include "cellgrad/detail/vector_clones.hpp"
#include "kernels.hpp"

namespace cellgrad::kernels {

namespace {

/// Columns summed per register block (4 AVX-512 vectors of floats).
constexpr std::size_t block_columns = 64;

/// target[c] (+)= sum_r rows[r * stride + c] for c in [c0, c1), each column summed from 0 over
/// rows 0, 1, ..., m - 1 in that order.
template <class T>
CELLGRAD_POINTWISE_CLONES void column_sums_range(T* target, const T* rows, std::size_t m,
                                                 std::size_t stride, std::size_t c0, std::size_t c1,
                                                 bool overwrite) {
    for (std::size_t b0 = c0; b0 < c1; b0 += block_columns) {
        const std::size_t width = std::min(block_columns, c1 - b0);
        T partial[block_columns] = {};
        if (width == block_columns) {
            for (std::size_t r = 0; r < m; ++r) {
                const T* row = rows + r * stride + b0;
                CELLGRAD_IVDEP
                for (std::size_t c = 0; c < block_columns; ++c) {
                    partial[c] += row[c];
                }
            }
        } else {
            for (std::size_t r = 0; r < m; ++r) {
                const T* row = rows + r * stride + b0;
                for (std::size_t c = 0; c < width; ++c) {
                    partial[c] += row[c];
                }
            }
        }
        T* out = target + b0;
        for (std::size_t c = 0; c < width; ++c) {
            out[c] = (overwrite ? T(0) : out[c]) + partial[c];
        }
    }
}

} // namespace

template <class T>
void add_column_sums(View<T> target, View<const T> rows, bool overwrite) {
    const std::size_t columns_per_chunk =
        std::max<std::size_t>(block_columns, cheap_grain / std::max<std::size_t>(rows.rows, 1));
    parallel_chunks(rows.cols, columns_per_chunk, [&](std::size_t c0, std::size_t c1) {
        column_sums_range<T>(target.data, rows.data, rows.rows, rows.stride, c0, c1, overwrite);
    });
}

template void add_column_sums<float>(View<float>, View<const float>, bool);
template void add_column_sums<double>(View<double>, View<const double>, bool);

} // namespace cellgrad::kernels
