// Activation checkpointing for the sequence runner (RecurrentOptions::checkpoint_steps): the steps
// of one layer and direction run in segments of k steps, each recorded on the caller's tape as ONE
// node that keeps only the segment's outputs and its last state. Forward runs the k steps on a
// scratch tape and copies those out; backward runs them again on the scratch tape from the stored
// boundary state and backpropagates through them. Memory: the outputs, T/k boundary states, and
// one segment's graph at a time, instead of every step's graph.
#pragma once

#include <algorithm>
#include <memory>
#include <vector>

#include "../kernels.hpp"
#include "cellgrad/nn/cells.hpp"

namespace cellgrad::nn::detail {

/// What a checkpointed run of one layer and direction gives back.
template <class T>
struct CheckpointedRun {
    std::vector<Var<T>> outputs; ///< h of every step, (B, H), in time order
    std::vector<Var<T>> final;   ///< the state after the last step run
};

/// A segment node's attribute record: its plan (owned by ScratchSegments).
template <class Plan>
struct PlanRef {
    const Plan* plan;
};

/// The segment plans of one tape pass and the scratch tape they run on; dropped by clear(). One
/// per plan type and tape (Tape::extension).
template <class T, class Plan>
class ScratchSegments : public TapeExtension<T> {
  public:
    void begin_backward(Tape<T>&) override {}
    void reached(Tape<T>&, NodeId) override {}
    void clear() override { segments.clear(); }
    std::size_t bytes() const override { return scratch.memory_bytes(); }
    std::vector<std::unique_ptr<Plan>> segments;
    Tape<T> scratch;
};

/// Whether the steps of a run may donate their rows of `projected` to their gates
/// (StepInput::donated): true when the cell projected `input` into a buffer of its own, so that
/// step t's rows are read by step t alone; false when the projection is the input itself or a
/// view of another node.
template <class T>
bool projection_donatable(const Var<T>& projected, const Var<T>& input) {
    return projected.id() != input.id() && !projected.tape().node(projected.id()).value_is_view;
}

/// What `count` steps of a cell leave on a scratch tape.
template <class T>
struct SegmentGraph {
    Var<T> input;
    std::vector<Var<T>> initial, outputs, final; // outputs in time order
};

/// Records `count` steps of `cell` (backwards in time when `reverse`) on `scratch` from the rows
/// `x` (count*batch, in) and the initial state values, as constants (forward) or as inputs
/// whose gradients are kept (`for_backward`; x only when `input_grad`).
template <class T>
SegmentGraph<T> run_steps(Cell<T>& cell, std::size_t count, std::size_t batch, bool reverse,
                          Tape<T>& scratch, View<const T> x,
                          const std::vector<View<const T>>& initial, bool for_backward,
                          bool input_grad) {
    SegmentGraph<T> graph;
    graph.input = for_backward && input_grad ? scratch.input(Tensor<T>(x)) : scratch.constant(x);
    for (const View<const T>& state : initial) {
        graph.initial.push_back(for_backward ? scratch.input(Tensor<T>(state))
                                             : scratch.constant(state));
    }
    cell.attach(scratch);
    const Var<T> projected = cell.project_inputs(graph.input); // (count*B, P)
    const bool donated = projection_donatable(projected, graph.input);
    std::vector<Var<T>> state = graph.initial;
    graph.outputs.resize(count);
    for (std::size_t i = 0; i < count; ++i) {
        const std::size_t local = reverse ? count - 1 - i : i;
        StepInput<T> event(projected, local * batch, batch);
        event.donated = donated;
        state = cell.step(event, state);
        graph.outputs[local] = state[0];
    }
    graph.final = std::move(state);
    return graph;
}

/// Adds `gradient` (a scratch tape's, absent when null) into node `id`'s gradient on `tape`.
template <class T>
void add_gradient(Tape<T>& tape, NodeId id, View<const T> gradient) {
    if (gradient.data != nullptr) {
        kernels::add_into(tape.grad_for_update(id), gradient);
    }
}

/// Rows [row, row + count) of a view.
template <class V>
V rows_of(V view, std::size_t row, std::size_t count) {
    view.data += row * view.stride;
    view.rows = count;
    return view;
}

/// Runs `cell` over `input` (T*B rows, time-major) from `initial` (state_size Vars of (B, H)) in
/// segments of `segment_steps` steps, backwards in time when `reverse`. Outputs and the final
/// state are zero-copy row views of the segments' nodes. The cell's parameters receive their
/// gradients segment by segment during backward.
template <class T>
CheckpointedRun<T> run_checkpointed(Cell<T>& cell, const Var<T>& input, std::size_t batch,
                                    const std::vector<Var<T>>& initial, bool reverse,
                                    std::size_t segment_steps);

} // namespace cellgrad::nn::detail
