// safetensors reading and writing: header building, atomic saves, and load-time validation.
#include "cellgrad/io/safetensors.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <string_view>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

// The data buffer is little-endian; reads and writes copy host memory as is.
static_assert(std::endian::native == std::endian::little,
              "cellgrad safetensors I/O assumes a little-endian host");

namespace cellgrad::io {

namespace {

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

/// Largest header the reference implementation accepts (100 MB).
constexpr std::uint64_t max_header_size = 100'000'000;
/// Deepest JSON nesting accepted while parsing a header (a valid one needs 3).
constexpr int max_header_depth = 16;
/// Names listed in "tensor not found" messages.
constexpr std::size_t max_listed_names = 20;

/// "[3, 4]" for a shape of any rank.
std::string shape_text(const std::vector<std::size_t>& shape) {
    return fmt::format("[{}]", fmt::join(shape, ", "));
}

/// product(shape), or nullopt on overflow.
std::optional<std::size_t> element_count(const std::vector<std::size_t>& shape) {
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
std::optional<std::size_t> byte_count(const std::vector<std::size_t>& shape, Dtype dtype) {
    std::optional<std::size_t> count = element_count(shape);
    if (!count || *count > std::numeric_limits<std::size_t>::max() / dtype_size(dtype)) {
        return std::nullopt;
    }
    return *count * dtype_size(dtype);
}

/// Dtype from its safetensors name; nullopt for names cellgrad does not support.
std::optional<Dtype> parse_dtype(std::string_view name) {
    if (name == "F32")
        return Dtype::F32;
    if (name == "F64")
        return Dtype::F64;
    if (name == "I64")
        return Dtype::I64;
    return std::nullopt;
}

/// JSON type name for messages ("string", "number", ...).
std::string json_type(const ordered_json& value) {
    return value.type_name();
}

/// The padded JSON header and the size of the data buffer that follows it.
struct Plan {
    std::string header;
    std::vector<std::size_t> sizes; ///< bytes of each entry's data
};

/// Validates the entries and builds the header; `where` prefixes every error message.
Plan make_plan(const std::vector<TensorEntry>& entries, const Metadata& metadata,
               const std::string& where) {
    Plan plan;
    ordered_json root = ordered_json::object();
    if (!metadata.empty()) {
        ordered_json meta = ordered_json::object();
        for (const auto& [key, value] : metadata) {
            meta[key] = value;
        }
        root["__metadata__"] = std::move(meta);
    }
    std::size_t offset = 0;
    for (const TensorEntry& entry : entries) {
        if (entry.name.empty()) {
            throw Error(fmt::format("{}: a tensor has an empty name", where));
        }
        if (entry.name == "__metadata__") {
            throw Error(
                fmt::format("{}: '__metadata__' is reserved and cannot name a tensor", where));
        }
        if (root.contains(entry.name)) {
            throw Error(fmt::format("{}: duplicate tensor name '{}'", where, entry.name));
        }
        std::optional<std::size_t> bytes = byte_count(entry.shape, entry.dtype);
        if (!bytes || offset > std::numeric_limits<std::size_t>::max() - *bytes) {
            throw Error(fmt::format("{}: tensor '{}' of shape {} overflows the size computation",
                                    where, entry.name, shape_text(entry.shape)));
        }
        if (*bytes > 0 && entry.data == nullptr) {
            throw Error(fmt::format("{}: tensor '{}' of shape {} has no data (null pointer)", where,
                                    entry.name, shape_text(entry.shape)));
        }
        ordered_json info = ordered_json::object();
        info["dtype"] = dtype_name(entry.dtype);
        info["shape"] = entry.shape;
        info["data_offsets"] = ordered_json::array({offset, offset + *bytes});
        root[entry.name] = std::move(info);
        plan.sizes.push_back(*bytes);
        offset += *bytes;
    }
    try {
        plan.header = root.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
    } catch (const nlohmann::json::exception& e) {
        throw Error(fmt::format("{}: a tensor name or metadata string is not valid UTF-8 ({})",
                                where, e.what()));
    }
    // The reference writer pads with spaces so that the data buffer starts 8-byte aligned.
    plan.header.append((8 - plan.header.size() % 8) % 8, ' ');
    return plan;
}

/// The 8-byte little-endian encoding of n.
std::array<std::byte, 8> encode_u64(std::uint64_t n) {
    std::array<std::byte, 8> out{};
    for (std::size_t i = 0; i < 8; ++i) {
        out[i] = static_cast<std::byte>((n >> (8 * i)) & 0xFF);
    }
    return out;
}

/// Writes all n bytes to fd (retrying short writes and EINTR); throws on error.
void write_all(int fd, const void* data, std::size_t n, const std::string& where) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
        ssize_t written = ::write(fd, p, n);
        if (written < 0) {
            if (errno == EINTR)
                continue;
            throw Error(fmt::format("{}: write failed: {}", where, std::strerror(errno)));
        }
        p += written;
        n -= static_cast<std::size_t>(written);
    }
}

/// Best-effort fsync of the directory holding `path`, so that the rename itself is durable.
void sync_directory(const fs::path& path) {
    fs::path dir = path.parent_path();
    if (dir.empty())
        dir = ".";
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)::fsync(fd);
        ::close(fd);
    }
}

/// Thrown from the JSON parser callback; converted to an Error by the caller.
struct HeaderProblem {
    std::string what;
};

} // namespace

const char* dtype_name(Dtype dtype) {
    switch (dtype) {
    case Dtype::F32:
        return "F32";
    case Dtype::F64:
        return "F64";
    case Dtype::I64:
        return "I64";
    }
    return "?";
}

std::size_t dtype_size(Dtype dtype) {
    switch (dtype) {
    case Dtype::F32:
        return 4;
    case Dtype::F64:
        return 8;
    case Dtype::I64:
        return 8;
    }
    return 0;
}

template <class T>
TensorEntry make_entry(std::string name, const Tensor<T>& tensor, std::vector<std::size_t> shape) {
    std::optional<std::size_t> count = element_count(shape);
    if (!count || *count != tensor.size()) {
        throw Error(fmt::format("safetensors make_entry: tensor '{}' is {} ({} elements) but the "
                                "export shape {} needs {}",
                                name, tensor.shape(), tensor.size(), shape_text(shape),
                                count ? fmt::to_string(*count) : std::string("overflow")));
    }
    return {std::move(name), std::move(shape), dtype_of<T>(), tensor.data()};
}

template TensorEntry make_entry<float>(std::string, const Tensor<float>&, std::vector<std::size_t>);
template TensorEntry make_entry<double>(std::string, const Tensor<double>&,
                                        std::vector<std::size_t>);

TensorEntry make_entry(std::string name, std::span<const std::int64_t> values,
                       std::vector<std::size_t> shape) {
    std::optional<std::size_t> count = element_count(shape);
    if (!count || *count != values.size()) {
        throw Error(fmt::format("safetensors make_entry: '{}' has {} int64 values but the shape {} "
                                "needs {}",
                                name, values.size(), shape_text(shape),
                                count ? fmt::to_string(*count) : std::string("overflow")));
    }
    return {std::move(name), std::move(shape), Dtype::I64, values.data()};
}

std::vector<std::byte> serialize_safetensors(const std::vector<TensorEntry>& entries,
                                             const Metadata& metadata) {
    Plan plan = make_plan(entries, metadata, "safetensors serialize");
    std::vector<std::byte> out;
    std::size_t total = 8 + plan.header.size();
    for (std::size_t size : plan.sizes)
        total += size;
    out.reserve(total);
    auto length = encode_u64(plan.header.size());
    out.insert(out.end(), length.begin(), length.end());
    const auto* header = reinterpret_cast<const std::byte*>(plan.header.data());
    out.insert(out.end(), header, header + plan.header.size());
    for (std::size_t i = 0; i < entries.size(); ++i) {
        const auto* data = static_cast<const std::byte*>(entries[i].data);
        if (plan.sizes[i] > 0)
            out.insert(out.end(), data, data + plan.sizes[i]);
    }
    return out;
}

void save_safetensors(const fs::path& path, const std::vector<TensorEntry>& entries,
                      const Metadata& metadata) {
    const std::string where = fmt::format("safetensors '{}'", path.string());
    // Everything that can be checked is checked before the disk is touched.
    Plan plan = make_plan(entries, metadata, where);

    static std::atomic<std::uint64_t> counter{0};
    fs::path temp = path;
    temp += fmt::format(".tmp.{}.{}", static_cast<long>(::getpid()), counter++);
    int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        throw Error(fmt::format("{}: cannot create temporary file '{}': {}", where, temp.string(),
                                std::strerror(errno)));
    }
    try {
        auto length = encode_u64(plan.header.size());
        write_all(fd, length.data(), length.size(), where);
        write_all(fd, plan.header.data(), plan.header.size(), where);
        for (std::size_t i = 0; i < entries.size(); ++i) {
            if (plan.sizes[i] > 0)
                write_all(fd, entries[i].data, plan.sizes[i], where);
        }
        if (::fsync(fd) != 0) {
            throw Error(fmt::format("{}: fsync failed: {}", where, std::strerror(errno)));
        }
        int closed = ::close(fd);
        fd = -1;
        if (closed != 0) {
            throw Error(fmt::format("{}: close failed: {}", where, std::strerror(errno)));
        }
        std::error_code ec;
        fs::rename(temp, path, ec);
        if (ec) {
            throw Error(fmt::format("{}: cannot move the temporary file into place: {}", where,
                                    ec.message()));
        }
    } catch (...) {
        if (fd >= 0)
            ::close(fd);
        std::error_code ignored;
        fs::remove(temp, ignored);
        throw;
    }
    sync_directory(path);
}

SafetensorsFile parse_safetensors(std::vector<std::byte> bytes, std::string source) {
    const std::string where = fmt::format("safetensors '{}'", source);
    auto fail = [&](const std::string& what) { return Error(fmt::format("{}: {}", where, what)); };

    if (bytes.size() < 8) {
        throw fail(fmt::format("file is {} bytes, shorter than the 8-byte header length field",
                               bytes.size()));
    }
    std::uint64_t header_size = 0;
    for (std::size_t i = 0; i < 8; ++i) {
        header_size |= static_cast<std::uint64_t>(bytes[i]) << (8 * i);
    }
    if (header_size > max_header_size) {
        throw fail(fmt::format("header length {} is larger than the {}-byte limit (corrupt or not "
                               "a safetensors file)",
                               header_size, max_header_size));
    }
    if (header_size > bytes.size() - 8) {
        throw fail(fmt::format("header length {} is larger than the {} bytes that follow it "
                               "(truncated or corrupt file)",
                               header_size, bytes.size() - 8));
    }
    const char* text = reinterpret_cast<const char*>(bytes.data()) + 8;
    if (header_size == 0 || text[0] != '{') {
        throw fail("header is not a JSON object (it does not start with '{')");
    }

    // JSON text never holds a raw NUL, and nlohmann's lexer would stop at one and ignore the rest.
    if (const void* nul = std::memchr(text, 0, header_size)) {
        throw fail(fmt::format("header is not valid JSON: NUL byte at header offset {}",
                               static_cast<const char*>(nul) - text));
    }

    // Duplicate tensor names would be silently merged by the parser: catch them as they come.
    std::vector<std::string> top_keys;
    ordered_json root;
    try {
        ordered_json::parser_callback_t callback =
            [&](int depth, nlohmann::json::parse_event_t event, ordered_json& parsed) {
                if ((event == nlohmann::json::parse_event_t::object_start ||
                     event == nlohmann::json::parse_event_t::array_start) &&
                    depth >= max_header_depth) {
                    throw HeaderProblem{
                        fmt::format("header JSON nests deeper than {} levels", max_header_depth)};
                }
                if (event == nlohmann::json::parse_event_t::key && depth == 1) {
                    std::string key = parsed.get<std::string>();
                    if (std::find(top_keys.begin(), top_keys.end(), key) != top_keys.end()) {
                        throw HeaderProblem{fmt::format("duplicate entry '{}' in the header", key)};
                    }
                    top_keys.push_back(std::move(key));
                }
                return true;
            };
        root = ordered_json::parse(text, text + header_size, callback);
    } catch (const HeaderProblem& problem) {
        throw fail(problem.what);
    } catch (const nlohmann::json::exception& e) {
        throw fail(fmt::format("header is not valid JSON: {}", e.what()));
    }
    if (!root.is_object()) {
        throw fail(fmt::format("header is a JSON {}, not an object", json_type(root)));
    }

    SafetensorsFile file;
    file.source_ = source;
    for (const auto& [key, value] : root.items()) {
        if (key == "__metadata__") {
            if (!value.is_object()) {
                throw fail(fmt::format("__metadata__ is a JSON {}, not an object of strings",
                                       json_type(value)));
            }
            for (const auto& [meta_key, meta_value] : value.items()) {
                if (!meta_value.is_string()) {
                    throw fail(fmt::format("__metadata__ value of '{}' is a JSON {}, not a string",
                                           meta_key, json_type(meta_value)));
                }
                file.metadata_[meta_key] = meta_value.get<std::string>();
            }
            continue;
        }
        const std::string tensor = fmt::format("tensor '{}'", key);
        if (!value.is_object()) {
            throw fail(fmt::format("{} is a JSON {}, not an object", tensor, json_type(value)));
        }
        for (const char* field : {"dtype", "shape", "data_offsets"}) {
            if (!value.contains(field)) {
                throw fail(fmt::format("{} has no \"{}\"", tensor, field));
            }
        }
        SafetensorsFile::Info info;
        info.name = key;
        const ordered_json& dtype = value["dtype"];
        if (!dtype.is_string()) {
            throw fail(fmt::format("{} has a dtype that is a JSON {}, not a string", tensor,
                                   json_type(dtype)));
        }
        std::optional<Dtype> parsed_dtype = parse_dtype(dtype.get<std::string>());
        if (!parsed_dtype) {
            throw fail(fmt::format("{} has unsupported dtype \"{}\" (cellgrad reads F32, F64, I64)",
                                   tensor, dtype.get<std::string>()));
        }
        info.dtype = *parsed_dtype;
        const ordered_json& shape = value["shape"];
        if (!shape.is_array()) {
            throw fail(fmt::format("{} has a shape that is a JSON {}, not an array", tensor,
                                   json_type(shape)));
        }
        for (const ordered_json& extent : shape) {
            if (!extent.is_number_unsigned()) {
                throw fail(fmt::format("{} has shape {} with an entry that is not a non-negative "
                                       "integer",
                                       tensor, shape.dump()));
            }
            info.shape.push_back(extent.get<std::size_t>());
        }
        const ordered_json& offsets = value["data_offsets"];
        if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
            !offsets[1].is_number_unsigned()) {
            throw fail(fmt::format("{} has data_offsets {}, not [begin, end] with non-negative "
                                   "integers",
                                   tensor, offsets.dump()));
        }
        info.begin = offsets[0].get<std::size_t>();
        info.end = offsets[1].get<std::size_t>();
        if (info.begin > info.end) {
            throw fail(fmt::format("{} has data_offsets [{}, {}] with begin after end", tensor,
                                   info.begin, info.end));
        }
        std::optional<std::size_t> needed = byte_count(info.shape, info.dtype);
        if (!needed) {
            throw fail(fmt::format("{} has shape {} whose size overflows", tensor,
                                   shape_text(info.shape)));
        }
        if (info.end - info.begin != *needed) {
            throw fail(
                fmt::format("{} has data_offsets [{}, {}] spanning {} bytes, but shape {} of "
                            "{} needs {} bytes",
                            tensor, info.begin, info.end, info.end - info.begin,
                            shape_text(info.shape), dtype_name(info.dtype), *needed));
        }
        file.infos_.push_back(std::move(info));
    }

    // The tensors must tile the data buffer exactly: from 0, in order, no gaps, no overlaps.
    const std::size_t data_size = bytes.size() - 8 - header_size;
    std::stable_sort(file.infos_.begin(), file.infos_.end(), [](const auto& a, const auto& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    std::size_t covered = 0;
    const SafetensorsFile::Info* previous = nullptr;
    for (const SafetensorsFile::Info& info : file.infos_) {
        if (info.end > data_size) {
            throw fail(fmt::format("tensor '{}' has data_offsets [{}, {}] past the end of the "
                                   "{}-byte data buffer (truncated file?)",
                                   info.name, info.begin, info.end, data_size));
        }
        if (info.begin < covered) {
            throw fail(fmt::format("tensor '{}' data_offsets [{}, {}] overlap tensor '{}' [{}, {}]",
                                   info.name, info.begin, info.end, previous->name, previous->begin,
                                   previous->end));
        }
        if (info.begin > covered) {
            throw fail(fmt::format("gap of {} bytes in the data buffer before tensor '{}' at "
                                   "data_offsets [{}, {}]",
                                   info.begin - covered, info.name, info.begin, info.end));
        }
        covered = info.end;
        previous = &info;
    }
    if (covered != data_size) {
        throw fail(fmt::format("the data buffer is {} bytes but the tensors' data_offsets cover "
                               "{} (trailing bytes or a corrupt header)",
                               data_size, covered));
    }
    for (std::size_t i = 0; i < file.infos_.size(); ++i) {
        file.index_[file.infos_[i].name] = i;
    }
    file.data_start_ = 8 + header_size;
    file.bytes_ = std::move(bytes);
    return file;
}

SafetensorsFile load_safetensors(const fs::path& path) {
    const std::string where = fmt::format("safetensors '{}'", path.string());
    std::error_code ec;
    fs::file_status status = fs::status(path, ec);
    if (status.type() == fs::file_type::not_found) {
        throw Error(fmt::format("{}: cannot open: no such file", where));
    }
    if (ec) {
        throw Error(fmt::format("{}: cannot open: {}", where, ec.message()));
    }
    if (!fs::is_regular_file(status)) {
        throw Error(fmt::format("{}: cannot open: not a regular file", where));
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw Error(fmt::format("{}: cannot open: {}", where, std::strerror(errno)));
    }
    in.seekg(0, std::ios::end);
    const std::streamoff size = in.tellg();
    in.seekg(0, std::ios::beg);
    if (size < 0 || !in) {
        throw Error(fmt::format("{}: cannot determine the file size", where));
    }
    std::vector<std::byte> bytes(static_cast<std::size_t>(size));
    in.read(reinterpret_cast<char*>(bytes.data()), size);
    if (in.gcount() != size) {
        throw Error(fmt::format("{}: read {} of {} bytes", where, in.gcount(), size));
    }
    return parse_safetensors(std::move(bytes), path.string());
}

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
