// Internal kernels shared by the ops: broadcast-aware elementwise maps, reductions into broadcast
// shapes, and the BLAS GEMM wrapper. All parallel loops use fixed partitioning (parallel.hpp).
#pragma once

#include <algorithm>
#include <type_traits>
#include <vector>

#include <cblas.h>

#include "cellgrad/parallel.hpp"
#include "cellgrad/tensor.hpp"

namespace cellgrad::kernels {

/// An operand read at output coordinates: steps are 0 along dimensions it broadcasts over.
template <class T>
struct Operand {
    const T* data;
    std::size_t row_step;
    std::size_t col_step;
    /// Element at output coordinates (r, c).
    T operator()(std::size_t r, std::size_t c) const { return data[r * row_step + c * col_step]; }
};

/// Reads `view` broadcast to `out`.
template <class T>
Operand<T> operand(View<const T> view, Shape out) {
    return {view.data, view.rows == 1 && out.rows > 1 ? 0 : view.stride,
            view.cols == 1 && out.cols > 1 ? std::size_t(0) : std::size_t(1)};
}

using cellgrad::for_each_piece;

/// out = f(x) elementwise.
template <class T, class F>
void unary_map(View<const T> x, View<T> out, std::size_t grain, const F& f) {
    for_each_piece(out.rows, out.cols, grain, [&](std::size_t r, std::size_t c0, std::size_t c1) {
        const T* in = x.row(r);
        T* o = out.row(r);
        for (std::size_t c = c0; c < c1; ++c) {
            o[c] = f(in[c]);
        }
    });
}

/// out = f(a, b) elementwise with a and b broadcast to out's shape.
template <class T, class F>
void binary_map(View<const T> a, View<const T> b, View<T> out, std::size_t grain, const F& f) {
    const Operand<T> A = operand(a, out.shape());
    const Operand<T> B = operand(b, out.shape());
    for_each_piece(out.rows, out.cols, grain, [&](std::size_t r, std::size_t c0, std::size_t c1) {
        const T* pa = A.data + r * A.row_step;
        const T* pb = B.data + r * B.row_step;
        T* o = out.row(r);
        if (A.col_step == 1 && B.col_step == 1) {
            for (std::size_t c = c0; c < c1; ++c) {
                o[c] = f(pa[c], pb[c]);
            }
        } else if (A.col_step == 1) {
            const T vb = pb[0];
            for (std::size_t c = c0; c < c1; ++c) {
                o[c] = f(pa[c], vb);
            }
        } else if (B.col_step == 1) {
            const T va = pa[0];
            for (std::size_t c = c0; c < c1; ++c) {
                o[c] = f(va, pb[c]);
            }
        } else {
            const T value = f(pa[0], pb[0]);
            for (std::size_t c = c0; c < c1; ++c) {
                o[c] = value;
            }
        }
    });
}

/// target (1, n) += the column sums of rows (m, n), each column summed from 0 over its rows in
/// order (= instead of += with `overwrite`): a linear layer's bias gradient (src/column_sums.cpp).
template <class T>
void add_column_sums(View<T> target, View<const T> rows, bool overwrite);

/// target += contribution(r, c) summed over the dimensions of `out` that target broadcasts over
/// (with `overwrite`, target is uninitialised and receives = instead of +=).
/// Column sums run per column chunk and row sums per row, in fixed order: deterministic.
template <class T, class Contribution>
void accumulate_reduced(View<T> target, Shape out, std::size_t grain,
                        const Contribution& contribution, bool overwrite = false) {
    if (target.rows == out.rows && target.cols == out.cols) {
        for_each_piece(out.rows, out.cols, grain,
                       [&](std::size_t r, std::size_t c0, std::size_t c1) {
                           T* t = target.row(r);
                           if (overwrite) {
                               for (std::size_t c = c0; c < c1; ++c) {
                                   t[c] = contribution(r, c);
                               }
                           } else {
                               for (std::size_t c = c0; c < c1; ++c) {
                                   t[c] += contribution(r, c);
                               }
                           }
                       });
        return;
    }
    if (overwrite) {
        for (std::size_t r = 0; r < target.rows; ++r) {
            std::fill(target.row(r), target.row(r) + target.cols, T(0));
        }
    }
    if (target.rows == 1 && target.cols == out.cols) {
        // Sum over rows, a chunk of columns per task.
        const std::size_t columns_per_chunk =
            std::max<std::size_t>(64, grain / std::max<std::size_t>(out.rows, 1));
        parallel_chunks(out.cols, columns_per_chunk, [&](std::size_t c0, std::size_t c1) {
            std::vector<T> partial(c1 - c0, T(0));
            for (std::size_t r = 0; r < out.rows; ++r) {
                for (std::size_t c = c0; c < c1; ++c) {
                    partial[c - c0] += contribution(r, c);
                }
            }
            for (std::size_t c = c0; c < c1; ++c) {
                target(0, c) += partial[c - c0];
            }
        });
    } else if (target.cols == 1 && target.rows == out.rows) {
        parallel_chunks(out.rows,
                        std::max<std::size_t>(1, grain / std::max<std::size_t>(out.cols, 1)),
                        [&](std::size_t r0, std::size_t r1) {
                            for (std::size_t r = r0; r < r1; ++r) {
                                T total = 0;
                                for (std::size_t c = 0; c < out.cols; ++c) {
                                    total += contribution(r, c);
                                }
                                target(r, 0) += total;
                            }
                        });
    } else {
        // (1, 1) target: sum of everything, rows in fixed chunks.
        const std::size_t rows_per_chunk =
            std::max<std::size_t>(1, grain / std::max<std::size_t>(out.cols, 1));
        target(0, 0) +=
            parallel_sum<T>(out.rows, rows_per_chunk, [&](std::size_t r0, std::size_t r1) {
                T total = 0;
                for (std::size_t r = r0; r < r1; ++r) {
                    for (std::size_t c = 0; c < out.cols; ++c) {
                        total += contribution(r, c);
                    }
                }
                return total;
            });
    }
}

/// target.row(row_of(i)) += source.row(i) for every row i of source (a scatter-add). Tasks own
/// column ranges and walk the rows in order, so repeated target rows never race and the sum order
/// is fixed.
template <class T, class RowOf>
void scatter_add_rows(View<T> target, View<const T> source, const RowOf& row_of) {
    parallel_chunks(source.cols, 256, [&](std::size_t c0, std::size_t c1) {
        for (std::size_t i = 0; i < source.rows; ++i) {
            T* out = target.row(row_of(i));
            const T* in = source.row(i);
            for (std::size_t c = c0; c < c1; ++c) {
                out[c] += in[c];
            }
        }
    });
}

/// target += source (same shape); with `overwrite`, target = source.
template <class T>
void add_into(View<T> target, View<const T> source, bool overwrite = false) {
    for_each_piece(target.rows, target.cols, cheap_grain,
                   [&](std::size_t r, std::size_t c0, std::size_t c1) {
                       T* t = target.row(r);
                       const T* s = source.row(r);
                       if (overwrite) {
                           std::copy(s + c0, s + c1, t + c0);
                           return;
                       }
                       for (std::size_t c = c0; c < c1; ++c) {
                           t[c] += s[c];
                       }
                   });
}

/// Multiply-adds per GEMM block below which splitting the output does not pay.
inline constexpr std::size_t gemm_block_work = std::size_t(1) << 22;
/// Most blocks a GEMM is cut into: enough for two cores to share, few enough that each BLAS call
/// stays large (every block packs its own copy of the shared operand).
inline constexpr std::size_t gemm_max_blocks = 4;

/// Outputs with at most this many rows and at least `transposed_gemm_min` columns and inner
/// length are computed transposed (see gemm).
inline constexpr std::size_t transposed_gemm_max_rows = 64;
inline constexpr std::size_t transposed_gemm_min = 512;

/// One BLAS call c = alpha * op(a) op(b) + beta * c (row-major views; c is (m, n)).
template <class T>
void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, std::size_t m, std::size_t n, std::size_t k,
               T alpha, const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta, T* c,
               std::size_t ldc) {
    const auto M = static_cast<int>(m), N = static_cast<int>(n), K = static_cast<int>(k);
    const auto LDA = static_cast<int>(std::max<std::size_t>(lda, 1));
    const auto LDB = static_cast<int>(std::max<std::size_t>(ldb, 1));
    const auto LDC = static_cast<int>(std::max<std::size_t>(ldc, 1));
    if constexpr (std::is_same_v<T, float>) {
        cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, a, LDA, b, LDB, beta, c, LDC);
    } else {
        cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, a, LDA, b, LDB, beta, c, LDC);
    }
}

/// c = alpha * op(a) op(b) + beta * c. The output is cut into blocks of rows (or of columns when
/// it is wider than tall) whose size depends only on the shape; each block is one single-threaded
/// BLAS call in a TBB task. So the result is bitwise the same at any thread count, which
/// OpenBLAS's own threading does not guarantee (its partition changes the summation order).
template <class T>
void gemm(View<const T> a, bool transpose_a, View<const T> b, bool transpose_b, View<T> c, T alpha,
          T beta) {
    const std::size_t m = c.rows;
    const std::size_t n = c.cols;
    const std::size_t k = transpose_a ? a.rows : a.cols;
    if (m == 0 || n == 0) {
        return;
    }
    const auto ta = transpose_a ? CblasTrans : CblasNoTrans;
    const auto tb = transpose_b ? CblasTrans : CblasNoTrans;
    // A short, wide output with a long inner dimension (a recurrent step: (B, G*H) = h W_hh^T, or
    // dh = dG W_hh) runs 1.04-1.25x faster in OpenBLAS as c^T = op(b)^T op(a)^T into a scratch
    // buffer, then transposed into c (bench/README.md); for short inner dimensions the transpose
    // costs more than it saves.
    const bool transposed =
        m <= transposed_gemm_max_rows && n >= transposed_gemm_min && k >= transposed_gemm_min;
    // Block rows [r0, r1) and columns [c0, c1) of c: rows of op(a) times columns of op(b).
    auto block = [&](std::size_t r0, std::size_t r1, std::size_t c0, std::size_t c1) {
        const T* pa = transpose_a ? a.data + r0 : a.data + r0 * a.stride;
        const T* pb = transpose_b ? b.data + c0 * b.stride : b.data + c0;
        T* pc = c.data + r0 * c.stride + c0;
        const std::size_t rows = r1 - r0;
        const std::size_t cols = c1 - c0;
        if (!transposed) {
            blas_gemm<T>(ta, tb, rows, cols, k, alpha, pa, a.stride, pb, b.stride, beta, pc,
                         c.stride);
            return;
        }
        // scratch (cols, rows) = op(b)^T op(a)^T, reused by this thread across calls.
        thread_local std::vector<T> scratch;
        scratch.resize(std::max(scratch.size(), rows * cols));
        blas_gemm<T>(transpose_b ? CblasNoTrans : CblasTrans,
                     transpose_a ? CblasNoTrans : CblasTrans, cols, rows, k, alpha, pb, b.stride,
                     pa, a.stride, T(0), scratch.data(), rows);
        constexpr std::size_t tile = 16;
        for (std::size_t i0 = 0; i0 < rows; i0 += tile) {
            for (std::size_t j0 = 0; j0 < cols; j0 += tile) {
                const std::size_t i1 = std::min(rows, i0 + tile), j1 = std::min(cols, j0 + tile);
                for (std::size_t i = i0; i < i1; ++i) {
                    T* out = pc + i * c.stride;
                    if (beta == T(0)) { // c may hold garbage: never read it
                        for (std::size_t j = j0; j < j1; ++j) {
                            out[j] = scratch[j * rows + i];
                        }
                    } else {
                        for (std::size_t j = j0; j < j1; ++j) {
                            out[j] = beta * out[j] + scratch[j * rows + i];
                        }
                    }
                }
            }
        }
    };
    const bool split_rows = m >= n;
    const std::size_t extent = split_rows ? m : n;
    const std::size_t work = m * n * std::max<std::size_t>(k, 1);
    const std::size_t blocks = std::clamp<std::size_t>(work / gemm_block_work, 1, gemm_max_blocks);
    // Lines per block, a multiple of 16 so that blocks keep the kernels' register tiles whole.
    const std::size_t lines = ((extent + blocks - 1) / blocks + 15) / 16 * 16;
    parallel_chunks(extent, lines, [&](std::size_t begin, std::size_t end) {
        if (split_rows) {
            block(begin, end, 0, n); // (end - begin, n)
        } else {
            block(0, m, begin, end); // (m, end - begin)
        }
    });
}

} // namespace cellgrad::kernels
