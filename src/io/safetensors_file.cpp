// SafetensorsFile's accessors: names, shapes, dtypes, raw bytes and typed copies of a file that
// parse_safetensors has already validated.
#include <cstring>
#include <optional>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cellgrad/io/safetensors.hpp"
#include "safetensors_detail.hpp"

namespace cellgrad::io {

namespace {

using detail::element_count;
using detail::shape_text;

/// Names listed in "tensor not found" messages.
constexpr std::size_t max_listed_names = 20;

} // namespace

std::vector<std::string> SafetensorsFile::names() const {
    std::vector<std::string> out;
    out.reserve(infos_.size());
    for (const Info& info : infos_)
        out.push_back(info.name);
    return out;
}

const SafetensorsFile::Info& SafetensorsFile::info(const std::string& name) const {
    auto it = index_.find(name);
    if (it != index_.end())
        return infos_[it->second];
    std::string listed;
    if (infos_.empty()) {
        listed = "the file has no tensors";
    } else {
        std::vector<std::string> shown;
        for (std::size_t i = 0; i < infos_.size() && i < max_listed_names; ++i) {
            shown.push_back(infos_[i].name);
        }
        listed = fmt::format("the file has: {}", fmt::join(shown, ", "));
        if (infos_.size() > max_listed_names) {
            listed += fmt::format(" ... and {} more", infos_.size() - max_listed_names);
        }
    }
    throw Error(fmt::format("safetensors '{}': no tensor '{}'; {}", source_, name, listed));
}

const std::vector<std::size_t>& SafetensorsFile::shape(const std::string& name) const {
    return info(name).shape;
}

Dtype SafetensorsFile::dtype(const std::string& name) const {
    return info(name).dtype;
}

std::span<const std::byte> SafetensorsFile::raw(const std::string& name) const {
    const Info& i = info(name);
    return {bytes_.data() + data_start_ + i.begin, i.end - i.begin};
}

template <class T>
void SafetensorsFile::copy_out(const Info& info, T* target, DtypeConversion conversion) const {
    const std::byte* source = bytes_.data() + data_start_ + info.begin;
    const std::size_t count = (info.end - info.begin) / dtype_size(info.dtype);
    if (info.dtype == dtype_of<T>()) {
        if (count > 0)
            std::memcpy(target, source, count * sizeof(T));
        return;
    }
    if constexpr (std::is_floating_point_v<T>) {
        if (conversion == DtypeConversion::float_precision &&
            (info.dtype == Dtype::F32 || info.dtype == Dtype::F64)) {
            auto convert = [&](auto stored) {
                using U = decltype(stored);
                for (std::size_t k = 0; k < count; ++k) {
                    std::memcpy(&stored, source + k * sizeof(U), sizeof(U));
                    target[k] = static_cast<T>(stored);
                }
            };
            if (info.dtype == Dtype::F32) {
                convert(float{});
            } else {
                convert(double{});
            }
            return;
        }
    }
    const bool convertible = std::is_floating_point_v<T> && info.dtype != Dtype::I64;
    throw Error(
        fmt::format("safetensors '{}': tensor '{}' is stored as {} but {} was requested{}", source_,
                    info.name, dtype_name(info.dtype), dtype_name(dtype_of<T>()),
                    convertible ? " (pass DtypeConversion::float_precision to convert)" : ""));
}

template <class T>
void SafetensorsFile::read_into(const std::string& name, Tensor<T>& target,
                                const std::vector<std::size_t>& expected_shape,
                                DtypeConversion conversion) const {
    const Info& i = info(name);
    std::optional<std::size_t> expected_count = element_count(expected_shape);
    if (!expected_count || *expected_count != target.size()) {
        throw Error(fmt::format("safetensors '{}': read_into '{}': expected shape {} does not fit "
                                "the target tensor {} ({} elements)",
                                source_, name, shape_text(expected_shape), target.shape(),
                                target.size()));
    }
    if (i.shape != expected_shape) {
        throw Error(fmt::format("safetensors '{}': tensor '{}' has shape {} but {} was expected",
                                source_, name, shape_text(i.shape), shape_text(expected_shape)));
    }
    copy_out(i, target.data(), conversion);
}

template <class T>
Tensor<T> SafetensorsFile::to_tensor(const std::string& name, DtypeConversion conversion) const {
    const Info& i = info(name);
    std::size_t rows = 1;
    std::size_t cols = 1;
    if (i.shape.size() == 1) {
        cols = i.shape[0];
    } else if (i.shape.size() == 2) {
        rows = i.shape[0];
        cols = i.shape[1];
    } else if (i.shape.size() > 2) {
        throw Error(fmt::format("safetensors '{}': tensor '{}' has rank-{} shape {}; to_tensor "
                                "makes matrices only (use read_into with an explicit shape)",
                                source_, name, i.shape.size(), shape_text(i.shape)));
    }
    Tensor<T> out(rows, cols);
    copy_out(i, out.data(), conversion);
    return out;
}

std::vector<std::int64_t> SafetensorsFile::to_int64(const std::string& name) const {
    const Info& i = info(name);
    std::vector<std::int64_t> out((i.end - i.begin) / dtype_size(i.dtype));
    copy_out(i, out.data(), DtypeConversion::none);
    return out;
}

template void SafetensorsFile::read_into<float>(const std::string&, Tensor<float>&,
                                                const std::vector<std::size_t>&,
                                                DtypeConversion) const;
template void SafetensorsFile::read_into<double>(const std::string&, Tensor<double>&,
                                                 const std::vector<std::size_t>&,
                                                 DtypeConversion) const;
template Tensor<float> SafetensorsFile::to_tensor<float>(const std::string&, DtypeConversion) const;
template Tensor<double> SafetensorsFile::to_tensor<double>(const std::string&,
                                                           DtypeConversion) const;

} // namespace cellgrad::io
