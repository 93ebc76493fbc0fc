// safetensors writing: header building and atomic saves (temp file in the target's directory,
// fsync, rename; symbolic links followed, the file mode kept, orphaned temp files cleaned up).
#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <string_view>
#include <system_error>
#include <unordered_set>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cellgrad/io/safetensors.hpp"
#include "safetensors_detail.hpp"

namespace cellgrad::io {

namespace {

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;
using detail::byte_count;
using detail::element_count;
using detail::shape_text;

/// Most symbolic links followed from a checkpoint path to the file it names.
constexpr int max_symlinks = 40;

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
    std::unordered_set<std::string_view> names;
    for (const TensorEntry& entry : entries) {
        if (entry.name.empty()) {
            throw Error(fmt::format("{}: a tensor has an empty name", where));
        }
        if (entry.name == "__metadata__") {
            throw Error(
                fmt::format("{}: '__metadata__' is reserved and cannot name a tensor", where));
        }
        if (!names.insert(entry.name).second) {
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

/// The file a path names after following every symbolic link (the path itself if it is none).
fs::path follow_symlinks(fs::path path, const std::string& where) {
    std::error_code ec;
    for (int links = 0; fs::is_symlink(fs::symlink_status(path, ec)); ++links) {
        if (links == max_symlinks) {
            throw Error(fmt::format("{}: more than {} symbolic links", where, max_symlinks));
        }
        const fs::path link = fs::read_symlink(path);
        path = link.is_absolute() ? link : path.parent_path() / link;
    }
    return path;
}

/// Removes `<name>.tmp.<pid>.<n>` files next to `path` left by a process that no longer runs
/// (killed inside a save); a live writer's temporary file is left alone.
void remove_orphaned_temps(const fs::path& path) {
    const fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
    const std::string prefix = path.filename().string() + ".tmp.";
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) {
            continue;
        }
        const std::string_view rest = std::string_view(name).substr(prefix.size());
        const std::size_t dot = rest.find('.');
        const std::string_view pid_text = rest.substr(0, dot);
        if (dot == std::string_view::npos || pid_text.empty() || pid_text.size() > 9 ||
            rest.find_first_not_of("0123456789.") != std::string_view::npos) {
            continue;
        }
        const long pid = std::stol(std::string(pid_text));
        if (pid != ::getpid() && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
            std::error_code ignored;
            fs::remove(it->path(), ignored);
        }
    }
}

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

    // A symbolic link stays a link: the file it names is replaced, keeping that file's mode.
    const fs::path target = follow_symlinks(path, where);
    remove_orphaned_temps(target);
    struct stat existing {};
    const bool keep_mode = ::stat(target.c_str(), &existing) == 0 && S_ISREG(existing.st_mode);

    static std::atomic<std::uint64_t> counter{0};
    fs::path temp = target;
    temp += fmt::format(".tmp.{}.{}", static_cast<long>(::getpid()), counter++);
    int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
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
        if (keep_mode && ::fchmod(fd, existing.st_mode & 07777) != 0) {
            throw Error(fmt::format("{}: cannot keep the file mode {:o}: {}", where,
                                    existing.st_mode & 07777, std::strerror(errno)));
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
        fs::rename(temp, target, ec);
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
    sync_directory(target);
}

} // namespace cellgrad::io
