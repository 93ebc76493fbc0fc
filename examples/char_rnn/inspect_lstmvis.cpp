// LSTMVis export (Strobelt et al. 2017): the HDF5 files, dictionary and lstm.yml that its server
// reads from a project directory. Needs libhdf5 at build time (Debian: libhdf5-dev); without it
// write_lstmvis throws saying so.
#include <cmath>
#include <fstream>

#include "inspect.hpp"

#ifdef CELLGRAD_HAVE_HDF5
#include <hdf5.h>
#endif

namespace char_rnn {

using cellgrad::Error;
namespace fs = std::filesystem;

bool lstmvis_supported() {
#ifdef CELLGRAD_HAVE_HDF5
    return true;
#else
    return false;
#endif
}

namespace {

#ifdef CELLGRAD_HAVE_HDF5

/// A dictionary word for a byte: LSTMVis splits each line of words.dict at whitespace, so
/// spaces, newlines and other invisible bytes get names.
std::string dictionary_word(std::uint8_t byte) {
    switch (byte) {
    case ' ':
        return "<space>";
    case '\n':
        return "<newline>";
    case '\t':
        return "<tab>";
    default:
        break;
    }
    if (byte > 32 && byte < 127) {
        return std::string(1, char(byte));
    }
    return fmt::format("<0x{:02x}>", byte);
}

/// Writes a dataset of `rows` x `cols` (cols 0: one dimension) at `name` in `file`.
void write_dataset(hid_t file, const std::string& name, hid_t type, const void* data,
                   std::size_t rows, std::size_t cols) {
    const hsize_t dims[2] = {rows, cols};
    const hid_t space = H5Screate_simple(cols == 0 ? 1 : 2, dims, nullptr);
    const hid_t set =
        H5Dcreate2(file, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const bool written = set >= 0 && H5Dwrite(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0;
    if (set >= 0) {
        H5Dclose(set);
    }
    H5Sclose(space);
    if (!written) {
        throw Error(fmt::format("lstmvis: could not write dataset '{}'", name));
    }
}

hid_t create_file(const fs::path& path) {
    const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) {
        throw Error(fmt::format("lstmvis: cannot create '{}'", path.string()));
    }
    return file;
}

#endif

} // namespace

void write_lstmvis(const Inspection& inspection, const fs::path& directory) {
#ifndef CELLGRAD_HAVE_HDF5
    (void)inspection;
    throw Error(fmt::format("--lstmvis '{}': this char_rnn was built without HDF5 (install "
                            "libhdf5-dev and rebuild)",
                            directory.string()));
#else
    std::error_code ec;
    fs::create_directories(directory, ec);
    if (!fs::is_directory(directory)) {
        throw Error(fmt::format("--lstmvis '{}' is not a directory and cannot be created",
                                directory.string()));
    }
    const std::size_t N = inspection.length();
    const std::size_t H = inspection.hidden;
    std::string types;
    {
        const hid_t file = create_file(directory / "states.h5");
        try {
            for (std::size_t index = 0; index < inspection.layers.size(); ++index) {
                const LayerRecording& layer = inspection.layers[index];
                // LSTMVis numbers layers from 1; a backward direction gets "_bwd".
                const std::string tag = fmt::format("{}{}", layer.layer + 1,
                                                    layer.name.ends_with(".bwd") ? "_bwd" : "");
                for (const Series& series : layer.series) {
                    const std::string name = series.name == "c"   ? "states" + tag
                                             : series.name == "h" ? "output" + tag
                                                                  : "gate_" + series.name + tag;
                    std::string clean;
                    for (const char ch : name) {
                        clean += std::isalnum(static_cast<unsigned char>(ch)) != 0 || ch == '_'
                                     ? ch
                                     : '_';
                    }
                    write_dataset(file, clean, H5T_NATIVE_FLOAT, series.values.data(), N, H);
                }
                const bool has_c = inspection.find(index, "c") != nullptr;
                // The cell state (raw: LSTMVis shows tanh of it by default) and the output h
                // (already in [-1, 1]: no transform). Without a c, h is the state.
                types += has_c ? fmt::format("  {{type: state, layer: {0}, path: states{1}}},\n"
                                             "  {{type: output, layer: {0}, path: output{1}, "
                                             "transform: none}},\n",
                                             layer.layer + 1, tag)
                               : fmt::format("  {{type: state, layer: {0}, path: output{1}, "
                                             "transform: none}},\n",
                                             layer.layer + 1, tag);
            }
        } catch (...) {
            H5Fclose(file);
            throw;
        }
        H5Fclose(file);
    }
    {
        const hid_t file = create_file(directory / "train.h5");
        try {
            write_dataset(file, "word_ids", H5T_NATIVE_INT32, inspection.tokens.data(), N, 0);
        } catch (...) {
            H5Fclose(file);
            throw;
        }
        H5Fclose(file);
    }
    std::ofstream dict(directory / "words.dict");
    for (std::size_t i = 0; i < inspection.vocabulary.size(); ++i) {
        dict << dictionary_word(inspection.vocabulary[i]) << ' ' << i << '\n';
    }
    std::ofstream config(directory / "lstm.yml");
    if (!types.empty()) {
        types.erase(types.size() - 2, 1); // the last entry's comma
    }
    config << "name: cellgrad " << inspection.cell << " " << inspection.num_layers << "x" << H
           << "\n"
           << "description: char_rnn inspect of " << inspection.source << " over " << N
           << " characters (gates also in states.h5: gate_<name><layer>)\n"
           << "files:\n  states: states.h5\n  train: train.h5\n  words: words.dict\n"
           << "word_sequence:\n  file: train\n  path: word_ids\n  dict_file: words\n"
           << "states:\n  file: states\n  types: [\n"
           << types << "  ]\n";
    if (!dict || !config) {
        throw Error(fmt::format("lstmvis: cannot write into '{}'", directory.string()));
    }
#endif
}

} // namespace char_rnn
