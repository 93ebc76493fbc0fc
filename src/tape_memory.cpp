// The tape's storage: parameters (which outlive tapes) and the arena that node values and
// gradients live in.
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "cellgrad/tape.hpp"

namespace cellgrad {

namespace {
constexpr std::size_t alignment_bytes = 64;
} // namespace

// ---- Parameter -------------------------------------------------------------------------------

template <class T>
Parameter<T>::Parameter(std::string name_, Tensor<T> value_, bool is_vector)
    : name(std::move(name_)), value(std::move(value_)), grad(value.rows(), value.cols()) {
    if (is_vector && value.rows() != 1) {
        throw Error(fmt::format("Parameter '{}': a vector parameter needs shape (1, n), got {}",
                                name, value.shape()));
    }
    export_shape = is_vector ? std::vector<std::size_t>{value.cols()}
                             : std::vector<std::size_t>{value.rows(), value.cols()};
}

// ---- Arena -----------------------------------------------------------------------------------

template <class U>
void Arena<U>::Unmap::operator()(U* data) const {
    munmap(data, bytes);
}

template <class U>
void Arena<U>::add_block(std::size_t min_size) {
    std::size_t size = std::max<std::size_t>(min_size, 1 << 16);
    if (!blocks_.empty()) {
        size = std::max(size, 2 * blocks_.back().size);
    }
    const std::size_t bytes =
        (size * sizeof(U) + alignment_bytes - 1) / alignment_bytes * alignment_bytes;
    // Page-aligned (so 64-byte aligned); untouched pages cost no resident memory.
    void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) {
        throw Error(fmt::format("Arena: could not map {} bytes for node values and gradients "
                                "({})",
                                bytes, std::strerror(errno)));
    }
    Block block;
    block.data = std::unique_ptr<U[], Unmap>(static_cast<U*>(memory), Unmap{bytes});
    block.size = size;
    blocks_.push_back(std::move(block));
}

template <class U>
U* Arena<U>::allocate(std::size_t n) {
    constexpr std::size_t per_line = alignment_bytes / sizeof(U);
    n = (std::max<std::size_t>(n, 1) + per_line - 1) / per_line * per_line;
    while (block_ < blocks_.size() && used_ + n > blocks_[block_].size) {
        used_before_block_ += used_;
        ++block_;
        used_ = 0;
    }
    if (block_ == blocks_.size()) {
        add_block(n);
        used_ = 0;
    }
    U* pointer = blocks_[block_].data.get() + used_;
    used_ += n;
    high_water_ = std::max(high_water_, used_before_block_ + used_);
    return pointer;
}

template <class U>
void Arena<U>::reset() {
    if (blocks_.size() > 1) {
        blocks_.clear(); // unmapped before the merged block is mapped: never both resident
        add_block(high_water_);
    }
    block_ = 0;
    used_ = 0;
    used_before_block_ = 0;
}

template <class U>
std::size_t Arena<U>::capacity() const {
    std::size_t total = 0;
    for (const Block& block : blocks_) {
        total += block.size;
    }
    return total;
}

// ---- Tape ------------------------------------------------------------------------------------

template <class T>
std::size_t Tape<T>::memory_bytes() const {
    std::size_t total = values_.capacity() * sizeof(T) + indices_.capacity() * sizeof(std::int32_t);
    for (const auto& extension : extensions_) {
        total += extension.second->bytes();
    }
    return total;
}

template <class T>
View<T> Tape<T>::new_grad(NodeId id) {
    Node<T>& node = nodes_[id];
    const std::size_t rows = node.value.rows, cols = node.value.cols;
    T* data = nullptr;
    for (auto& [size, buffers] : free_grads_) {
        if (size == rows * cols && !buffers.empty()) {
            data = buffers.back();
            buffers.pop_back();
            break;
        }
    }
    node.grad = {data != nullptr ? data : values_.allocate(rows * cols), rows, cols, cols};
    node.owns_grad = true;
    return node.grad;
}

template <class T>
NodeId Tape<T>::grad_owner(NodeId id) const {
    while (!nodes_[id].owns_grad && nodes_[id].columns_of != ~NodeId(0)) {
        id = nodes_[id].columns_of;
    }
    return id;
}

template <class T>
void Tape<T>::release_grad(NodeId id) {
    Node<T>& node = nodes_[id];
    if (!reuse_gradients_ || !node.owns_grad || !node.backward_done || node.grad_holds > 0) {
        return;
    }
    const std::size_t size = node.grad.size();
    auto bucket = std::find_if(free_grads_.begin(), free_grads_.end(),
                               [&](const auto& entry) { return entry.first == size; });
    if (bucket == free_grads_.end()) {
        free_grads_.push_back({size, {}});
        bucket = free_grads_.end() - 1;
    }
    bucket->second.push_back(node.grad.data);
    node.grad = View<T>{};
    node.owns_grad = false;
    node.grad_released = true;
}

template <class T>
bool Tape<T>::grad_released(NodeId id) const {
    for (;; id = nodes_[id].columns_of) {
        if (nodes_[id].grad_released) {
            return true;
        }
        if (nodes_[id].owns_grad || nodes_[id].columns_of == ~NodeId(0)) {
            return false;
        }
    }
}

template <class T>
void Tape<T>::hold_gradient(NodeId id) {
    ++nodes_[grad_owner(id)].grad_holds;
}

template <class T>
void Tape<T>::drop_gradient_hold(NodeId id) {
    const NodeId owner = grad_owner(id);
    if (nodes_[owner].grad_holds > 0 && --nodes_[owner].grad_holds == 0) {
        release_grad(owner);
    }
}

template std::size_t Tape<float>::memory_bytes() const;
template std::size_t Tape<double>::memory_bytes() const;
template View<float> Tape<float>::new_grad(NodeId);
template View<double> Tape<double>::new_grad(NodeId);
template NodeId Tape<float>::grad_owner(NodeId) const;
template NodeId Tape<double>::grad_owner(NodeId) const;
template void Tape<float>::release_grad(NodeId);
template void Tape<double>::release_grad(NodeId);
template bool Tape<float>::grad_released(NodeId) const;
template bool Tape<double>::grad_released(NodeId) const;
template void Tape<float>::hold_gradient(NodeId);
template void Tape<double>::hold_gradient(NodeId);
template void Tape<float>::drop_gradient_hold(NodeId);
template void Tape<double>::drop_gradient_hold(NodeId);
template struct Parameter<float>;
template struct Parameter<double>;
template class Arena<float>;
template class Arena<double>;
template class Arena<std::int32_t>;

} // namespace cellgrad
