// safetensors reading: load-time validation of everything (linear in the header size, bounded
// entry count and depth) before any tensor is accessed.
#include "cellgrad/io/safetensors.hpp"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <string_view>
#include <system_error>
#include <unordered_set>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "safetensors_detail.hpp"

// The data buffer is little-endian; reads and writes copy host memory as is.
static_assert(std::endian::native == std::endian::little,
              "cellgrad safetensors I/O assumes a little-endian host");

namespace cellgrad::io {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using detail::byte_count;
using detail::element_count;
using detail::shape_text;

/// Largest header the reference implementation accepts (100 MB).
constexpr std::uint64_t max_header_size = 100'000'000;
/// Deepest JSON nesting accepted while parsing a header (a valid one needs 3).
constexpr int max_header_depth = 16;
/// Most top-level header entries (tensors + __metadata__) accepted; real checkpoints have dozens.
constexpr std::size_t max_header_entries = 65536;

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
std::string json_type(const json& value) {
    return value.type_name();
}

/// SAX handler of the first pass over a header: depth, entry count, duplicate names, key order.
struct HeaderScan final : nlohmann::json_sax<json> {
    int depth = 0;
    std::vector<std::string> keys; ///< top-level keys in header order
    std::unordered_set<std::string> seen;
    std::string problem; ///< why the scan stopped

    bool open() {
        if (++depth > max_header_depth) {
            problem = fmt::format("header JSON nests deeper than {} levels", max_header_depth);
            return false;
        }
        return true;
    }
    bool start_object(std::size_t) override { return open(); }
    bool start_array(std::size_t) override { return open(); }
    bool end_object() override { return --depth, true; }
    bool end_array() override { return --depth, true; }
    bool key(string_t& key) override {
        if (depth != 1) {
            return true;
        }
        if (keys.size() >= max_header_entries) {
            problem = fmt::format("header has more than {} entries (a checkpoint has one per "
                                  "tensor)",
                                  max_header_entries);
            return false;
        }
        if (!seen.insert(key).second) {
            problem = fmt::format("duplicate entry '{}' in the header", key);
            return false;
        }
        keys.push_back(key);
        return true;
    }
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t&) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool parse_error(std::size_t, const std::string&,
                     const nlohmann::detail::exception& e) override {
        problem = fmt::format("header is not valid JSON: {}", e.what());
        return false;
    }
};

} // namespace

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

    // A first, SAX pass checks what the tree would hide or what would make it costly: nesting
    // depth, the entry count, and duplicate tensor names (which the tree would silently merge).
    // nlohmann's parser callbacks cannot be used for this: each object end scans its parent, so
    // n entries cost n^2. The tree is then a std::map-backed json (ordered_json's vector map is
    // n^2 too); `scan.keys` keeps the header order for ties in the data order.
    HeaderScan scan;
    json root;
    try {
        if (!json::sax_parse(text, text + header_size, &scan)) {
            throw fail(scan.problem);
        }
        root = json::parse(text, text + header_size);
    } catch (const json::exception& e) {
        throw fail(fmt::format("header is not valid JSON: {}", e.what()));
    }
    if (!root.is_object()) {
        throw fail(fmt::format("header is a JSON {}, not an object", json_type(root)));
    }

    SafetensorsFile file;
    file.source_ = source;
    for (const std::string& key : scan.keys) {
        const json& value = root.at(key);
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
        const json& dtype = value["dtype"];
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
        const json& shape = value["shape"];
        if (!shape.is_array()) {
            throw fail(fmt::format("{} has a shape that is a JSON {}, not an array", tensor,
                                   json_type(shape)));
        }
        for (const json& extent : shape) {
            if (!extent.is_number_unsigned()) {
                throw fail(fmt::format("{} has shape {} with an entry that is not a non-negative "
                                       "integer",
                                       tensor, shape.dump()));
            }
            info.shape.push_back(extent.get<std::size_t>());
        }
        const json& offsets = value["data_offsets"];
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
    if (fs::is_directory(status)) {
        throw Error(fmt::format("{}: is a directory, not a checkpoint file", where));
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

} // namespace cellgrad::io
