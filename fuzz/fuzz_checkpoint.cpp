// libFuzzer target for the checkpoint loader: arbitrary bytes go through safetensors validation,
// char_rnn's strict model loading (config checked against the tensors before the model is built)
// and a training checkpoint's metadata and resume. Each must end in a cellgrad::Error or a
// loaded model: any other exception, crash, sanitizer report or slow input is a finding.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "char_rnn.hpp"

namespace {

/// Training text for a resume: every vocabulary byte, repeated to `length` characters.
std::vector<std::int32_t> indices_for(const char_rnn::Vocabulary& vocabulary, std::size_t length) {
    std::vector<std::int32_t> indices(length);
    for (std::size_t i = 0; i < length; ++i) {
        indices[i] = static_cast<std::int32_t>(i % vocabulary.size());
    }
    return indices;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    cellgrad::set_num_threads(1);
    std::vector<std::byte> bytes(size);
    if (size > 0) {
        std::memcpy(bytes.data(), data, size);
    }
    try {
        const cellgrad::io::SafetensorsFile file =
            cellgrad::io::parse_safetensors(std::move(bytes), "fuzz.safetensors");
        try {
            char_rnn::load_model(file);
        } catch (const cellgrad::Error&) {
        }
        const char_rnn::CheckpointInfo info = char_rnn::read_checkpoint_info(file);
        // A resume needs batch * (seq + 1) characters of text: only small runs are tried.
        const std::size_t needed = info.train.batch * (info.train.seq + 1);
        if (needed <= 4096) {
            char_rnn::Trainer trainer(info.model, info.train, info.vocabulary,
                                      indices_for(info.vocabulary, needed));
            trainer.resume(file);
        }
    } catch (const cellgrad::Error&) {
    }
    return 0;
}
