#include "cellgrad/tape.hpp"

#include <cstring>

namespace cellgrad {

namespace {
thread_local bool grad_mode = true;
bool anomaly_mode = false;
} // namespace

NoGradGuard::NoGradGuard() : previous_(grad_mode) {
    grad_mode = false;
}
NoGradGuard::~NoGradGuard() {
    grad_mode = previous_;
}
bool grad_enabled() {
    return grad_mode;
}
void set_anomaly_detection(bool enabled) {
    anomaly_mode = enabled;
}
bool anomaly_detection() {
    return anomaly_mode;
}

// ---- Var -------------------------------------------------------------------------------------

template <class T>
Var<T>::Var(Tape<T>* tape, NodeId id) : tape_(tape), id_(id), generation_(tape->generation()) {}

template <class T>
Tape<T>& Var<T>::tape() const {
    if (tape_ == nullptr) {
        throw Error("Var: this Var is empty (default-constructed); it refers to no tape");
    }
    if (tape_->generation() != generation_) {
        throw Error(fmt::format("Var: node {} belongs to a tape that was cleared since it was "
                                "recorded (Var generation {}, tape generation {})",
                                id_, generation_, tape_->generation()));
    }
    return *tape_;
}

template <class T>
Shape Var<T>::shape() const {
    return tape().node(id_).value.shape();
}

template <class T>
View<const T> Var<T>::value() const {
    return tape().node(id_).value;
}

template <class T>
T Var<T>::item() const {
    const View<const T> v = value();
    if (v.rows != 1 || v.cols != 1) {
        throw Error(fmt::format("Var::item: needs shape (1, 1), got {} from {}", v.shape(),
                                tape().describe(id_)));
    }
    return v.data[0];
}

template <class T>
bool Var<T>::requires_grad() const {
    return tape().node(id_).requires_grad;
}

template <class T>
Tensor<T> Var<T>::grad() const {
    const Node<T>& node = tape().node(id_);
    if (!node.requires_grad) {
        throw Error(fmt::format("Var::grad: {} does not require grad (it depends on no "
                                "parameter or input, or was made under NoGradGuard)",
                                tape_->describe(id_)));
    }
    if (tape_->grad_released(id_)) {
        throw Error(fmt::format("Var::grad: the gradient of {} was reused for earlier nodes after "
                                "its backward ran (Tape::reuse_gradient_memory is on); turn it "
                                "off to read intermediate gradients",
                                tape_->describe(id_)));
    }
    const View<T> grad = tape_->grad_if_any(id_);
    if (grad.data == nullptr) {
        return Tensor<T>(node.value.rows, node.value.cols);
    }
    return Tensor<T>(View<const T>(grad));
}

template <class T>
void Var<T>::backward() const {
    tape().backward(*this);
}

// ---- Tape: recording -------------------------------------------------------------------------

template <class T>
NodeId Tape<T>::push_node(Node<T> node, std::span<const Var<T>> inputs) {
    node.first_input = static_cast<std::uint32_t>(input_ids_.size());
    node.input_count = static_cast<std::uint32_t>(inputs.size());
    node.label = label_stack_.empty() ? 0 : label_stack_.back();
    bool any_requires_grad = false;
    for (const Var<T>& input : inputs) {
        if (&input.tape() != this) {
            throw Error(fmt::format("{}: an input belongs to another tape", node.op));
        }
        input_ids_.push_back(input.id());
        any_requires_grad = any_requires_grad || nodes_[input.id()].requires_grad;
    }
    node.requires_grad = any_requires_grad && grad_mode;
    nodes_.push_back(node);
    return static_cast<NodeId>(nodes_.size() - 1);
}

template <class T>
NodeId Tape<T>::record(const char* op, std::initializer_list<Var<T>> inputs, std::size_t rows,
                       std::size_t cols) {
    return record(op, std::span<const Var<T>>(inputs.begin(), inputs.size()), rows, cols);
}

template <class T>
NodeId Tape<T>::record(const char* op, std::span<const Var<T>> inputs, std::size_t rows,
                       std::size_t cols) {
    Node<T> node;
    node.op = op;
    node.value = allocate(rows, cols);
    return push_node(node, inputs);
}

template <class T>
NodeId Tape<T>::record_view(const char* op, std::span<const Var<T>> inputs, View<T> value) {
    Node<T> node;
    node.op = op;
    node.value = value;
    node.value_is_view = true;
    return push_node(node, inputs);
}

template <class T>
void Tape<T>::set_backward(NodeId id, BackwardFn<T> backward) {
    if (nodes_[id].requires_grad) {
        nodes_[id].backward = backward;
    }
}

template <class T>
NodeId Tape<T>::record_columns(const char* op, NodeId base, std::size_t first, std::size_t cols) {
    const View<T> whole = nodes_.at(base).value;
    if (first + cols > whole.cols) {
        throw Error(fmt::format("{}: columns [{}, {}) are outside {} of {}", op, first,
                                first + cols, whole.shape(), describe(base)));
    }
    Node<T> node;
    node.op = op;
    node.value = {whole.data + first, whole.rows, cols, whole.stride};
    node.value_is_view = true;
    node.columns_of = base;
    node.first_column = static_cast<std::uint32_t>(first);
    const Var<T> input(this, base);
    return push_node(node, std::span<const Var<T>>(&input, 1));
}

template <class T>
NodeId Tape<T>::record_rows_in_place(const char* op, std::span<const Var<T>> inputs, NodeId base,
                                     std::size_t first, std::size_t rows) {
    const View<T> whole = nodes_.at(base).value;
    if (first + rows > whole.rows) {
        throw Error(fmt::format("{}: rows [{}, {}) are outside {} of {}", op, first, first + rows,
                                whole.shape(), describe(base)));
    }
    Node<T> node;
    node.op = op;
    node.value = {whole.data + first * whole.stride, rows, whole.cols, whole.stride};
    node.value_is_view = true;
    node.columns_of = base;
    node.first_row = static_cast<std::uint32_t>(first);
    return push_node(node, inputs);
}

template <class T>
void* Tape<T>::allocate_bytes(std::size_t bytes) {
    return values_.allocate((bytes + sizeof(T) - 1) / sizeof(T));
}

template <class T>
View<T> Tape<T>::allocate(std::size_t rows, std::size_t cols) {
    return {values_.allocate(rows * cols), rows, cols, cols};
}

template <class T>
std::span<const NodeId> Tape<T>::inputs(NodeId id) const {
    const Node<T>& node = nodes_[id];
    return {input_ids_.data() + node.first_input, node.input_count};
}

template <class T>
View<T> Tape<T>::grad_if_any(NodeId id) const {
    const Node<T>& node = nodes_[id];
    if (node.columns_of == ~NodeId(0) || node.grad.data != nullptr) {
        return node.grad;
    }
    const View<T> whole = grad_if_any(node.columns_of);
    return whole.data == nullptr
               ? View<T>{}
               : View<T>{whole.data + node.first_row * whole.stride + node.first_column,
                         node.value.rows, node.value.cols, whole.stride};
}

template <class T>
View<T> Tape<T>::grad_for_update(NodeId id) {
    Node<T>& node = nodes_[id];
    if (node.columns_of != ~NodeId(0) && node.grad.data == nullptr) {
        grad_for_update(node.columns_of);
        nodes_[id].grad = grad_if_any(id);
        return nodes_[id].grad;
    }
    if (node.grad.data == nullptr) {
        const View<T> grad = new_grad(id);
        std::memset(grad.data, 0, sizeof(T) * grad.size());
    }
    return nodes_[id].grad;
}

template <class T>
View<T> Tape<T>::grad_for_overwrite(NodeId id, bool& fresh) {
    Node<T>& node = nodes_[id];
    if (node.columns_of != ~NodeId(0)) {
        fresh = false; // the base's other columns may already hold gradient
        return grad_for_update(id);
    }
    fresh = node.grad.data == nullptr;
    if (fresh) {
        new_grad(id);
    }
    return nodes_[id].grad;
}

template <class T>
Var<T> Tape<T>::constant(View<const T> value) {
    const NodeId id = record("constant", {}, value.rows, value.cols);
    copy<T>(value, nodes_[id].value);
    return Var<T>(this, id);
}

template <class T>
Var<T> Tape<T>::input(const Tensor<T>& value) {
    const NodeId id = record("input", {}, value.rows(), value.cols());
    copy<T>(value.view(), nodes_[id].value);
    nodes_[id].requires_grad = grad_mode;
    return Var<T>(this, id);
}

template <class T>
Var<T> Tape<T>::param(Parameter<T>& parameter) {
    if (parameter.grad.shape() != parameter.value.shape()) {
        throw Error(fmt::format("param: parameter '{}' has value {} but gradient {}",
                                parameter.name, parameter.value.shape(), parameter.grad.shape()));
    }
    const NodeId id = record_view("param", {}, parameter.value.view());
    Node<T>& node = nodes_[id];
    node.parameter = &parameter;
    node.requires_grad = grad_mode;
    node.grad = parameter.grad.view();
    return Var<T>(this, id);
}

template <class T>
Var<T> Tape<T>::detach(const Var<T>& x) {
    const View<T> value = x.tape().node(x.id()).value;
    if (&x.tape() != this) {
        throw Error("detach: the Var belongs to another tape");
    }
    return Var<T>(this, record_view("detach", {}, value));
}

// ---- Tape: backward --------------------------------------------------------------------------

template <class T>
void Tape<T>::backward(const Var<T>& loss) {
    const View<const T> value = loss.value();
    if (value.rows != 1 || value.cols != 1) {
        throw Error(fmt::format("backward: needs a (1, 1) loss or an explicit seed gradient; "
                                "got shape {} from {}",
                                value.shape(), describe(loss.id())));
    }
    backward(loss, Tensor<T>(1, 1, T(1)));
}

template <class T>
void Tape<T>::backward(const Var<T>& output, const Tensor<T>& seed) {
    if (&output.tape() != this) {
        throw Error("backward: the output belongs to another tape");
    }
    const Node<T>& out = nodes_[output.id()];
    if (seed.shape() != out.value.shape()) {
        throw Error(fmt::format("backward: seed gradient has shape {} but {} has shape {}",
                                seed.shape(), describe(output.id()), out.value.shape()));
    }
    if (!out.requires_grad) {
        throw Error(fmt::format("backward: {} does not require grad (no parameter or input "
                                "reaches it, or it was made under NoGradGuard)",
                                describe(output.id())));
    }
    for (Node<T>& node : nodes_) {
        if (node.parameter == nullptr) {
            node.grad = View<T>{};
        }
        node.owns_grad = node.backward_done = node.grad_released = false;
        node.grad_holds = 0;
    }
    free_grads_.clear();
    for (auto& extension : extensions_) {
        extension.second->begin_backward(*this);
    }
    const View<T> grad = grad_for_update(output.id());
    for (std::size_t r = 0; r < grad.rows; ++r) {
        for (std::size_t c = 0; c < grad.cols; ++c) {
            grad(r, c) += seed(r, c);
        }
    }
    run_backward(output.id());
}

template <class T>
void Tape<T>::run_backward(NodeId from) {
    for (std::int64_t id = from; id >= 0; --id) {
        const Node<T>& node = nodes_[static_cast<NodeId>(id)];
        if (node.notify_when_reached) {
            for (auto& extension : extensions_) {
                extension.second->reached(*this, static_cast<NodeId>(id));
            }
        }
        if (node.backward == nullptr || node.grad.data == nullptr) {
            continue;
        }
        node.backward(*this, static_cast<NodeId>(id));
        nodes_[static_cast<NodeId>(id)].backward_done = true;
        if (anomaly_mode) {
            for (NodeId input : inputs(static_cast<NodeId>(id))) {
                const View<T> input_grad = nodes_[input].grad;
                if (input_grad.data != nullptr && !all_finite<T>(input_grad)) {
                    throw Error(fmt::format(
                        "anomaly: backward of {} produced a NaN or Inf in the gradient of its "
                        "input {} (shape {}); output shape {}",
                        describe(static_cast<NodeId>(id)), describe(input),
                        nodes_[input].value.shape(), node.value.shape()));
                }
            }
        }
        release_grad(static_cast<NodeId>(id));
    }
}

template <class T>
void Tape<T>::check_forward(NodeId id) const {
    if (!anomaly_mode) {
        return;
    }
    const Node<T>& node = nodes_[id];
    if (all_finite<T>(node.value)) {
        return;
    }
    std::string input_shapes;
    for (NodeId input : inputs(id)) {
        input_shapes += (input_shapes.empty() ? "" : ", ") + to_string(nodes_[input].value.shape());
    }
    throw Error(fmt::format("anomaly: forward of {} produced a NaN or Inf; inputs {}, output {}",
                            describe(id), input_shapes.empty() ? "none" : input_shapes,
                            node.value.shape()));
}

template <class T>
void Tape<T>::clear() {
    nodes_.clear();
    intermediates_.clear();
    for (auto& extension : extensions_) {
        extension.second->clear();
    }
    input_ids_.clear();
    free_grads_.clear();
    values_.reset();
    indices_.reset();
    labels_.resize(1);
    label_stack_.clear();
    ++generation_;
}

template class Var<float>;
template class Var<double>;
template class Tape<float>;
template class Tape<double>;

} // namespace cellgrad
