// GEMM against a weight packed once per tape. A recurrent layer multiplies the same weight T times
// forward (gates = h W_hh^T) and T times backward (dh = dG W_hh); OpenBLAS re-packs the weight in
// every one of those calls, which took 28% of a large LSTM step. Here the tape packs each weight
// at most twice per pass (W^T for forward, W for backward) into panels of 48 columns, and an
// AVX-512 micro-kernel reads the panels directly (docs/performance.md).
#pragma once

#include <cstddef>

#include "cellgrad/tensor.hpp"

namespace cellgrad::kernels {

/// Columns of one packed panel: three AVX-512 vectors of floats.
inline constexpr std::size_t packed_panel_columns = 48;
/// Products with at least this many rows (a step's batch) and at most packed_max_rows use the
/// packed kernel; with fewer rows its accumulator chains wait on FMA latency, and OpenBLAS's
/// small-matrix kernel, which packs nothing, is faster.
inline constexpr std::size_t packed_min_rows = 4;
/// See packed_min_rows.
inline constexpr std::size_t packed_max_rows = 128;
/// Weights with fewer elements stay with BLAS. A bound chosen, not tuned: every recurrent weight of
/// the benchmark's configurations with 4 or more batch rows is above it.
inline constexpr std::size_t packed_min_weight = 16384;

/// True when the packed kernel is built for this CPU (AVX-512F) and enabled (see
/// set_packed_weight_gemm in parallel.hpp).
bool packed_gemm_active();

/// Floats a packed (k, n) right operand occupies: ceil(n / 48) panels of k x 48.
std::size_t packed_size(std::size_t k, std::size_t n);

/// Packs the right operand B (k, n) of a product into `packed` (packed_size(k, n) floats, 64-byte
/// aligned): B = w^T when `transpose` (w is (n, k)), else B = w (w is (k, n)). Columns past n are
/// zero. Throws unless packed_gemm_active().
void pack_right_operand(View<const float> w, bool transpose, float* packed);

/// c = x B + beta c for x (m, k), B (k, n) packed by pack_right_operand and beta 0 or 1 (beta 0
/// never reads c). Each element sums over k in order, so the result does not depend on the thread
/// count. Throws unless packed_gemm_active().
void packed_gemm(View<const float> x, const float* packed, View<float> c, float beta);

} // namespace cellgrad::kernels
