// The oneDNN training step of bench_training: embedding gather, oneDNN's fused RNN primitive
// (lstm, lbr_gru = PyTorch's GRU, vanilla_rnn with tanh) in forward_training and backward with
// its workspace, the decoder as dnnl_sgemm calls, mean cross-entropy, their backward and SGD.
//
// Two things oneDNN 2.6.3 needs from its caller: "no initial state" given as a zero memory
// descriptor gives a wrong diff_weights_iter for LSTM and vanilla RNN, so the step passes
// zero-filled state memories; and the backward primitive accumulates into the weight gradients,
// so the step zeroes them before each backward.
#include "onednn_step.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <unordered_map>

#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>
#include <xmmintrin.h>

namespace bench {

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Dims = memory::dims;

/// Stacked gate blocks of the cell's weights: 4 (LSTM), 3 (GRU), 1 (RNN).
std::size_t gate_count(const std::string& cell) {
    if (cell == "lstm") {
        return 4;
    }
    if (cell == "gru") {
        return 3;
    }
    if (cell == "rnn") {
        return 1;
    }
    throw std::invalid_argument("oneDNN step: no fused primitive for cell '" + cell +
                                "' (expected lstm, gru or rnn)");
}

/// PyTorch's gate index of oneDNN's gate `g`: oneDNN's GRU orders its gates u, r, o, which are
/// PyTorch's z, r, n (1, 0, 2); LSTM (i, f, g, o) and RNN agree. The map is its own inverse.
std::size_t torch_gate(const std::string& cell, std::size_t g) {
    return cell == "gru" && g < 2 ? 1 - g : g;
}

/// Copies gate blocks of `block` floats from `from` into `to`, permuted by torch_gate.
void permute_gates(const std::string& cell, std::size_t gates, std::size_t block, const float* from,
                   float* to) {
    for (std::size_t g = 0; g < gates; ++g) {
        std::copy_n(from + torch_gate(cell, g) * block, block, to + g * block);
    }
}

/// Sets flush-to-zero and denormals-are-zero on the calling thread and on every OpenMP worker
/// while alive (as oneDNN's own benchmarks run), and restores the previous mode after.
class FlushDenormals {
  public:
    FlushDenormals() : saved_(_mm_getcsr()) { set_everywhere(saved_ | 0x8040U); }
    ~FlushDenormals() { set_everywhere(saved_); }
    FlushDenormals(const FlushDenormals&) = delete;
    FlushDenormals& operator=(const FlushDenormals&) = delete;

  private:
    static void set_everywhere(unsigned mode) {
#pragma omp parallel
        _mm_setcsr(mode);
    }
    unsigned saved_;
};

/// The whole step on oneDNN; see OnednnStep.
class Step final : public OnednnStep {
  public:
    Step(const StepShape& shape, std::vector<std::int32_t> inputs,
         std::vector<std::int32_t> targets, double lr, const ModelTensors* init,
         std::uint64_t seed);

    double step() override {
        const double loss = loss_and_gradients();
        sgd();
        return loss;
    }
    double loss_and_gradients() override;
    ModelTensors gradients() const override;
    std::size_t workspace_bytes() const override { return workspace_.get_desc().get_size(); }
    std::size_t owned_bytes() const override;
    std::string implementation() const override;

  private:
    /// A memory of `desc` on buffers the step owns.
    memory make_memory(const memory::desc& desc) {
        buffers_.emplace_back(desc.get_size() / sizeof(float) + 1, 0.0f);
        return {desc, engine_, buffers_.back().data()};
    }
    /// Reorders `from` into `to` on the stream.
    void reorder(const memory& from, const memory& to) {
        dnnl::reorder(from, to).execute(stream_, const_cast<memory&>(from),
                                        const_cast<memory&>(to));
    }
    template <class Forward, class Backward, class ForwardDesc, class BackwardDesc>
    void build(const ForwardDesc& forward, const BackwardDesc& backward);
    void initialise(const ModelTensors& init);
    void sgd();
    float* data(const memory& m) const { return static_cast<float*>(m.get_data_handle()); }
    std::size_t floats(const memory& m) const { return m.get_desc().get_size() / sizeof(float); }

    StepShape s_;
    std::size_t gates_, bias_gates_, rows_;
    std::vector<std::int32_t> inputs_, targets_;
    float lr_;
    dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
    dnnl::stream stream_{engine_};
    std::vector<std::vector<float>> buffers_; // storage of every memory below (stable addresses)
    std::vector<float> embedding_, d_embedding_, decoder_w_, d_decoder_w_, decoder_b_, d_decoder_b_,
        logits_;
    dnnl::rnn_primitive_desc_base forward_pd_, backward_pd_;
    dnnl::primitive forward_, backward_;
    memory src_layer_, zero_h_, zero_c_, weights_layer_, weights_iter_, bias_, dst_layer_,
        dst_iter_, dst_iter_c_, workspace_;
    memory weights_layer_bwd_, weights_iter_bwd_; // only when backward wants another layout
    memory diff_src_layer_, diff_src_iter_, diff_src_iter_c_, diff_weights_layer_,
        diff_weights_iter_, diff_bias_, diff_dst_layer_, zero_diff_h_, zero_diff_c_;
    memory diff_weights_layer_fwd_, diff_weights_iter_fwd_; // gradients in the weights' layout
    bool weights_reordered_ = false, gradients_reordered_ = false;
};

Step::Step(const StepShape& shape, std::vector<std::int32_t> inputs,
           std::vector<std::int32_t> targets, double lr, const ModelTensors* init,
           std::uint64_t seed)
    : s_(shape), gates_(gate_count(shape.cell)),
      bias_gates_(shape.cell == "gru" ? gates_ + 1 : gates_), rows_(shape.steps * shape.batch),
      inputs_(std::move(inputs)), targets_(std::move(targets)), lr_(float(lr)) {
    buffers_.reserve(40);
    const auto T = memory::dim(s_.steps), N = memory::dim(s_.batch), E = memory::dim(s_.input),
               H = memory::dim(s_.hidden), G = memory::dim(gates_), GB = memory::dim(bias_gates_);
    const auto f32 = memory::data_type::f32;
    const memory::desc src_layer({T, N, E}, f32, Tag::tnc), state({1, 1, N, H}, f32, Tag::ldnc),
        weights_layer({1, 1, E, G, H}, f32, Tag::any), weights_iter({1, 1, H, G, H}, f32, Tag::any),
        bias({1, 1, GB, H}, f32, Tag::ldgo), dst_layer({T, N, H}, f32, Tag::tnc);
    const auto fwd = dnnl::prop_kind::forward_training;
    const auto bwd = dnnl::prop_kind::backward;
    const auto dir = dnnl::rnn_direction::unidirectional_left2right;
    if (s_.cell == "lstm") {
        build<dnnl::lstm_forward, dnnl::lstm_backward>(
            dnnl::lstm_forward::desc(fwd, dir, src_layer, state, state, weights_layer, weights_iter,
                                     bias, dst_layer, state, state),
            dnnl::lstm_backward::desc(bwd, dir, src_layer, state, state, weights_layer,
                                      weights_iter, bias, dst_layer, state, state, src_layer, state,
                                      state, weights_layer, weights_iter, bias, dst_layer, state,
                                      state));
    } else if (s_.cell == "gru") {
        build<dnnl::lbr_gru_forward, dnnl::lbr_gru_backward>(
            dnnl::lbr_gru_forward::desc(fwd, dir, src_layer, state, weights_layer, weights_iter,
                                        bias, dst_layer, state),
            dnnl::lbr_gru_backward::desc(bwd, dir, src_layer, state, weights_layer, weights_iter,
                                         bias, dst_layer, state, src_layer, state, weights_layer,
                                         weights_iter, bias, dst_layer, state));
    } else {
        const auto tanh = dnnl::algorithm::eltwise_tanh;
        build<dnnl::vanilla_rnn_forward, dnnl::vanilla_rnn_backward>(
            dnnl::vanilla_rnn_forward::desc(fwd, tanh, dir, src_layer, state, weights_layer,
                                            weights_iter, bias, dst_layer, state),
            dnnl::vanilla_rnn_backward::desc(bwd, tanh, dir, src_layer, state, weights_layer,
                                             weights_iter, bias, dst_layer, state, src_layer, state,
                                             weights_layer, weights_iter, bias, dst_layer, state));
    }
    src_layer_ = make_memory(src_layer);
    zero_h_ = make_memory(state);
    zero_c_ = make_memory(state);
    weights_layer_ = make_memory(forward_pd_.weights_layer_desc());
    weights_iter_ = make_memory(forward_pd_.weights_iter_desc());
    bias_ = make_memory(bias);
    dst_layer_ = make_memory(dst_layer);
    dst_iter_ = make_memory(state);
    dst_iter_c_ = make_memory(state);
    workspace_ = make_memory(forward_pd_.workspace_desc());
    weights_reordered_ = backward_pd_.weights_layer_desc() != forward_pd_.weights_layer_desc() ||
                         backward_pd_.weights_iter_desc() != forward_pd_.weights_iter_desc();
    weights_layer_bwd_ =
        weights_reordered_ ? make_memory(backward_pd_.weights_layer_desc()) : weights_layer_;
    weights_iter_bwd_ =
        weights_reordered_ ? make_memory(backward_pd_.weights_iter_desc()) : weights_iter_;
    diff_src_layer_ = make_memory(src_layer);
    diff_src_iter_ = make_memory(state);
    diff_src_iter_c_ = make_memory(state);
    diff_weights_layer_ = make_memory(backward_pd_.diff_weights_layer_desc());
    diff_weights_iter_ = make_memory(backward_pd_.diff_weights_iter_desc());
    diff_bias_ = make_memory(bias);
    diff_dst_layer_ = make_memory(dst_layer);
    zero_diff_h_ = make_memory(state);
    zero_diff_c_ = make_memory(state);
    gradients_reordered_ =
        backward_pd_.diff_weights_layer_desc() != forward_pd_.weights_layer_desc() ||
        backward_pd_.diff_weights_iter_desc() != forward_pd_.weights_iter_desc();
    diff_weights_layer_fwd_ =
        gradients_reordered_ ? make_memory(forward_pd_.weights_layer_desc()) : diff_weights_layer_;
    diff_weights_iter_fwd_ =
        gradients_reordered_ ? make_memory(forward_pd_.weights_iter_desc()) : diff_weights_iter_;

    const std::size_t V = s_.vocab;
    embedding_.resize(V * s_.input);
    d_embedding_.resize(embedding_.size());
    decoder_w_.resize(V * s_.hidden);
    d_decoder_w_.resize(decoder_w_.size());
    decoder_b_.resize(V);
    d_decoder_b_.resize(V);
    logits_.resize(rows_ * V);
    if (init != nullptr) {
        initialise(*init);
        return;
    }
    // PyTorch's init: embedding N(0, 1); the layer and the decoder U(-1/sqrt(H), 1/sqrt(H)).
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const float bound = 1.0f / std::sqrt(float(s_.hidden));
    std::uniform_real_distribution<float> uniform(-bound, bound);
    ModelTensors drawn;
    const std::size_t gh = gates_ * s_.hidden;
    const std::pair<const char*, std::size_t> sizes[] = {{"embedding.weight", V * s_.input},
                                                         {"rnn.weight_ih_l0", gh * s_.input},
                                                         {"rnn.weight_hh_l0", gh * s_.hidden},
                                                         {"rnn.bias_ih_l0", gh},
                                                         {"rnn.bias_hh_l0", gh},
                                                         {"decoder.weight", V * s_.hidden},
                                                         {"decoder.bias", V}};
    for (const auto& [name, size] : sizes) {
        drawn.names.emplace_back(name);
        drawn.values.emplace_back(size);
        for (float& value : drawn.values.back()) {
            value = drawn.names.size() == 1 ? normal(rng) : uniform(rng);
        }
    }
    initialise(drawn);
}

template <class Forward, class Backward, class ForwardDesc, class BackwardDesc>
void Step::build(const ForwardDesc& forward, const BackwardDesc& backward) {
    const typename Forward::primitive_desc forward_pd(forward, engine_);
    const typename Backward::primitive_desc backward_pd(backward, engine_, forward_pd);
    forward_pd_ = forward_pd;
    backward_pd_ = backward_pd;
    forward_ = Forward(forward_pd);
    backward_ = Backward(backward_pd);
}

void Step::initialise(const ModelTensors& init) {
    const std::size_t H = s_.hidden, E = s_.input, gh = gates_ * H;
    embedding_ = init.at("embedding.weight");
    decoder_w_ = init.at("decoder.weight");
    decoder_b_ = init.at("decoder.bias");
    const std::vector<float>& w_ih = init.at("rnn.weight_ih_l0");
    const std::vector<float>& w_hh = init.at("rnn.weight_hh_l0");
    const std::vector<float>& b_ih = init.at("rnn.bias_ih_l0");
    const std::vector<float>& b_hh = init.at("rnn.bias_hh_l0");
    if (embedding_.size() != s_.vocab * E || decoder_w_.size() != s_.vocab * H ||
        w_ih.size() != gh * E || w_hh.size() != gh * H || b_ih.size() != gh || b_hh.size() != gh) {
        throw std::invalid_argument("oneDNN step: initial tensors do not match the shape");
    }
    // PyTorch's (G*H, in) with gates permuted is oneDNN's ldgoi: reorder into the primitive's.
    const auto f32 = memory::data_type::f32;
    std::vector<float> user(gh * std::max(E, H));
    permute_gates(s_.cell, gates_, H * E, w_ih.data(), user.data());
    reorder(memory({{1, 1, memory::dim(E), memory::dim(gates_), memory::dim(H)}, f32, Tag::ldgoi},
                   engine_, user.data()),
            weights_layer_);
    stream_.wait();
    permute_gates(s_.cell, gates_, H * H, w_hh.data(), user.data());
    reorder(memory({{1, 1, memory::dim(H), memory::dim(gates_), memory::dim(H)}, f32, Tag::ldgoi},
                   engine_, user.data()),
            weights_iter_);
    stream_.wait();
    // One bias per gate (b_ih + b_hh), except the linear-before-reset GRU's candidate, whose
    // b_hn sits inside r * (W_hn h + b_hn): oneDNN's fourth bias block.
    float* bias = data(bias_);
    for (std::size_t g = 0; g < gates_; ++g) {
        const std::size_t from = torch_gate(s_.cell, g) * H;
        const bool split = s_.cell == "gru" && g == 2;
        for (std::size_t o = 0; o < H; ++o) {
            bias[g * H + o] = b_ih[from + o] + (split ? 0.0f : b_hh[from + o]);
            if (split) {
                bias[3 * H + o] = b_hh[from + o];
            }
        }
    }
}

double Step::loss_and_gradients() {
    const FlushDenormals flush;
    const std::size_t E = s_.input, H = s_.hidden, V = s_.vocab;
    const auto rows = std::int64_t(rows_);
    float* src = data(src_layer_);
#pragma omp parallel for
    for (std::int64_t r = 0; r < rows; ++r) {
        std::copy_n(&embedding_[std::size_t(inputs_[r]) * E], E, src + r * std::int64_t(E));
    }
    std::unordered_map<int, memory> args = {{DNNL_ARG_SRC_LAYER, src_layer_},
                                            {DNNL_ARG_SRC_ITER, zero_h_},
                                            {DNNL_ARG_WEIGHTS_LAYER, weights_layer_},
                                            {DNNL_ARG_WEIGHTS_ITER, weights_iter_},
                                            {DNNL_ARG_BIAS, bias_},
                                            {DNNL_ARG_DST_LAYER, dst_layer_},
                                            {DNNL_ARG_DST_ITER, dst_iter_},
                                            {DNNL_ARG_WORKSPACE, workspace_}};
    if (s_.cell == "lstm") {
        args[DNNL_ARG_SRC_ITER_C] = zero_c_;
        args[DNNL_ARG_DST_ITER_C] = dst_iter_c_;
    }
    forward_.execute(stream_, args);
    stream_.wait();

    // Decoder and mean cross-entropy; logits_ becomes dL/dlogits = (softmax - onehot) / rows.
    const float* hidden = data(dst_layer_);
    dnnl_sgemm('N', 'T', rows, std::int64_t(V), std::int64_t(H), 1.0f, hidden, std::int64_t(H),
               decoder_w_.data(), std::int64_t(H), 0.0f, logits_.data(), std::int64_t(V));
    double loss = 0;
#pragma omp parallel for reduction(+ : loss)
    for (std::int64_t r = 0; r < rows; ++r) {
        float* row = &logits_[std::size_t(r) * V];
        float top = -INFINITY;
        for (std::size_t v = 0; v < V; ++v) {
            row[v] += decoder_b_[v];
            top = std::max(top, row[v]);
        }
        const std::size_t target = std::size_t(targets_[r]);
        const double target_logit = double(row[target] - top);
        double sum = 0;
        for (std::size_t v = 0; v < V; ++v) {
            row[v] = std::exp(row[v] - top);
            sum += row[v];
        }
        loss += std::log(sum) - target_logit;
        const float scale = float(1.0 / (sum * double(rows)));
        for (std::size_t v = 0; v < V; ++v) {
            row[v] *= scale;
        }
        row[target] -= 1.0f / float(rows);
    }
    dnnl_sgemm('T', 'N', std::int64_t(V), std::int64_t(H), rows, 1.0f, logits_.data(),
               std::int64_t(V), hidden, std::int64_t(H), 0.0f, d_decoder_w_.data(),
               std::int64_t(H));
    std::fill(d_decoder_b_.begin(), d_decoder_b_.end(), 0.0f);
    for (std::int64_t r = 0; r < rows; ++r) {
        for (std::size_t v = 0; v < V; ++v) {
            d_decoder_b_[v] += logits_[std::size_t(r) * V + v];
        }
    }
    dnnl_sgemm('N', 'N', rows, std::int64_t(H), std::int64_t(V), 1.0f, logits_.data(),
               std::int64_t(V), decoder_w_.data(), std::int64_t(H), 0.0f, data(diff_dst_layer_),
               std::int64_t(H));

    // The layer's backward; its weight gradients accumulate, so they start from zero.
    if (weights_reordered_) {
        reorder(weights_layer_, weights_layer_bwd_);
        reorder(weights_iter_, weights_iter_bwd_);
    }
    for (const memory* diff : {&diff_weights_layer_, &diff_weights_iter_, &diff_bias_}) {
        std::memset(diff->get_data_handle(), 0, diff->get_desc().get_size());
    }
    args[DNNL_ARG_WEIGHTS_LAYER] = weights_layer_bwd_;
    args[DNNL_ARG_WEIGHTS_ITER] = weights_iter_bwd_;
    args[DNNL_ARG_DIFF_SRC_LAYER] = diff_src_layer_;
    args[DNNL_ARG_DIFF_SRC_ITER] = diff_src_iter_;
    args[DNNL_ARG_DIFF_WEIGHTS_LAYER] = diff_weights_layer_;
    args[DNNL_ARG_DIFF_WEIGHTS_ITER] = diff_weights_iter_;
    args[DNNL_ARG_DIFF_BIAS] = diff_bias_;
    args[DNNL_ARG_DIFF_DST_LAYER] = diff_dst_layer_;
    args[DNNL_ARG_DIFF_DST_ITER] = zero_diff_h_;
    if (s_.cell == "lstm") {
        args[DNNL_ARG_DIFF_SRC_ITER_C] = diff_src_iter_c_;
        args[DNNL_ARG_DIFF_DST_ITER_C] = zero_diff_c_;
    }
    backward_.execute(stream_, args);
    if (gradients_reordered_) {
        reorder(diff_weights_layer_, diff_weights_layer_fwd_);
        reorder(diff_weights_iter_, diff_weights_iter_fwd_);
    }
    stream_.wait();

    // Embedding gradient: scatter-add the input rows' gradients, columns split across threads.
    std::fill(d_embedding_.begin(), d_embedding_.end(), 0.0f);
    const float* d_src = data(diff_src_layer_);
#pragma omp parallel for
    for (std::int64_t e = 0; e < std::int64_t(E); ++e) {
        for (std::int64_t r = 0; r < rows; ++r) {
            d_embedding_[std::size_t(inputs_[r]) * E + std::size_t(e)] +=
                d_src[r * std::int64_t(E) + e];
        }
    }
    return loss / double(rows);
}

void Step::sgd() {
    const FlushDenormals flush;
    const auto update = [this](float* value, const float* grad, std::size_t n) {
#pragma omp parallel for
        for (std::int64_t i = 0; i < std::int64_t(n); ++i) {
            value[i] -= lr_ * grad[i];
        }
    };
    update(data(weights_layer_), data(diff_weights_layer_fwd_), floats(weights_layer_));
    update(data(weights_iter_), data(diff_weights_iter_fwd_), floats(weights_iter_));
    // oneDNN's bias of a gate is PyTorch's b_ih + b_hh, and SGD moves each of those by lr times
    // the same gradient: the sum moves by 2 lr. The GRU's candidate keeps two biases (blocks 2
    // and 3 of the linear-before-reset layout), each moving by lr.
    float* bias = data(bias_);
    const float* d_bias = data(diff_bias_);
    const std::size_t H = s_.hidden;
    for (std::size_t g = 0; g < bias_gates_; ++g) {
        const float rate = s_.cell == "gru" && g >= 2 ? lr_ : 2.0f * lr_;
        for (std::size_t o = 0; o < H; ++o) {
            bias[g * H + o] -= rate * d_bias[g * H + o];
        }
    }
    update(embedding_.data(), d_embedding_.data(), embedding_.size());
    update(decoder_w_.data(), d_decoder_w_.data(), decoder_w_.size());
    update(decoder_b_.data(), d_decoder_b_.data(), decoder_b_.size());
}

ModelTensors Step::gradients() const {
    const std::size_t H = s_.hidden, E = s_.input, gh = gates_ * H;
    ModelTensors out;
    const auto add = [&](const char* name, std::vector<float> value) {
        out.names.emplace_back(name);
        out.values.push_back(std::move(value));
    };
    const auto f32 = memory::data_type::f32;
    auto& self = const_cast<Step&>(*this);
    const auto to_torch = [&](const memory& diff, std::size_t in) {
        std::vector<float> user(gh * in), torch(gh * in);
        self.reorder(
            diff,
            memory({{1, 1, memory::dim(in), memory::dim(gates_), memory::dim(H)}, f32, Tag::ldgoi},
                   engine_, user.data()));
        self.stream_.wait();
        permute_gates(s_.cell, gates_, H * in, user.data(), torch.data());
        return torch;
    };
    add("embedding.weight", d_embedding_);
    add("rnn.weight_ih_l0", to_torch(diff_weights_layer_, E));
    add("rnn.weight_hh_l0", to_torch(diff_weights_iter_, H));
    std::vector<float> d_ih(gh), d_hh(gh);
    const float* d_bias = data(diff_bias_);
    for (std::size_t g = 0; g < gates_; ++g) {
        const std::size_t to = torch_gate(s_.cell, g) * H;
        const bool split = s_.cell == "gru" && g == 2;
        for (std::size_t o = 0; o < H; ++o) {
            d_ih[to + o] = d_bias[g * H + o];
            d_hh[to + o] = split ? d_bias[3 * H + o] : d_bias[g * H + o];
        }
    }
    add("rnn.bias_ih_l0", d_ih);
    add("rnn.bias_hh_l0", d_hh);
    add("decoder.weight", d_decoder_w_);
    add("decoder.bias", d_decoder_b_);
    return out;
}

std::size_t Step::owned_bytes() const {
    std::size_t total = 0;
    for (const std::vector<float>& buffer : buffers_) {
        total += buffer.size() * sizeof(float);
    }
    for (const std::vector<float>* buffer : {&embedding_, &d_embedding_, &decoder_w_, &d_decoder_w_,
                                             &decoder_b_, &d_decoder_b_, &logits_}) {
        total += buffer->size() * sizeof(float);
    }
    return total;
}

std::string Step::implementation() const {
    std::string text = std::string("forward ") + forward_pd_.impl_info_str() + ", backward " +
                       backward_pd_.impl_info_str();
    if (weights_reordered_ || gradients_reordered_) {
        text += " (per-step reorders:";
        text += weights_reordered_ ? " weights to the backward layout" : "";
        text += gradients_reordered_ ? " gradients to the weights' layout" : "";
        text += ")";
    }
    return text;
}

/// oneDNN's name of an effective ISA.
const char* isa_name(dnnl::cpu_isa isa) {
    switch (isa) {
    case dnnl::cpu_isa::sse41:
        return "sse41";
    case dnnl::cpu_isa::avx:
        return "avx";
    case dnnl::cpu_isa::avx2:
        return "avx2";
    case dnnl::cpu_isa::avx512_core:
        return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni:
        return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16:
        return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx:
        return "avx512_core_amx";
    case dnnl::cpu_isa::avx2_vnni:
        return "avx2_vnni";
    default:
        return "other";
    }
}

} // namespace

std::unique_ptr<OnednnStep> make_onednn_step(const StepShape& shape,
                                             const std::vector<std::int32_t>& inputs,
                                             const std::vector<std::int32_t>& targets, double lr,
                                             const ModelTensors* init, std::uint64_t seed) {
    return std::make_unique<Step>(shape, inputs, targets, lr, init, seed);
}

bool onednn_supports(const std::string& cell) {
    return cell == "lstm" || cell == "gru" || cell == "rnn";
}

void set_onednn_threads(int threads) {
    omp_set_num_threads(threads);
}

std::string onednn_description() {
    const dnnl_version_t* version = dnnl::version();
    const char* runtime = version->cpu_runtime == DNNL_RUNTIME_OMP   ? "OpenMP"
                          : version->cpu_runtime == DNNL_RUNTIME_TBB ? "TBB"
                                                                     : "other runtime";
    return "oneDNN " + std::to_string(version->major) + "." + std::to_string(version->minor) + "." +
           std::to_string(version->patch) + " (" + runtime + ", effective ISA " +
           isa_name(dnnl::get_effective_cpu_isa()) + ")";
}

} // namespace bench
