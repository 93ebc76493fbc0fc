// Tensor: construction and shape errors, checked access, copies, views and fmt formatting.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cellgrad/tensor.hpp"

using namespace cellgrad;

TEST_CASE_TEMPLATE("Tensor: fill constructor sets shape, size and every value", T, float, double) {
    const Tensor<T> t(3, 4, T(2.5));
    CHECK(t.rows() == 3);
    CHECK(t.cols() == 4);
    CHECK(t.size() == 12);
    CHECK(t.shape() == Shape{3, 4});
    for (std::size_t r = 0; r < 3; ++r) {
        for (std::size_t c = 0; c < 4; ++c) {
            CHECK(t(r, c) == T(2.5));
        }
    }
    const Tensor<T> zeros(2, 2);
    CHECK(zeros.to_vector() == std::vector<T>{0, 0, 0, 0});
    const Tensor<T> empty;
    CHECK(empty.shape() == Shape{0, 0});
    CHECK(empty.size() == 0);
}

TEST_CASE_TEMPLATE("Tensor: values are stored row-major", T, float, double) {
    const Tensor<T> t(2, 3, {1, 2, 3, 4, 5, 6});
    CHECK(t(0, 0) == T(1));
    CHECK(t(0, 2) == T(3));
    CHECK(t(1, 0) == T(4));
    CHECK(t(1, 2) == T(6));
    CHECK(t.data()[4] == T(5));
    const Tensor<T> from_vector(3, 2, std::vector<T>{1, 2, 3, 4, 5, 6});
    CHECK(from_vector(1, 0) == T(3));
    CHECK(from_vector(2, 1) == T(6));
    // The xtensor storage sees the same layout.
    CHECK(t.xt()(1, 1) == T(5));
}

TEST_CASE("Tensor: a value count that does not match the shape throws naming both") {
    CHECK_THROWS_WITH_AS(Tensor<double>(2, 3, {1.0, 2.0}),
                         doctest::Contains("got 2 values for shape (2, 3), which needs 6"), Error);
    CHECK_THROWS_WITH_AS(Tensor<float>(1, 2, std::vector<float>{1, 2, 3}),
                         doctest::Contains("got 3 values for shape (1, 2)"), Error);
    CHECK_NOTHROW(Tensor<double>(0, 5, std::vector<double>{}));
}

TEST_CASE("Tensor: at() checks bounds and names the shape") {
    const Tensor<double> t(2, 3, {1, 2, 3, 4, 5, 6});
    CHECK(t.at(1, 2) == 6.0);
    CHECK(t.at(0, 1) == 2.0);
    CHECK_THROWS_WITH_AS(t.at(2, 0), doctest::Contains("index (2, 0) is outside shape (2, 3)"),
                         Error);
    CHECK_THROWS_WITH_AS(t.at(0, 3), doctest::Contains("Tensor::at"), Error);
}

TEST_CASE("Tensor: item() needs a (1, 1) tensor") {
    CHECK(Tensor<double>(1, 1, {4.25}).item() == 4.25);
    CHECK(Tensor<float>(1, 1, -3.0f).item() == -3.0f);
    CHECK_THROWS_WITH_AS(Tensor<double>(1, 2).item(),
                         doctest::Contains("Tensor::item: needs shape (1, 1), got (1, 2)"), Error);
    CHECK_THROWS_WITH_AS(Tensor<double>().item(), doctest::Contains("got (0, 0)"), Error);
}

TEST_CASE("Tensor: copies are deep; fill overwrites every element") {
    Tensor<double> a(2, 2, {1, 2, 3, 4});
    Tensor<double> b = a;
    b(0, 0) = 100;
    CHECK(a(0, 0) == 1.0);
    CHECK(b(0, 0) == 100.0);
    Tensor<double> c;
    c = a;
    a.fill(7);
    CHECK(a.to_vector() == std::vector<double>{7, 7, 7, 7});
    CHECK(c.to_vector() == std::vector<double>{1, 2, 3, 4});
    Tensor<double> moved = std::move(c);
    CHECK(moved.to_vector() == std::vector<double>{1, 2, 3, 4});
}

TEST_CASE("View: strided views read and copy the right elements") {
    Tensor<double> t(3, 4, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
    // Columns 1..2 of rows 1..2: a (2, 2) window with stride 4.
    View<double> window{t.data() + 4 + 1, 2, 2, 4};
    CHECK(!window.contiguous());
    CHECK(window(0, 0) == 5.0);
    CHECK(window(1, 1) == 10.0);
    CHECK(*window.row(1) == 9.0);
    const Tensor<double> copied{View<const double>(window)};
    CHECK(copied.shape() == Shape{2, 2});
    CHECK(copied.to_vector() == std::vector<double>{5, 6, 9, 10});
    CHECK(t.view().contiguous());
    // copy() writes into a strided target and leaves the rest alone.
    const Tensor<double> ones(2, 2, 1.0);
    copy<double>(ones.view(), window);
    CHECK(t.to_vector() == std::vector<double>{0, 1, 2, 3, 4, 1, 1, 7, 8, 1, 1, 11});
}

TEST_CASE("copy and max_abs_difference reject different shapes") {
    Tensor<double> a(2, 3);
    Tensor<double> b(3, 2);
    CHECK_THROWS_WITH_AS(
        copy<double>(a.view(), b.view()),
        doctest::Contains("copy: source shape (2, 3) differs from target shape (3, 2)"), Error);
    CHECK_THROWS_WITH_AS(max_abs_difference<double>(a.view(), b.view()),
                         doctest::Contains("max_abs_difference: shapes (2, 3) and (3, 2) differ"),
                         Error);
    const Tensor<double> x(1, 3, {1, -2, 3});
    const Tensor<double> y(1, 3, {1.5, -2, 0});
    CHECK(max_abs_difference<double>(x.view(), y.view()) == 3.0);
}

TEST_CASE("all_finite detects NaN and Inf") {
    Tensor<float> t(2, 2, {1, 2, 3, 4});
    CHECK(all_finite<float>(t.view()));
    t(1, 1) = std::numeric_limits<float>::quiet_NaN();
    CHECK_FALSE(all_finite<float>(t.view()));
    t(1, 1) = 0;
    t(0, 1) = -std::numeric_limits<float>::infinity();
    CHECK_FALSE(all_finite<float>(t.view()));
}

TEST_CASE("fmt: Shape and Tensor formatting") {
    CHECK(fmt::format("{}", Shape{3, 7}) == "(3, 7)");
    CHECK(to_string(Shape{0, 1}) == "(0, 1)");
    CHECK(fmt::format("[{:>8}]", Shape{1, 2}) == "[  (1, 2)]");
    const Tensor<double> t(2, 2, {1, 0.5, -2, 3.25});
    CHECK(fmt::format("{}", t) == "Tensor(2, 2) [[1, 0.5],\n [-2, 3.25]]");
    const Tensor<float> row(1, 3, {1.0f, 2.0f, 1e-7f});
    CHECK(fmt::format("{}", row) == "Tensor(1, 3) [[1, 2, 1e-07]]");
}

TEST_CASE("format_values truncates large tensors with ellipses") {
    Tensor<double> t(10, 10);
    for (std::size_t i = 0; i < t.size(); ++i) {
        t.data()[i] = static_cast<double>(i);
    }
    const std::string text = format_values<double>(t.view(), 2, 3);
    CHECK(text == "[[0, 1, 2, ...],\n [10, 11, 12, ...],\n ...]");
    const std::string full = format_values<double>(t.view());
    CHECK(full.find("[70, 71, 72, 73, 74, 75, 76, 77, ...]") != std::string::npos);
    CHECK(full.find("80") == std::string::npos); // row 8 is not shown with the default 8 rows
}
