// Activation checkpointing for the sequence runner (RecurrentOptions::checkpoint_steps): the steps
// of one layer and direction run in segments of k steps, each recorded on the caller's tape as ONE
// node that keeps only the segment's outputs and its last state. Forward runs the k steps on a
// scratch tape and copies those out; backward runs them again on the scratch tape from the stored
// boundary state and backpropagates through them. Memory: the outputs, T/k boundary states, and
// one segment's graph at a time, instead of every step's graph.
#pragma once

#include <vector>

#include "cellgrad/nn/cells.hpp"

namespace cellgrad::nn::detail {

/// What a checkpointed run of one layer and direction gives back.
template <class T>
struct CheckpointedRun {
    std::vector<Var<T>> outputs; ///< h of every step, (B, H), in time order
    std::vector<Var<T>> final;   ///< the state after the last step run
};

/// Whether the steps of a run may donate their rows of `projected` to their gates
/// (StepInput::donated): true when the cell projected `input` into a buffer of its own, so that
/// step t's rows are read by step t alone; false when the projection is the input itself or a
/// view of another node.
template <class T>
bool projection_donatable(const Var<T>& projected, const Var<T>& input) {
    return projected.id() != input.id() && !projected.tape().node(projected.id()).value_is_view;
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
