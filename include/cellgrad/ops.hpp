// Primitive ops: forward kernel, input checks and backward closure, one free function each.
//
// Notation: y is the op's output, dy its gradient, and backward always *adds* into the inputs'
// gradients. Binary elementwise ops broadcast an operand whose rows (or columns) are 1, like a
// (1, n) bias row, a (n, 1) mask column or a (1, 1) scalar; the backward sums over the broadcast
// dimension. Everything not listed here (softmax, MSE, blends, dropout) is composed from these.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "cellgrad/tape.hpp"

namespace cellgrad {

/// How a loss reduces over its rows.
enum class Reduction { mean, sum };

/// y = a + b (broadcast); da += dy, db += dy (summed over broadcast dims).
template <class T>
Var<T> add(const Var<T>& a, const Var<T>& b);
/// y = a - b (broadcast); da += dy, db -= dy.
template <class T>
Var<T> sub(const Var<T>& a, const Var<T>& b);
/// y = a * b (broadcast); da += dy * b, db += dy * a.
template <class T>
Var<T> mul(const Var<T>& a, const Var<T>& b);
/// y = a / b (broadcast); da += dy / b, db -= dy * a / b^2.
template <class T>
Var<T> div(const Var<T>& a, const Var<T>& b);
/// y = scale * x + offset (scalars); dx += scale * dy.
template <class T>
Var<T> affine(const Var<T>& x, double scale, double offset);
/// y = 1 / (1 + exp(-x)); dx += dy * y * (1 - y).
template <class T>
Var<T> sigmoid(const Var<T>& x);
/// y = tanh(x); dx += dy * (1 - y^2).
template <class T>
Var<T> tanh(const Var<T>& x);
/// y = max(x, 0); dx += dy * [x > 0].
template <class T>
Var<T> relu(const Var<T>& x);
/// y = exp(x); dx += dy * y.
template <class T>
Var<T> exp(const Var<T>& x);
/// y = log(x) (x > 0); dx += dy / x.
template <class T>
Var<T> log(const Var<T>& x);

/// y = sum of all elements, (1, 1); dx += dy (broadcast).
template <class T>
Var<T> sum(const Var<T>& x);
/// y = sum over `axis` (0: over rows -> (1, cols); 1: over columns -> (rows, 1)); dx += dy
/// broadcast.
template <class T>
Var<T> sum(const Var<T>& x, int axis);
/// y = mean of all elements, (1, 1); dx += dy / size.
template <class T>
Var<T> mean(const Var<T>& x);
/// y = mean over `axis` (see sum); dx += dy / extent broadcast.
template <class T>
Var<T> mean(const Var<T>& x, int axis);

/// y = op(a) op(b), op = transpose when asked (BLAS GEMM); da += dy op(b)^T, db += op(a)^T dy (up
/// to transposes).
template <class T>
Var<T> matmul(const Var<T>& a, const Var<T>& b, bool transpose_a = false, bool transpose_b = false);
/// y = x W^T + b for x (n, in), W (out, in), b (1, out) or empty; dx += dy W, dW += dy^T x, db +=
/// colsum(dy).
template <class T>
Var<T> linear(const Var<T>& x, const Var<T>& weight, const Var<T>& bias = {});
/// y = x W^T + b + a[rows] for x (n, in), W (out, in), b (1, out) or empty, a (m, out): row i
/// adds row rows[i] of a (a recurrent step's gates from its input rows); dx += dy W, dW += dy^T x,
/// db += colsum(dy), da[rows[i]] += dy[i].
template <class T>
Var<T> linear_add_rows(const Var<T>& x, const Var<T>& weight, const Var<T>& bias,
                       const Var<T>& addend, std::span<const std::int32_t> rows);
/// The same with rows first_row .. first_row + n - 1 of a.
template <class T>
Var<T> linear_add_rows(const Var<T>& x, const Var<T>& weight, const Var<T>& bias,
                       const Var<T>& addend, std::size_t first_row);
/// The same computed in place: y is rows first_row .. first_row + n - 1 of a, overwritten, and
/// its gradient is a's gradient there (no copy forward, nothing to scatter backward). Nothing
/// may read those rows of a afterwards (a recurrent step consuming its projected input rows).
template <class T>
Var<T> linear_add_rows_in_place(const Var<T>& x, const Var<T>& weight, const Var<T>& bias,
                                const Var<T>& addend, std::size_t first_row);

/// y = x[:, begin:end] as a zero-copy view; dx[:, begin:end] += dy.
template <class T>
Var<T> slice_cols(const Var<T>& x, std::size_t begin, std::size_t end);
/// y = x[begin:end, :] as a zero-copy view; dx[begin:end, :] += dy.
template <class T>
Var<T> slice_rows(const Var<T>& x, std::size_t begin, std::size_t end);
/// y = [x0 | x1 | ...] side by side (same rows); dxk += dy[:, columns of xk].
template <class T>
Var<T> concat_cols(std::span<const Var<T>> parts);
/// y = [x0; x1; ...] stacked (same columns); dxk += dy[rows of xk, :].
template <class T>
Var<T> concat_rows(std::span<const Var<T>> parts);
/// y[i, :] = table[indices[i], :] (embedding lookup); dtable[indices[i], :] += dy[i, :]
/// (scatter-add).
template <class T>
Var<T> gather_rows(const Var<T>& table, std::span<const std::int32_t> indices);

/// y = (x - mean_r(x)) / sqrt(var_r(x) + eps) per row r (layer normalisation without gain and
/// bias); dx = (dy - mean_r(dy) - y mean_r(dy y)) / sqrt(var_r(x) + eps).
template <class T>
Var<T> normalize_rows(const Var<T>& x, double eps = 1e-5);

/// Fused stable log-softmax + NLL over class indices: loss_i = logsumexp(z_i) - z_i[t_i], reduced
/// as sum(w_i loss_i) / sum(w_i) (mean) or sum(w_i loss_i) (sum), w = mask or 1;
/// dz_i += dy * w_i / W * (softmax(z_i) - onehot(t_i)).
template <class T>
Var<T> cross_entropy(const Var<T>& logits, std::span<const std::int32_t> targets,
                     std::span<const T> mask = {}, Reduction reduction = Reduction::mean);

// ---- composed from the primitives ------------------------------------------------------------

/// y = -x.
template <class T>
Var<T> neg(const Var<T>& x) {
    return affine(x, -1.0, 0.0);
}
/// y = s * x.
template <class T>
Var<T> scale(const Var<T>& x, double s) {
    return affine(x, s, 0.0);
}
/// y = 1 - x (the complement of a gate).
template <class T>
Var<T> one_minus(const Var<T>& x) {
    return affine(x, -1.0, 1.0);
}
/// y = x * x.
template <class T>
Var<T> square(const Var<T>& x) {
    return mul(x, x);
}
/// y = mean((prediction - target)^2), (1, 1).
template <class T>
Var<T> mse_loss(const Var<T>& prediction, const Var<T>& target) {
    return mean(square(sub(prediction, target)));
}
/// y = mask * a + (1 - mask) * b with a (rows, 1) or same-shape mask of 0/1 (keep a where mask=1).
template <class T>
Var<T> blend(const Var<T>& mask, const Var<T>& a, const Var<T>& b) {
    return add(b, mul(sub(a, b), mask));
}
/// Inverted dropout: y = x * m / (1 - p), m ~ Bernoulli(1 - p) drawn from `rng`; p = 0 returns x.
template <class T>
Var<T> dropout(const Var<T>& x, double p, std::mt19937_64& rng);

/// a + b.
template <class T>
Var<T> operator+(const Var<T>& a, const Var<T>& b) {
    return add(a, b);
}
/// a - b.
template <class T>
Var<T> operator-(const Var<T>& a, const Var<T>& b) {
    return sub(a, b);
}
/// a * b (elementwise).
template <class T>
Var<T> operator*(const Var<T>& a, const Var<T>& b) {
    return mul(a, b);
}
/// a / b (elementwise).
template <class T>
Var<T> operator/(const Var<T>& a, const Var<T>& b) {
    return div(a, b);
}
/// -x.
template <class T>
Var<T> operator-(const Var<T>& x) {
    return neg(x);
}
/// s * x.
template <class T>
Var<T> operator*(double s, const Var<T>& x) {
    return affine(x, s, 0.0);
}
/// x * s.
template <class T>
Var<T> operator*(const Var<T>& x, double s) {
    return affine(x, s, 0.0);
}
/// x + s.
template <class T>
Var<T> operator+(const Var<T>& x, double s) {
    return affine(x, 1.0, s);
}

} // namespace cellgrad
