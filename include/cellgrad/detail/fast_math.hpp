// Branch-free float exp/sigmoid/tanh that compilers vectorise (Cephes expf polynomial, relative
// error about 2e-7); double keeps the C library's functions so float64 gradient checks stay exact.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace cellgrad::fast_math {

/// e^x for float (flushed to 2^-126 below -87, +inf above 88.72); library call for double.
template <class T>
[[gnu::always_inline]] inline T exp(T x) {
    if constexpr (std::is_same_v<T, double>) {
        return std::exp(x);
    } else {
        // Below -87 the result would be subnormal; above 88.72 the exponent bits become +inf.
        x = std::min(std::max(x, -87.0f), 89.0f);
        // NaN passes the clamp unchanged (std::max and std::min return their first argument).
        // Round to nearest by the 1.5 * 2^23 trick: branch-free on every SIMD level. The low bits
        // of `shifted` hold n as an integer, so 2^n below is built from them by integer
        // arithmetic: no float-to-int conversion, which would be undefined for NaN.
        const float shifted = x * 1.44269504088896341f + 12582912.0f;
        const float n = shifted - 12582912.0f;
        const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
        float p = 1.9875691500e-4f;
        p = p * r + 1.3981999507e-3f;
        p = p * r + 8.3334519073e-3f;
        p = p * r + 4.1665795894e-2f;
        p = p * r + 1.6666665459e-1f;
        p = p * r + 5.0000001201e-1f;
        const float y = p * r * r + r + 1.0f;
        const std::uint32_t bits = (std::bit_cast<std::uint32_t>(shifted) + 127u) << 23;
        return y * std::bit_cast<float>(bits);
    }
}

/// 1 / (1 + e^-x).
template <class T>
[[gnu::always_inline]] inline T sigmoid(T x) {
    return T(1) / (T(1) + exp<T>(-x));
}

/// tanh(x): odd rational form from e^{-2|x|}, with its Taylor series below 0.1 to keep relative
/// accuracy.
template <class T>
[[gnu::always_inline]] inline T tanh(T x) {
    if constexpr (std::is_same_v<T, double>) {
        return std::tanh(x);
    } else {
        const float magnitude = std::abs(x);
        const float e = exp<float>(-2.0f * magnitude);
        const float far = (1.0f - e) / (1.0f + e);
        const float m2 = magnitude * magnitude;
        const float near =
            magnitude * (1.0f + m2 * (-1.0f / 3.0f + m2 * (2.0f / 15.0f + m2 * (-17.0f / 315.0f))));
        const float value = magnitude < 0.1f ? near : far;
        return x < 0.0f ? -value : value;
    }
}

} // namespace cellgrad::fast_math
