#include "checkpoint.hpp"

#include <algorithm>
#include <memory>

namespace cellgrad::nn::detail {

namespace {

/// One segment node's plan: steps [first, first + count) of `cell`, its input rows and where its
/// initial state comes from. Its value (and gradient) is (count*B + (S-1)*B, H): h of every step
/// in time order, then the segment's last c (and further states) after its last step run.
template <class T>
struct Segment {
    Cell<T>* cell = nullptr;
    Tape<T>* scratch = nullptr;
    std::size_t first = 0, count = 0, batch = 0, hidden = 0, states = 0;
    bool reverse = false;
    NodeId input = 0;            ///< the segment's input rows (count*B, input_size)
    bool has_previous = false;   ///< initial state = the previous segment's final state
    NodeId previous = 0;         ///< that segment's node
    std::vector<NodeId> initial; ///< else: the run's initial state nodes
    const Segment* previous_segment = nullptr;

    /// Row of state `s` after the segment's last step in the node: h sits in the output rows of
    /// the last step run (time first + count - 1, or first when reverse); c and others follow
    /// the outputs.
    std::size_t state_row(std::size_t s) const {
        if (s == 0) {
            return reverse ? 0 : (count - 1) * batch;
        }
        return (count + s - 1) * batch;
    }
};

/// The segments of one tape pass and their scratch tape.
template <class T>
using CheckpointSegments = ScratchSegments<T, Segment<T>>;

/// The segment's initial state values: the previous segment's final rows, or the run's initial
/// state.
template <class T>
std::vector<View<const T>> initial_values(const Tape<T>& tape, const Segment<T>& segment) {
    std::vector<View<const T>> values;
    for (std::size_t s = 0; s < segment.states; ++s) {
        if (segment.has_previous) {
            const View<const T> all = tape.node(segment.previous).value;
            values.push_back(rows_of(all, segment.previous_segment->state_row(s), segment.batch));
        } else {
            values.push_back(tape.node(segment.initial[s]).value);
        }
    }
    return values;
}

/// Backward of a segment node: re-runs its steps on the scratch tape and backpropagates the
/// node's gradient through them. The seeds enter through one concat_rows node recorded last, so
/// every h receives its outer gradient first and then the next step's, as in the full graph; the
/// boundary h also takes the outer gradient its previous segment's rows hold so far, and the
/// result overwrites those rows (they then hold the whole dL/dh of the boundary).
template <class T>
void segment_backward(Tape<T>& tape, NodeId self) {
    const Segment<T>& segment = *tape.template attributes<PlanRef<Segment<T>>>(self).plan;
    const View<const T> grad = tape.node(self).grad;
    const std::size_t B = segment.batch;
    Tape<T>& scratch = *segment.scratch;
    scratch.clear();
    const bool input_grad = tape.node(segment.input).requires_grad;
    const SegmentGraph<T> graph = run_steps<T>(*segment.cell, segment.count, B, segment.reverse,
                                               scratch, tape.node(segment.input).value,
                                               initial_values(tape, segment), true, input_grad);
    std::vector<Var<T>> parts = graph.outputs;
    for (std::size_t s = 1; s < segment.states; ++s) {
        parts.push_back(graph.final[s]);
    }
    Tensor<T> seed(grad.rows + (segment.has_previous ? B : 0), grad.cols);
    copy<T>(grad, rows_of(seed.view(), 0, grad.rows));
    if (segment.has_previous) {
        parts.push_back(graph.initial[0]);
        const View<T> held = tape.grad_if_any(segment.previous);
        if (held.data != nullptr) {
            copy<T>(rows_of(View<const T>(held), segment.previous_segment->state_row(0), B),
                    rows_of(seed.view(), grad.rows, B));
        }
    }
    scratch.backward(concat_rows<T>(parts), seed);

    if (input_grad) {
        add_gradient<T>(tape, segment.input, scratch.grad_if_any(graph.input.id()));
    }
    for (std::size_t s = 0; s < segment.states; ++s) {
        const View<const T> ds = scratch.grad_if_any(graph.initial[s].id());
        if (ds.data == nullptr) {
            continue;
        }
        if (segment.has_previous) {
            const View<T> previous = tape.grad_for_update(segment.previous);
            copy<T>(ds, rows_of(previous, segment.previous_segment->state_row(s), B));
        } else if (tape.node(segment.initial[s]).requires_grad) {
            add_gradient<T>(tape, segment.initial[s], ds);
        }
    }
}

} // namespace

template <class T>
CheckpointedRun<T> run_checkpointed(Cell<T>& cell, const Var<T>& input, std::size_t batch,
                                    const std::vector<Var<T>>& initial, bool reverse,
                                    std::size_t segment_steps) {
    Tape<T>& tape = input.tape();
    CheckpointSegments<T>& store = tape.template extension<CheckpointSegments<T>>();
    const std::size_t steps = input.rows() / batch;
    const std::size_t H = cell.hidden_size();
    const std::size_t S = cell.state_size();
    // The parameters are inputs of every segment node: gradients flow whatever the input is.
    std::vector<Var<T>> parameters;
    for (Parameter<T>* parameter : cell.parameters()) {
        parameters.push_back(tape.param(*parameter));
    }
    std::vector<Var<T>> nodes; // one per segment, in run order
    std::vector<const Segment<T>*> plans;
    const std::size_t segments = (steps + segment_steps - 1) / segment_steps;
    for (std::size_t j = 0; j < segments; ++j) {
        // Forward direction: segments [0, k), [k, 2k), ...; reverse: from the end backwards.
        const std::size_t index = reverse ? segments - 1 - j : j;
        const std::size_t first = index * segment_steps;
        const std::size_t count = std::min(segment_steps, steps - first);
        auto owned = std::make_unique<Segment<T>>();
        Segment<T>& segment = *owned;
        segment.cell = &cell;
        segment.scratch = &store.scratch;
        segment.first = first;
        segment.count = count;
        segment.batch = batch;
        segment.hidden = H;
        segment.states = S;
        segment.reverse = reverse;
        const Var<T> rows = slice_rows(input, first * batch, (first + count) * batch);
        segment.input = rows.id();
        std::vector<Var<T>> inputs = {rows};
        if (j > 0) {
            segment.has_previous = true;
            segment.previous = nodes.back().id();
            segment.previous_segment = plans.back();
            inputs.push_back(nodes.back());
        } else {
            for (const Var<T>& state : initial) {
                segment.initial.push_back(state.id());
                inputs.push_back(state);
            }
        }
        inputs.insert(inputs.end(), parameters.begin(), parameters.end());
        const NodeId id = tape.record("checkpoint_segment", std::span<const Var<T>>(inputs),
                                      (count + S - 1) * batch, H);
        store.scratch.clear();
        {
            NoGradGuard no_grad; // the forward keeps nothing of the steps but what it copies out
            const SegmentGraph<T> graph = run_steps<T>(cell, count, batch, reverse, store.scratch,
                                                       tape.node(segment.input).value,
                                                       initial_values(tape, segment), false, false);
            const View<T> value = tape.node(id).value;
            for (std::size_t local = 0; local < count; ++local) {
                copy<T>(graph.outputs[local].value(), rows_of(value, local * batch, batch));
            }
            for (std::size_t s = 1; s < S; ++s) {
                copy<T>(graph.final[s].value(), rows_of(value, segment.state_row(s), batch));
            }
        }
        const Segment<T>* plan = owned.get();
        store.segments.push_back(std::move(owned));
        tape.set_attributes(id, PlanRef<Segment<T>>{plan});
        tape.set_backward(id, &segment_backward<T>);
        nodes.emplace_back(&tape, id);
        plans.push_back(plan);
    }
    // Views made after every segment node, so that their gradients reach the nodes before any
    // segment's backward reads them.
    CheckpointedRun<T> run;
    run.outputs.resize(steps);
    for (std::size_t j = 0; j < segments; ++j) {
        const Segment<T>& segment = *plans[j];
        for (std::size_t local = 0; local < segment.count; ++local) {
            run.outputs[segment.first + local] =
                slice_rows(nodes[j], local * batch, (local + 1) * batch);
        }
    }
    const Segment<T>& last = *plans.back();
    for (std::size_t s = 0; s < S; ++s) {
        run.final.push_back(slice_rows(nodes.back(), last.state_row(s), last.state_row(s) + batch));
    }
    return run;
}

template CheckpointedRun<float> run_checkpointed<float>(Cell<float>&, const Var<float>&,
                                                        std::size_t, const std::vector<Var<float>>&,
                                                        bool, std::size_t);
template CheckpointedRun<double> run_checkpointed<double>(Cell<double>&, const Var<double>&,
                                                          std::size_t,
                                                          const std::vector<Var<double>>&, bool,
                                                          std::size_t);

} // namespace cellgrad::nn::detail
