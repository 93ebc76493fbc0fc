// Checkpoints in the safetensors format (https://github.com/huggingface/safetensors).
//
// Layout: an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON
// `{"__metadata__": {"k": "v"}, "name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}}`
// padded with spaces to a multiple of 8, then the raw little-endian data buffer; offsets are
// relative to the start of the data buffer and the tensors tile it in order without gaps.
// Files written here load in the reference readers (Python `safetensors`, PyTorch, Rust crate).
// Writes are atomic (temp file + fsync + rename); loads validate everything before any access.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "cellgrad/tape.hpp"
#include "cellgrad/tensor.hpp"

namespace cellgrad::io {

/// Element types cellgrad reads and writes (the safetensors dtype strings "F32", "F64", "I64").
enum class Dtype { F32, F64, I64 };

/// The safetensors name of a dtype: "F32", "F64" or "I64".
const char* dtype_name(Dtype dtype);

/// Bytes per element of a dtype.
std::size_t dtype_size(Dtype dtype);

/// The dtype of a C++ element type: float -> F32, double -> F64, std::int64_t -> I64.
template <class T>
constexpr Dtype dtype_of() {
    if constexpr (std::is_same_v<T, float>) {
        return Dtype::F32;
    } else if constexpr (std::is_same_v<T, double>) {
        return Dtype::F64;
    } else {
        static_assert(std::is_same_v<T, std::int64_t>, "safetensors: float, double or int64 only");
        return Dtype::I64;
    }
}

/// Whether reads may convert between F32 and F64; by default the stored dtype must match.
enum class DtypeConversion { none, float_precision };

/// File-level metadata: the header's "__metadata__" string -> string map.
using Metadata = std::map<std::string, std::string>;

/// One tensor to write; non-owning: `data` must stay valid until the save returns.
struct TensorEntry {
    std::string name;
    std::vector<std::size_t> shape; ///< as exported, e.g. {n} for a bias, {} for a scalar
    Dtype dtype = Dtype::F32;
    const void* data = nullptr; ///< product(shape) contiguous elements of `dtype`
};

/// Entry for a tensor exported with its own (rows, cols) shape.
template <class T>
TensorEntry make_entry(std::string name, const Tensor<T>& tensor) {
    return {std::move(name), {tensor.rows(), tensor.cols()}, dtype_of<T>(), tensor.data()};
}

/// Entry for a tensor exported with `shape`; throws if product(shape) != tensor.size().
template <class T>
TensorEntry make_entry(std::string name, const Tensor<T>& tensor, std::vector<std::size_t> shape);

/// Entry for a parameter's value under its name and export_shape ({n} for a bias vector).
template <class T>
TensorEntry make_entry(const Parameter<T>& parameter) {
    return make_entry(parameter.name, parameter.value, parameter.export_shape);
}

/// Entry for int64 values (step counters, RNG state); throws if product(shape) != values.size().
TensorEntry make_entry(std::string name, std::span<const std::int64_t> values,
                       std::vector<std::size_t> shape);

/// The complete file image; throws on duplicate/empty/reserved names, null data or overflow.
std::vector<std::byte> serialize_safetensors(const std::vector<TensorEntry>& entries,
                                             const Metadata& metadata = {});

/// Atomically writes `path` (temp in the same directory, fsync, rename); on failure throws and
/// removes the temp, leaving any previous file at `path` untouched.
void save_safetensors(const std::filesystem::path& path, const std::vector<TensorEntry>& entries,
                      const Metadata& metadata = {});

/// A loaded, fully validated safetensors file held in memory.
class SafetensorsFile {
  public:
    /// Where the bytes came from (file path or a caller-given label), used in every message.
    const std::string& source() const { return source_; }
    /// Tensor names in data-buffer order (the order they were written in).
    std::vector<std::string> names() const;
    /// The "__metadata__" map (empty when the file has none).
    const Metadata& metadata() const { return metadata_; }
    /// True when the file has a tensor called `name`.
    bool has(const std::string& name) const { return index_.contains(name); }
    /// Stored shape of `name`; throws naming the tensor and listing the file's tensors if absent.
    const std::vector<std::size_t>& shape(const std::string& name) const;
    /// Stored dtype of `name`; throws if absent.
    Dtype dtype(const std::string& name) const;
    /// Raw little-endian bytes of `name` (valid while this object lives); throws if absent.
    std::span<const std::byte> raw(const std::string& name) const;

    /// Copies `name` into `target`; throws unless the stored shape equals `expected_shape`,
    /// product(expected_shape) == target.size() and the dtype matches (or `conversion` allows it).
    template <class T>
    void read_into(const std::string& name, Tensor<T>& target,
                   const std::vector<std::size_t>& expected_shape,
                   DtypeConversion conversion = DtypeConversion::none) const;
    /// read_into(parameter.name, parameter.value, parameter.export_shape, conversion).
    template <class T>
    void read_into(Parameter<T>& parameter,
                   DtypeConversion conversion = DtypeConversion::none) const {
        read_into(parameter.name, parameter.value, parameter.export_shape, conversion);
    }
    /// New tensor: rank 2 -> (r, c), rank 1 -> (1, n), rank 0 -> (1, 1); throws for rank > 2,
    /// a missing name or a dtype mismatch (unless `conversion` allows F32 <-> F64).
    template <class T>
    Tensor<T> to_tensor(const std::string& name,
                        DtypeConversion conversion = DtypeConversion::none) const;
    /// The values of an I64 tensor in row-major order; throws if absent or not I64.
    std::vector<std::int64_t> to_int64(const std::string& name) const;

  private:
    struct Info {
        std::string name;
        Dtype dtype = Dtype::F32;
        std::vector<std::size_t> shape;
        std::size_t begin = 0; ///< byte offset in the data buffer
        std::size_t end = 0;
    };
    friend SafetensorsFile parse_safetensors(std::vector<std::byte> bytes, std::string source);
    const Info& info(const std::string& name) const;
    template <class T>
    void copy_out(const Info& info, T* target, DtypeConversion conversion) const;

    std::string source_;
    std::vector<std::byte> bytes_; ///< the whole file
    std::size_t data_start_ = 0;   ///< 8 + header length
    std::vector<Info> infos_;      ///< in data-buffer order
    std::map<std::string, std::size_t> index_;
    Metadata metadata_;
};

/// Validates a complete file image; every problem throws an Error naming `source` and the cause.
SafetensorsFile parse_safetensors(std::vector<std::byte> bytes, std::string source = "<memory>");

/// Reads and validates `path`; throws an Error naming the file if it is unreadable or malformed.
SafetensorsFile load_safetensors(const std::filesystem::path& path);

} // namespace cellgrad::io
