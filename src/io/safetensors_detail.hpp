// What the safetensors reader and writer share (private to src/io): shapes in messages and
// overflow-checked sizes.
#pragma once

#include <cstddef>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cellgrad/io/safetensors.hpp"

namespace cellgrad::io::detail {

/// "[3, 4]" for a shape of any rank.
inline std::string shape_text(const std::vector<std::size_t>& shape) {
    return fmt::format("[{}]", fmt::join(shape, ", "));
}

/// product(shape), or nullopt on overflow.
inline std::optional<std::size_t> element_count(const std::vector<std::size_t>& shape) {
    std::size_t count = 1;
    for (std::size_t extent : shape) {
        if (extent != 0 && count > std::numeric_limits<std::size_t>::max() / extent) {
            return std::nullopt;
        }
        count *= extent;
    }
    return count;
}

/// product(shape) * dtype size, or nullopt on overflow.
inline std::optional<std::size_t> byte_count(const std::vector<std::size_t>& shape, Dtype dtype) {
    std::optional<std::size_t> count = element_count(shape);
    if (!count || *count > std::numeric_limits<std::size_t>::max() / dtype_size(dtype)) {
        return std::nullopt;
    }
    return *count * dtype_size(dtype);
}

} // namespace cellgrad::io::detail
