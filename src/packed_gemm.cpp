#include "packed_gemm.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "cellgrad/parallel.hpp"
#include "kernels.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#define CELLGRAD_PACKED_GEMM 1
#include <immintrin.h>
#else
#define CELLGRAD_PACKED_GEMM 0
#endif

namespace cellgrad {

namespace {

/// On unless the environment sets CELLGRAD_PACKED_GEMM=0 (for side-by-side measurements).
std::atomic<bool> packed_enabled = [] {
    const char* setting = std::getenv("CELLGRAD_PACKED_GEMM");
    return setting == nullptr || std::strcmp(setting, "0") != 0;
}();

bool cpu_supports_packed_kernel() {
#if CELLGRAD_PACKED_GEMM
    static const bool supported = __builtin_cpu_supports("avx512f");
    return supported;
#else
    return false;
#endif
}

void require_active(const char* op) {
    if (!kernels::packed_gemm_active()) {
        throw Error(fmt::format("{}: the packed-weight kernel needs an AVX-512F CPU and "
                                "set_packed_weight_gemm(true)",
                                op));
    }
}

} // namespace

void set_packed_weight_gemm(bool enabled) {
    packed_enabled = enabled;
}

bool packed_weight_gemm_active() {
    return kernels::packed_gemm_active();
}

} // namespace cellgrad

namespace cellgrad::kernels {

namespace {

constexpr std::size_t panel = packed_panel_columns;
/// Inner-dimension slice per pass over the panels: the x slice (m <= 128 rows) and one panel slice
/// stay in a 1 MiB L2 while every panel is swept.
constexpr std::size_t depth_block = 1024;
/// Rows of c per micro-kernel call: 8 x 3 vector accumulators.
constexpr int kernel_rows = 8;

#if CELLGRAD_PACKED_GEMM
// Everything up to the matching pop is compiled for AVX-512F (GCC: target pragma; Clang ignores
// that pragma and takes the attribute on every function instead).
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f")
#endif

/// c[0:Rows, 0:48] (masked to `mask`) = (load_c ? c : 0) + x[0:Rows, 0:depth] panel[0:depth, 0:48].
template <int Rows>
void micro_kernel(const float* x, std::size_t x_stride, const float* panel_data, std::size_t depth,
                  float* c, std::size_t c_stride, const __mmask16 mask[3], bool load_c) {
    __m512 sum[Rows][3];
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
#pragma GCC unroll 3
        for (int v = 0; v < 3; ++v) {
            sum[r][v] = load_c
                            ? _mm512_maskz_loadu_ps(mask[v], c + r * c_stride + 16 * std::size_t(v))
                            : _mm512_setzero_ps();
        }
    }
    for (std::size_t k = 0; k < depth; ++k) {
        const float* w = panel_data + k * panel;
        const __m512 w0 = _mm512_load_ps(w);
        const __m512 w1 = _mm512_load_ps(w + 16);
        const __m512 w2 = _mm512_load_ps(w + 32);
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r) {
            const __m512 xr = _mm512_set1_ps(x[r * x_stride + k]);
            sum[r][0] = _mm512_fmadd_ps(xr, w0, sum[r][0]);
            sum[r][1] = _mm512_fmadd_ps(xr, w1, sum[r][1]);
            sum[r][2] = _mm512_fmadd_ps(xr, w2, sum[r][2]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
#pragma GCC unroll 3
        for (int v = 0; v < 3; ++v) {
            _mm512_mask_storeu_ps(c + r * c_stride + 16 * std::size_t(v), mask[v], sum[r][v]);
        }
    }
}

/// Rows [0, m) of c's columns [48 p, 48 p + 48) over the depth slice: full 8-row calls, then one
/// call for the rest.
void panel_product(const float* x, std::size_t x_stride, std::size_t m, const float* panel_data,
                   std::size_t depth, float* c, std::size_t c_stride, const __mmask16 mask[3],
                   bool load_c) {
    std::size_t r = 0;
    for (; r + kernel_rows <= m; r += kernel_rows) {
        micro_kernel<kernel_rows>(x + r * x_stride, x_stride, panel_data, depth, c + r * c_stride,
                                  c_stride, mask, load_c);
    }
    using Kernel = void (*)(const float*, std::size_t, const float*, std::size_t, float*,
                            std::size_t, const __mmask16*, bool);
    static constexpr Kernel remainder_kernels[kernel_rows] = {
        nullptr,         micro_kernel<1>, micro_kernel<2>, micro_kernel<3>,
        micro_kernel<4>, micro_kernel<5>, micro_kernel<6>, micro_kernel<7>};
    if (r < m) {
        remainder_kernels[m - r](x + r * x_stride, x_stride, panel_data, depth, c + r * c_stride,
                                 c_stride, mask, load_c);
    }
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

/// Mask of the valid lanes of vector v (16 columns) when a panel has `columns` valid columns.
unsigned lane_mask(std::size_t columns, int v) {
    const std::size_t first = 16 * static_cast<std::size_t>(v);
    const std::size_t lanes = columns > first ? std::min<std::size_t>(16, columns - first) : 0;
    return lanes == 16 ? 0xFFFFu : (1u << lanes) - 1u;
}

/// Panels per parallel chunk: two once the product is worth splitting, so that two threads get
/// nearly equal halves. Every element is summed the same way whatever the chunking, so any
/// partition gives the same bits.
std::size_t panels_per_chunk(std::size_t panels, std::size_t work) {
    return work >= gemm_block_work ? 2 : panels;
}

} // namespace

bool packed_gemm_active() {
    return packed_enabled && cpu_supports_packed_kernel();
}

std::size_t packed_size(std::size_t k, std::size_t n) {
    return (n + panel - 1) / panel * panel * k;
}

void pack_right_operand(View<const float> w, bool transpose, float* packed) {
    require_active("pack_right_operand");
    const std::size_t k = transpose ? w.cols : w.rows;
    const std::size_t n = transpose ? w.rows : w.cols;
    const std::size_t panels = (n + panel - 1) / panel;
    parallel_chunks(panels, panels_per_chunk(panels, k * n), [&](std::size_t p0, std::size_t p1) {
        for (std::size_t p = p0; p < p1; ++p) {
            float* out = packed + p * k * panel;
            const std::size_t first = p * panel;
            const std::size_t columns = std::min(panel, n - first);
            if (transpose) { // column j of B is row first + j of w: read rows, write strided
                for (std::size_t j = 0; j < panel; ++j) {
                    if (j >= columns) {
                        for (std::size_t i = 0; i < k; ++i) {
                            out[i * panel + j] = 0.0f;
                        }
                        continue;
                    }
                    const float* source = w.row(first + j);
                    for (std::size_t i = 0; i < k; ++i) {
                        out[i * panel + j] = source[i];
                    }
                }
            } else { // row i of B is row i of w: copy 48 contiguous floats per row
                for (std::size_t i = 0; i < k; ++i) {
                    const float* source = w.row(i) + first;
                    std::copy(source, source + columns, out + i * panel);
                    std::fill(out + i * panel + columns, out + (i + 1) * panel, 0.0f);
                }
            }
        }
    });
}

void packed_gemm(View<const float> x, const float* packed, View<float> c, float beta) {
    require_active("packed_gemm");
    if (beta != 0.0f && beta != 1.0f) {
        throw Error(fmt::format("packed_gemm: beta must be 0 or 1, got {}", beta));
    }
    if (x.rows != c.rows) {
        throw Error(
            fmt::format("packed_gemm: x {} and c {} need the same rows", x.shape(), c.shape()));
    }
    const std::size_t m = c.rows;
    const std::size_t n = c.cols;
    const std::size_t k = x.cols;
    if (m == 0 || n == 0) {
        return;
    }
    if (k == 0) {
        if (beta == 0.0f) {
            for (std::size_t r = 0; r < m; ++r) {
                std::fill(c.row(r), c.row(r) + n, 0.0f);
            }
        }
        return;
    }
#if CELLGRAD_PACKED_GEMM
    const std::size_t panels = (n + panel - 1) / panel;
    parallel_chunks(
        panels, panels_per_chunk(panels, m * n * k), [&](std::size_t p0, std::size_t p1) {
            for (std::size_t k0 = 0; k0 < k; k0 += depth_block) {
                const std::size_t depth = std::min(depth_block, k - k0);
                const bool load_c = k0 > 0 || beta != 0.0f;
                for (std::size_t p = p0; p < p1; ++p) {
                    const std::size_t columns = std::min(panel, n - p * panel);
                    const __mmask16 mask[3] = {static_cast<__mmask16>(lane_mask(columns, 0)),
                                               static_cast<__mmask16>(lane_mask(columns, 1)),
                                               static_cast<__mmask16>(lane_mask(columns, 2))};
                    panel_product(x.data + k0, x.stride, m, packed + p * k * panel + k0 * panel,
                                  depth, c.data + p * panel, c.stride, mask, load_c);
                }
            }
        });
#else
    (void)packed;
#endif
}

} // namespace cellgrad::kernels
