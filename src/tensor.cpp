#include "cellgrad/tensor.hpp"

#include <algorithm>
#include <cmath>

namespace cellgrad {

std::string to_string(const Shape& shape) {
    return fmt::format("({}, {})", shape.rows, shape.cols);
}

template <class T>
Tensor<T>::Tensor(std::size_t rows, std::size_t cols, T fill)
    : storage_(std::array<std::size_t, 2>{rows, cols}, fill) {}

template <class T>
Tensor<T>::Tensor(std::size_t rows, std::size_t cols, std::initializer_list<T> values)
    : Tensor(rows, cols, std::vector<T>(values)) {}

template <class T>
Tensor<T>::Tensor(std::size_t rows, std::size_t cols, const std::vector<T>& values)
    : storage_(std::array<std::size_t, 2>{rows, cols}) {
    if (values.size() != rows * cols) {
        throw Error(fmt::format("Tensor: got {} values for shape ({}, {}), which needs {}",
                                values.size(), rows, cols, rows * cols));
    }
    std::copy(values.begin(), values.end(), storage_.data());
}

template <class T>
Tensor<T>::Tensor(View<const T> view) : storage_(std::array<std::size_t, 2>{view.rows, view.cols}) {
    copy<T>(view, this->view());
}

template <class T>
T Tensor<T>::at(std::size_t r, std::size_t c) const {
    if (r >= rows() || c >= cols()) {
        throw Error(fmt::format("Tensor::at: index ({}, {}) is outside shape {}", r, c, shape()));
    }
    return (*this)(r, c);
}

template <class T>
T Tensor<T>::item() const {
    if (rows() != 1 || cols() != 1) {
        throw Error(fmt::format("Tensor::item: needs shape (1, 1), got {}", shape()));
    }
    return data()[0];
}

template <class T>
void Tensor<T>::fill(T value) {
    std::fill(data(), data() + size(), value);
}

template <class T>
void copy(View<const T> source, View<T> target) {
    if (source.shape() != target.shape()) {
        throw Error(fmt::format("copy: source shape {} differs from target shape {}",
                                source.shape(), target.shape()));
    }
    for (std::size_t r = 0; r < source.rows; ++r) {
        std::copy(source.row(r), source.row(r) + source.cols, target.row(r));
    }
}

template <class T>
T max_abs_difference(View<const T> a, View<const T> b) {
    if (a.shape() != b.shape()) {
        throw Error(
            fmt::format("max_abs_difference: shapes {} and {} differ", a.shape(), b.shape()));
    }
    T worst = 0;
    for (std::size_t r = 0; r < a.rows; ++r) {
        for (std::size_t c = 0; c < a.cols; ++c) {
            worst = std::max(worst, std::abs(a(r, c) - b(r, c)));
        }
    }
    return worst;
}

template <class T>
bool all_finite(View<const T> view) {
    for (std::size_t r = 0; r < view.rows; ++r) {
        const T* row = view.row(r);
        for (std::size_t c = 0; c < view.cols; ++c) {
            if (!std::isfinite(row[c])) {
                return false;
            }
        }
    }
    return true;
}

template <class T>
std::string format_values(View<const T> view, std::size_t max_rows, std::size_t max_cols) {
    std::string text = "[";
    for (std::size_t r = 0; r < std::min(view.rows, max_rows); ++r) {
        text += r == 0 ? "[" : ",\n [";
        for (std::size_t c = 0; c < std::min(view.cols, max_cols); ++c) {
            text += (c == 0 ? "" : ", ") + fmt::format("{:.6g}", view(r, c));
        }
        text += view.cols > max_cols ? ", ...]" : "]";
    }
    text += view.rows > max_rows ? ",\n ...]" : "]";
    return text;
}

#define CELLGRAD_INSTANTIATE(T)                                                                    \
    template class Tensor<T>;                                                                      \
    template void copy<T>(View<const T>, View<T>);                                                 \
    template T max_abs_difference<T>(View<const T>, View<const T>);                                \
    template bool all_finite<T>(View<const T>);                                                    \
    template std::string format_values<T>(View<const T>, std::size_t, std::size_t);
CELLGRAD_INSTANTIATE(float)
CELLGRAD_INSTANTIATE(double)
#undef CELLGRAD_INSTANTIATE

} // namespace cellgrad
