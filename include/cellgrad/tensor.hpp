// Tensors: an owning row-major matrix on xtensor storage, and a non-owning strided view.
//
// cellgrad works on matrices: every recurrent computation is on (batch, features) blocks,
// sequences are stacked as (T * B, features), a bias is a (1, n) row and a scalar is (1, 1).
// This is the only header that includes xtensor.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <xtensor/xtensor.hpp>

namespace cellgrad {

/// Every error cellgrad reports: the message names the op or file, what it got and what it needs.
class Error : public std::runtime_error {
  public:
    /// Wraps a complete, human-readable message.
    explicit Error(const std::string& message) : std::runtime_error(message) {}
};

/// A (rows, cols) shape; prints as "(rows, cols)".
struct Shape {
    std::size_t rows = 0;
    std::size_t cols = 0;
    /// Number of elements.
    std::size_t size() const { return rows * cols; }
    /// Shapes are equal when both extents are.
    bool operator==(const Shape&) const = default;
};

/// "(rows, cols)".
std::string to_string(const Shape& shape);

/// Non-owning row-major matrix view; `stride` is the distance between rows (>= cols).
template <class T>
struct View {
    T* data = nullptr;
    std::size_t rows = 0;
    std::size_t cols = 0;
    std::size_t stride = 0;

    /// The view's extents.
    Shape shape() const { return {rows, cols}; }
    /// Number of elements.
    std::size_t size() const { return rows * cols; }
    /// True when rows follow each other without gaps.
    bool contiguous() const { return stride == cols || rows <= 1; }
    /// Element (r, c), unchecked.
    T& operator()(std::size_t r, std::size_t c) const { return data[r * stride + c]; }
    /// Pointer to the first element of row r.
    T* row(std::size_t r) const { return data + r * stride; }
    /// The same memory seen as read-only.
    operator View<const T>() const { return {data, rows, cols, stride}; }
};

/// Owning row-major matrix of float or double, stored in an xt::xtensor<T, 2>.
template <class T>
class Tensor {
  public:
    using value_type = T;

    /// Empty (0, 0) tensor.
    Tensor() : storage_(std::array<std::size_t, 2>{0, 0}) {}
    /// (rows, cols) tensor filled with `fill`.
    Tensor(std::size_t rows, std::size_t cols, T fill = T(0));
    /// (rows, cols) tensor from row-major values; throws if the count differs from rows * cols.
    Tensor(std::size_t rows, std::size_t cols, std::initializer_list<T> values);
    /// (rows, cols) tensor from row-major values; throws if the count differs from rows * cols.
    Tensor(std::size_t rows, std::size_t cols, const std::vector<T>& values);
    /// Copies a view (any stride) into a new contiguous tensor.
    explicit Tensor(View<const T> view);
    /// Wraps an existing xtensor matrix.
    explicit Tensor(xt::xtensor<T, 2> storage) : storage_(std::move(storage)) {}

    /// Number of rows.
    std::size_t rows() const { return storage_.shape()[0]; }
    /// Number of columns.
    std::size_t cols() const { return storage_.shape()[1]; }
    /// (rows, cols).
    Shape shape() const { return {rows(), cols()}; }
    /// rows * cols.
    std::size_t size() const { return storage_.size(); }
    /// First element of the row-major data.
    T* data() { return storage_.data(); }
    /// First element of the row-major data.
    const T* data() const { return storage_.data(); }
    /// Element (r, c), unchecked.
    T& operator()(std::size_t r, std::size_t c) { return storage_.data()[r * cols() + c]; }
    /// Element (r, c), unchecked.
    T operator()(std::size_t r, std::size_t c) const { return storage_.data()[r * cols() + c]; }
    /// Element (r, c); throws naming the shape when out of range.
    T at(std::size_t r, std::size_t c) const;
    /// Scalar value of a (1, 1) tensor; throws otherwise.
    T item() const;
    /// Writable view of the whole tensor.
    View<T> view() { return {data(), rows(), cols(), cols()}; }
    /// Read-only view of the whole tensor.
    View<const T> view() const { return {data(), rows(), cols(), cols()}; }
    /// Sets every element to `value`.
    void fill(T value);
    /// Row-major copy of the values.
    std::vector<T> to_vector() const { return {data(), data() + size()}; }
    /// The xtensor storage, for users who want xtensor expressions.
    xt::xtensor<T, 2>& xt() { return storage_; }
    /// The xtensor storage, for users who want xtensor expressions.
    const xt::xtensor<T, 2>& xt() const { return storage_; }

  private:
    xt::xtensor<T, 2> storage_;
};

/// Copies `source` into `target`; throws naming both shapes when they differ.
template <class T>
void copy(View<const T> source, View<T> target);

/// Largest |a - b| over all elements; throws when the shapes differ.
template <class T>
T max_abs_difference(View<const T> a, View<const T> b);

/// True when every element is finite (no NaN or Inf).
template <class T>
bool all_finite(View<const T> view);

/// Values as text, one bracketed row per line, at most `max_rows` x `max_cols` shown.
template <class T>
std::string format_values(View<const T> view, std::size_t max_rows = 8, std::size_t max_cols = 8);

} // namespace cellgrad

/// fmt: a Shape prints as "(rows, cols)".
template <>
struct fmt::formatter<cellgrad::Shape> : fmt::formatter<std::string> {
    auto format(const cellgrad::Shape& shape, fmt::format_context& ctx) const {
        return fmt::formatter<std::string>::format(cellgrad::to_string(shape), ctx);
    }
};

/// fmt: a Tensor prints as "Tensor(rows, cols) [[...], ...]".
template <class T>
struct fmt::formatter<cellgrad::Tensor<T>> : fmt::formatter<std::string> {
    auto format(const cellgrad::Tensor<T>& tensor, fmt::format_context& ctx) const {
        return fmt::formatter<std::string>::format(
            fmt::format("Tensor{} {}", tensor.shape(), cellgrad::format_values(tensor.view())),
            ctx);
    }
};
