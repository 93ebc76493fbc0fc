// The tape: reverse-mode autodiff over a vector of nodes kept in creation order.
//
// Creation order is a topological order, so backward() is one reverse loop: no recursion in
// sorting or destruction, whatever the depth of an unrolled BPTT graph. A Var is a handle
// (tape pointer + node index + the tape's generation). Node values and gradients live in an arena
// that clear() rewinds, so a training loop that rebuilds the same graph every step reuses the
// same memory instead of allocating. Parameters outlive tapes: a parameter leaf reads the
// parameter's tensor in place and its backward adds straight into the parameter's gradient.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <type_traits>
#include <typeindex>
#include <utility>
#include <vector>

#include "cellgrad/tensor.hpp"

namespace cellgrad {

using NodeId = std::uint32_t;

template <class T>
class Tape;

/// A named trainable tensor with its gradient; outlives tapes.
template <class T>
struct Parameter {
    std::string name;
    Tensor<T> value;
    Tensor<T> grad;
    /// Shape as exported (PyTorch's view): {n} for a bias vector, {rows, cols} for a matrix.
    std::vector<std::size_t> export_shape;

    /// Creates a parameter with a zero gradient; `is_vector` exports a (1, n) value as shape {n}.
    Parameter(std::string name, Tensor<T> value, bool is_vector = false);
    /// Sets the gradient to zero.
    void zero_grad() { grad.fill(T(0)); }
};

/// Bump allocator of 64-byte aligned blocks mapped straight from the kernel; reset() keeps the
/// memory for the next round. A round that needed more than one block is followed by one block
/// of the round's high-water mark, the old blocks going back to the kernel at once (through
/// malloc they would stay resident beside the new block and double the process's peak).
template <class U>
class Arena {
  public:
    /// Uninitialised storage for n elements, valid until reset().
    U* allocate(std::size_t n);
    /// Frees every block at once; merges the blocks so that the next round fits in one.
    void reset();
    /// Elements reserved in all blocks.
    std::size_t capacity() const;

  private:
    /// Unmaps a block of `bytes` bytes.
    struct Unmap {
        std::size_t bytes = 0;
        void operator()(U* data) const;
    };
    struct Block {
        std::unique_ptr<U[], Unmap> data;
        std::size_t size = 0;
    };
    void add_block(std::size_t min_size);
    std::vector<Block> blocks_;
    std::size_t block_ = 0;
    std::size_t used_ = 0;
    std::size_t used_before_block_ = 0; ///< elements handed out in this round's earlier blocks
    std::size_t high_water_ = 0;        ///< most elements handed out in one round
};

/// Backward of one node: reads the node's gradient and adds into its inputs' gradients.
template <class T>
using BackwardFn = void (*)(Tape<T>& tape, NodeId self);

/// One recorded operation: its value, gradient, inputs and what its backward needs.
template <class T>
struct Node {
    View<T> value;
    View<T> grad;                     ///< null until a gradient is added into it
    BackwardFn<T> backward = nullptr; ///< null for leaves and nodes that need no gradient
    const char* op = "";
    std::uint32_t first_input = 0; ///< offset into the tape's input list
    std::uint32_t input_count = 0;
    std::uint32_t label = 0; ///< 0 = no label
    bool requires_grad = false;
    bool notify_when_reached = false;  ///< tape extensions hear when backward reaches this node
    double scalars[2] = {0, 0};        ///< op attributes (scale, offset, ...)
    std::int64_t integers[2] = {0, 0}; ///< op attributes (offsets, flags, ...)
    View<T> saved;       ///< tensor kept by forward for backward (e.g. softmax probabilities)
    View<T> saved_extra; ///< a second kept tensor (e.g. per-row loss weights)
    const std::int32_t* indices = nullptr; ///< indices kept by forward (rows, targets)
    const void* attributes = nullptr;      ///< typed op attributes (see Tape::set_attributes)
    Parameter<T>* parameter = nullptr;     ///< set on parameter leaves
    /// Views (record_columns, record_rows_in_place) share their base node's gradient: base id,
    /// else none.
    NodeId columns_of = ~NodeId(0);
    std::uint32_t first_column = 0; ///< first column of the base node a view shows
    std::uint32_t first_row = 0;    ///< first row of the base node a view shows
    bool value_is_view = false;     ///< value shows another node's or tensor's memory
    bool owns_grad = false;         ///< grad is a buffer of its own (not a parameter's or a base's)
    bool backward_done = false;     ///< this pass's backward of the node has run
    bool grad_released = false;     ///< grad was handed on (Tape::reuse_gradient_memory)
    std::uint32_t grad_holds = 0;   ///< extensions still reading grad (Tape::hold_gradient)
};

/// State an op family keeps on a tape beside its nodes (the GEMM layer's packed weights and
/// queued weight gradients); the tape calls it at the points of a pass named below.
template <class T>
class TapeExtension {
  public:
    virtual ~TapeExtension() = default;
    /// backward() is about to start its reverse loop.
    virtual void begin_backward(Tape<T>&) {}
    /// The reverse loop reached `id`, marked by Tape::notify_when_reached: all its users are done.
    virtual void reached(Tape<T>&, NodeId) {}
    /// clear() drops every node.
    virtual void clear() {}
    /// Bytes the extension holds outside the tape's arena (memory_bytes() adds them).
    virtual std::size_t bytes() const { return 0; }
};

/// Handle to a node of a tape; cheap to copy; invalid after the tape is cleared.
template <class T>
class Var {
  public:
    Var() = default;
    /// Handle to node `id` of `tape` in the tape's current generation.
    Var(Tape<T>* tape, NodeId id);

    /// The tape; throws if the Var is empty or its tape was cleared since it was made.
    Tape<T>& tape() const;
    /// Index of the node in its tape.
    NodeId id() const { return id_; }
    /// (rows, cols) of the value.
    Shape shape() const;
    /// Rows of the value.
    std::size_t rows() const { return shape().rows; }
    /// Columns of the value.
    std::size_t cols() const { return shape().cols; }
    /// The value, valid until the tape is cleared.
    View<const T> value() const;
    /// A copy of the value that outlives the tape.
    Tensor<T> value_tensor() const { return Tensor<T>(value()); }
    /// Scalar value of a (1, 1) Var; throws otherwise.
    T item() const;
    /// True when gradients flow to this node.
    bool requires_grad() const;
    /// dL/d(this) from the last backward (zeros if nothing reached it); throws if !requires_grad.
    Tensor<T> grad() const;
    /// Runs backward from this (1, 1) Var.
    void backward() const;
    /// True when the Var refers to a node.
    bool valid() const { return tape_ != nullptr; }

  private:
    Tape<T>* tape_ = nullptr;
    NodeId id_ = 0;
    std::uint64_t generation_ = 0;
};

/// Turns gradient recording off for the current thread while alive (like torch.no_grad()).
class NoGradGuard {
  public:
    NoGradGuard();
    ~NoGradGuard();
    NoGradGuard(const NoGradGuard&) = delete;
    NoGradGuard& operator=(const NoGradGuard&) = delete;

  private:
    bool previous_;
};

/// True unless a NoGradGuard is alive on this thread.
bool grad_enabled();

/// Turns anomaly detection on or off: the first op whose forward or backward makes a NaN/Inf
/// throws.
void set_anomaly_detection(bool enabled);
/// True when anomaly detection is on (off by default).
bool anomaly_detection();

/// A named intermediate of a pointwise node (a gate's activation), kept for inspection.
template <class T>
struct Intermediate {
    const char* name;    ///< the name the cell's math gave it ("forget", "input", ...)
    std::string label;   ///< the labels in force when it was recorded ("lstm.l0.fwd t=37")
    View<const T> value; ///< (B, H), valid until clear()
};

/// The tape: nodes in creation order, their values and gradients in a reusable arena.
template <class T>
class Tape {
  public:
    Tape() = default;
    Tape(const Tape&) = delete;
    Tape& operator=(const Tape&) = delete;

    /// A leaf holding a copy of `value`; no gradient flows to it.
    Var<T> constant(View<const T> value);
    /// A leaf holding a copy of `value`; no gradient flows to it.
    Var<T> constant(const Tensor<T>& value) { return constant(value.view()); }
    /// A leaf holding a copy of `value` whose gradient is kept (for inputs you differentiate by).
    Var<T> input(const Tensor<T>& value);
    /// A leaf reading `parameter.value` in place; backward adds into `parameter.grad`. Change the
    /// value only between clear() and the next pass (backward reads it; packed_value copies it).
    Var<T> param(Parameter<T>& parameter);
    /// A leaf sharing `x`'s value with no link back to x's graph (gradient stops here).
    Var<T> detach(const Var<T>& x);

    /// Reverse pass from a (1, 1) loss with seed 1; intermediate gradients from earlier passes
    /// reset.
    void backward(const Var<T>& loss);
    /// Reverse pass from `output` with seed gradient `seed` of the output's shape.
    void backward(const Var<T>& output, const Tensor<T>& seed);
    /// Drops every node and rewinds the arenas (memory is kept); all Vars become invalid.
    void clear();
    /// While on, backward() hands the gradient buffer of a node whose backward has run to the
    /// gradients of earlier nodes, as LibTorch frees it: a step's peak memory no longer holds
    /// every intermediate gradient at once. Var::grad() of such a node then throws; leaves
    /// (inputs) and parameters keep theirs. Off by default: every gradient stays readable.
    void reuse_gradient_memory(bool on) { reuse_gradients_ = on; }
    /// True while gradient buffers are reused (see reuse_gradient_memory).
    bool reusing_gradient_memory() const { return reuse_gradients_; }

    /// Number of recorded nodes.
    std::size_t size() const { return nodes_.size(); }
    /// Incremented by clear(); Vars remember the generation they were made in.
    std::uint64_t generation() const { return generation_; }
    /// One line per node: id, op, label, shape, inputs.
    std::string dump() const;
    /// The graph in Graphviz dot.
    std::string to_dot() const;
    /// Elements reserved by the value/gradient arena (for buffer-reuse checks).
    std::size_t arena_capacity() const { return values_.capacity(); }
    /// Bytes the tape holds for node values and gradients: its arenas plus what its extensions
    /// hold beside them (a checkpointing scratch tape, for one). Kept by clear().
    std::size_t memory_bytes() const;

    // ---- used by ops -------------------------------------------------------------------------
    /// Records a node with a fresh (rows, cols) value buffer; requires_grad from the inputs.
    NodeId record(const char* op, std::initializer_list<Var<T>> inputs, std::size_t rows,
                  std::size_t cols);
    /// Records a node with any number of inputs and a fresh (rows, cols) value buffer.
    NodeId record(const char* op, std::span<const Var<T>> inputs, std::size_t rows,
                  std::size_t cols);
    /// Records a node whose value is an existing view (zero-copy slices, parameter leaves).
    NodeId record_view(const char* op, std::span<const Var<T>> inputs, View<T> value);
    /// Sets the backward of a node that requires grad; no-op otherwise.
    void set_backward(NodeId id, BackwardFn<T> backward);
    /// The node (reference valid until the next record()).
    Node<T>& node(NodeId id) { return nodes_[id]; }
    /// The node (reference valid until the next record()).
    const Node<T>& node(NodeId id) const { return nodes_[id]; }
    /// Ids of the node's inputs.
    std::span<const NodeId> inputs(NodeId id) const;
    /// The node's gradient, allocated and zeroed on first use; backward adds into it.
    View<T> grad_for_update(NodeId id);
    /// The node's gradient for a backward that covers every element: on first use it is left
    /// uninitialised and `fresh` is set, so the caller writes (=) instead of adding (+=).
    View<T> grad_for_overwrite(NodeId id, bool& fresh);
    /// The node's gradient if one was allocated (a column view's: its base's columns), else null.
    View<T> grad_if_any(NodeId id) const;
    /// True when the node's gradient (or its base's) was handed on by reuse_gradient_memory.
    bool grad_released(NodeId id) const;
    /// Keeps the buffer behind node `id`'s gradient from being reused until drop_gradient_hold
    /// (an extension that reads the gradient after the node's backward, e.g. queued products).
    void hold_gradient(NodeId id);
    /// Ends one hold_gradient; the buffer is reused once no hold is left and its backward has run.
    void drop_gradient_hold(NodeId id);
    /// Records a view of columns [first, first + cols) of node `base` whose value and gradient are
    /// the base's own columns: no copy forward, nothing to add backward (a multi-output node's
    /// outputs).
    NodeId record_columns(const char* op, NodeId base, std::size_t first, std::size_t cols);
    /// Records an op whose value and gradient are rows [first, first + rows) of node `base` (one of
    /// `inputs`): the op writes its result over those rows, which nothing may read afterwards,
    /// and the base's gradient rows are its gradient (a recurrent step's gates in the rows of
    /// the projected inputs).
    NodeId record_rows_in_place(const char* op, std::span<const Var<T>> inputs, NodeId base,
                                std::size_t first, std::size_t rows);
    /// Stores a trivially copyable attribute record for node `id` until clear().
    template <class A>
    void set_attributes(NodeId id, const A& attributes) {
        static_assert(std::is_trivially_copyable_v<A>, "node attributes are plain data");
        void* memory = allocate_bytes(sizeof(A));
        nodes_[id].attributes = new (memory) A(attributes);
    }
    /// The attribute record stored for node `id` by set_attributes<A>.
    template <class A>
    const A& attributes(NodeId id) const {
        return *static_cast<const A*>(nodes_[id].attributes);
    }
    /// The extension of type E on this tape, made on first use (one per type and tape).
    template <class E>
    E& extension() {
        for (auto& [type, instance] : extensions_) {
            if (type == std::type_index(typeid(E))) {
                return static_cast<E&>(*instance);
            }
        }
        extensions_.emplace_back(std::type_index(typeid(E)), std::make_unique<E>());
        return static_cast<E&>(*extensions_.back().second);
    }
    /// While on, pointwise nodes also keep the values of their named intermediates (gates) for
    /// intermediates(); off by default (it costs a pass and memory per node).
    void keep_intermediates(bool keep) { keep_intermediates_ = keep; }
    /// True while intermediates are kept.
    bool keeping_intermediates() const { return keep_intermediates_; }
    /// The intermediates kept since the last clear(), in recording order.
    const std::vector<Intermediate<T>>& intermediates() const { return intermediates_; }
    /// Keeps an intermediate's value under the current labels (used by pointwise).
    void add_intermediate(const char* name, View<const T> value) {
        intermediates_.push_back(
            {name, label_stack_.empty() ? std::string() : labels_[label_stack_.back()], value});
    }
    /// Makes the reverse loop tell every extension when it reaches node `id`.
    void notify_when_reached(NodeId id) { nodes_[id].notify_when_reached = true; }
    /// Uninitialised (rows, cols) buffer that lives until clear().
    View<T> allocate(std::size_t rows, std::size_t cols);
    /// Uninitialised index buffer that lives until clear().
    std::int32_t* allocate_indices(std::size_t n) { return indices_.allocate(n); }
    /// In anomaly mode, throws if the node's value has a NaN or Inf.
    void check_forward(NodeId id) const;

    // ---- labels (anomaly messages, dumps) ----------------------------------------------------
    /// Pushes a label (joined to the enclosing one with a space) for nodes recorded from now on.
    void push_label(const std::string& label);
    /// Pops the innermost label.
    void pop_label();
    /// Text of label id (empty for 0).
    const std::string& label_text(std::uint32_t label) const;
    /// "op [label]" of a node, for messages.
    std::string describe(NodeId id) const;

  private:
    NodeId push_node(Node<T> node, std::span<const Var<T>> inputs);
    void run_backward(NodeId from);
    /// A (rows, cols) gradient buffer for node `id`: a released one of that size, else new.
    View<T> new_grad(NodeId id);
    /// Hands node `id`'s own gradient buffer on if reuse is on, its backward ran and no hold is
    /// left.
    void release_grad(NodeId id);
    /// The node that owns the buffer behind `id`'s gradient (a column view's base).
    NodeId grad_owner(NodeId id) const;
    /// Uninitialised 64-byte aligned bytes that live until clear().
    void* allocate_bytes(std::size_t bytes);
    std::vector<Node<T>> nodes_;
    std::vector<std::pair<std::type_index, std::unique_ptr<TapeExtension<T>>>> extensions_;
    std::vector<NodeId> input_ids_;
    std::vector<Intermediate<T>> intermediates_;
    bool keep_intermediates_ = false;
    bool reuse_gradients_ = false;
    /// Released gradient buffers by element count (few distinct sizes per graph).
    std::vector<std::pair<std::size_t, std::vector<T*>>> free_grads_;
    Arena<T> values_;
    Arena<std::int32_t> indices_;
    std::vector<std::string> labels_{""};
    std::vector<std::uint32_t> label_stack_;
    std::uint64_t generation_ = 1;
};

/// Labels the nodes recorded on `tape` while alive (e.g. "lstm.l1.fwd" then "t=37").
template <class T>
class LabelScope {
  public:
    /// Pushes `label` on the tape.
    LabelScope(Tape<T>& tape, const std::string& label) : tape_(tape) { tape_.push_label(label); }
    ~LabelScope() { tape_.pop_label(); }
    LabelScope(const LabelScope&) = delete;
    LabelScope& operator=(const LabelScope&) = delete;

  private:
    Tape<T>& tape_;
};

} // namespace cellgrad
