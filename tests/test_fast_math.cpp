// The fast float exp/sigmoid/tanh on the inputs a diverged run feeds them: NaN must come out as
// NaN with no undefined behaviour on the way (the CI's clang UBSan build halts on a NaN-to-int
// conversion), and infinities must saturate.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "cellgrad/detail/fast_math.hpp"

namespace fast_math = cellgrad::fast_math;

TEST_CASE("fast_math: NaN propagates through exp, sigmoid and tanh; infinities saturate") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    CHECK(std::isnan(fast_math::exp<float>(nan)));
    CHECK(std::isnan(fast_math::exp<float>(-nan)));
    CHECK(std::isnan(fast_math::sigmoid<float>(nan)));
    CHECK(std::isnan(fast_math::tanh<float>(nan)));
    CHECK(fast_math::exp<float>(inf) == inf);
    CHECK(fast_math::exp<float>(-inf) == fast_math::exp<float>(-87.0f)); // the clamp's floor
    CHECK(fast_math::exp<float>(-inf) > 0.0f);
    CHECK(fast_math::sigmoid<float>(inf) == 1.0f);
    CHECK(fast_math::sigmoid<float>(-inf) < 1e-37f);
    CHECK(fast_math::tanh<float>(inf) == 1.0f);
    CHECK(fast_math::tanh<float>(-inf) == -1.0f);
    // Near powers of two across the whole range: the exponent bits are built right (relative
    // error of the polynomial about 2e-7).
    CHECK(fast_math::exp<float>(0.0f) == 1.0f);
    for (int k = -120; k <= 120; k += 15) {
        CAPTURE(k);
        const float x = float(k) * 0.693147180559945f;
        CHECK(std::abs(double(fast_math::exp<float>(x)) / std::exp(double(x)) - 1.0) < 1e-6);
    }
}
