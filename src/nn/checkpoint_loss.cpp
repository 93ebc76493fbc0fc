// checkpointed_sequence_loss: activation checkpointing with the loss inside the segments. Each
// segment of k steps is ONE node on the caller's tape whose value is the state after its last
// step and its part of the loss; forward runs the steps and the loss on a scratch tape and keeps
// only those, backward runs them again from the stored boundary state and backpropagates. Unlike
// RecurrentOptions::checkpoint_steps, no output of any step stays on the caller's tape, so memory
// is the input + T/k boundary states + one segment's graph.
#include <memory>

#include "cellgrad/nn/recurrent.hpp"
#include "checkpoint.hpp"

namespace cellgrad::nn {

namespace {

using detail::add_gradient;
using detail::rows_of;
using detail::run_steps;
using detail::SegmentGraph;

/// One segment's plan: steps [first, first + count). Its node's value is (S*B + 1, H): the state
/// after its last step (h, then c, ...), then a row whose first element is its loss.
template <class T>
struct LossSegment {
    Cell<T>* cell = nullptr;
    std::shared_ptr<const SegmentLoss<T>> loss;
    Tape<T>* scratch = nullptr;
    std::size_t first = 0, count = 0, batch = 0, states = 0;
    bool last = false;         ///< the final segment: no later segment reads its state
    NodeId input = 0;          ///< the segment's input rows (count*B, in)
    bool has_previous = false; ///< false: the initial state is zero
    NodeId previous = 0;       ///< the previous segment's node
    std::vector<Tensor<T>> zero_state;

    /// Row of the loss in the node's value.
    std::size_t loss_row() const { return states * batch; }
};

/// The segments of one tape pass and their scratch tape.
template <class T>
using LossSegments = detail::ScratchSegments<T, LossSegment<T>>;

/// The segment's initial state values: the previous segment's state rows, or zeros.
template <class T>
std::vector<View<const T>> initial_values(const Tape<T>& tape, const LossSegment<T>& segment) {
    std::vector<View<const T>> values;
    for (std::size_t s = 0; s < segment.states; ++s) {
        values.push_back(segment.has_previous ? rows_of(tape.node(segment.previous).value,
                                                        s * segment.batch, segment.batch)
                                              : segment.zero_state[s].view());
    }
    return values;
}

/// The segment's steps and its loss on the scratch tape: (graph, loss part).
template <class T>
std::pair<SegmentGraph<T>, Var<T>> run_segment(const Tape<T>& tape, const LossSegment<T>& segment,
                                               bool for_backward, bool input_grad) {
    SegmentGraph<T> graph = run_steps<T>(*segment.cell, segment.count, segment.batch, false,
                                         *segment.scratch, tape.node(segment.input).value,
                                         initial_values(tape, segment), for_backward, input_grad);
    const Var<T> outputs =
        graph.outputs.size() == 1 ? graph.outputs[0] : concat_rows<T>(graph.outputs);
    const Var<T> part = (*segment.loss)(outputs, segment.first, segment.count);
    if (!part.valid() || &part.tape() != segment.scratch || part.shape() != Shape{1, 1}) {
        throw Error(fmt::format("checkpointed_sequence_loss: the loss of steps [{}, {}) must be a "
                                "(1, 1) Var made from the outputs' tape, got {}",
                                segment.first, segment.first + segment.count,
                                part.valid() ? to_string(part.shape()) : "an empty Var"));
    }
    return {std::move(graph), part};
}

/// Backward of a segment node: runs its steps and loss again on the scratch tape and
/// backpropagates dL/d(loss part) and the next segment's dL/d(state) through them; the input
/// rows' gradient is added, the previous segment's state rows' gradient written.
template <class T>
void loss_segment_backward(Tape<T>& tape, NodeId self) {
    const LossSegment<T>& segment =
        *tape.template attributes<detail::PlanRef<LossSegment<T>>>(self).plan;
    const View<const T> grad = tape.node(self).grad;
    const std::size_t B = segment.batch;
    Tape<T>& scratch = *segment.scratch;
    scratch.clear();
    const bool input_grad = tape.node(segment.input).requires_grad;
    const auto [graph, part] = run_segment(tape, segment, true, input_grad);
    // root = g * part + sum_s <state_s, dL/dstate_s>: its gradient is g for the part and exactly
    // dL/dstate_s for each state.
    Var<T> root = scale(part, double(grad(segment.loss_row(), 0)));
    if (!segment.last) {
        for (std::size_t s = 0; s < segment.states; ++s) {
            const Var<T> seed = scratch.constant(rows_of(grad, s * B, B));
            root = add(root, sum(mul(graph.final[s], seed)));
        }
    }
    scratch.backward(root);

    if (input_grad) {
        add_gradient<T>(tape, segment.input, scratch.grad_if_any(graph.input.id()));
    }
    if (segment.has_previous) {
        const View<T> previous = tape.grad_for_update(segment.previous);
        for (std::size_t s = 0; s < segment.states; ++s) {
            const View<const T> ds = scratch.grad_if_any(graph.initial[s].id());
            if (ds.data != nullptr) {
                copy<T>(ds, rows_of(previous, s * B, B));
            }
        }
    }
}

} // namespace

template <class T>
Var<T> checkpointed_sequence_loss(Recurrent<T>& layer, const Var<T>& input, std::size_t batch,
                                  std::size_t segment_steps, const SegmentLoss<T>& loss) {
    const RecurrentOptions& options = layer.options();
    if (options.num_layers != 1 || options.bidirectional) {
        throw Error(fmt::format("checkpointed_sequence_loss: needs one layer in one direction, "
                                "got {} layer(s){}",
                                options.num_layers,
                                options.bidirectional ? ", bidirectional" : ""));
    }
    Cell<T>& cell = layer.cell(0);
    if (!input.valid() || batch == 0 || segment_steps == 0 || input.rows() % batch != 0 ||
        input.rows() == 0 || input.cols() != cell.input_size() || !loss) {
        throw Error(fmt::format("checkpointed_sequence_loss: input {} with batch {} and segments "
                                "of {} steps; needs (T*B, {}) rows, T >= 1, B >= 1, k >= 1 and a "
                                "loss function",
                                input.valid() ? to_string(input.shape()) : "(empty)", batch,
                                segment_steps, cell.input_size()));
    }
    Tape<T>& tape = input.tape();
    LossSegments<T>& store = tape.template extension<LossSegments<T>>();
    const auto shared_loss = std::make_shared<const SegmentLoss<T>>(loss);
    const std::size_t steps = input.rows() / batch;
    const std::size_t H = cell.hidden_size();
    const std::size_t S = cell.state_size();
    std::vector<Var<T>> parameters; // inputs of every segment node: gradients flow to the cell
    for (Parameter<T>* parameter : cell.parameters()) {
        parameters.push_back(tape.param(*parameter));
    }
    std::vector<Var<T>> loss_rows;
    Var<T> previous;
    for (std::size_t first = 0; first < steps; first += segment_steps) {
        auto owned = std::make_unique<LossSegment<T>>();
        LossSegment<T>& segment = *owned;
        segment.cell = &cell;
        segment.loss = shared_loss;
        segment.scratch = &store.scratch;
        segment.first = first;
        segment.count = std::min(segment_steps, steps - first);
        segment.batch = batch;
        segment.states = S;
        segment.last = first + segment.count == steps;
        const Var<T> rows = slice_rows(input, first * batch, (first + segment.count) * batch);
        segment.input = rows.id();
        std::vector<Var<T>> inputs = {rows};
        if (previous.valid()) {
            segment.has_previous = true;
            segment.previous = previous.id();
            inputs.push_back(previous);
        } else {
            segment.zero_state.assign(S, Tensor<T>(batch, H));
        }
        inputs.insert(inputs.end(), parameters.begin(), parameters.end());
        const NodeId id = tape.record("checkpoint_loss_segment", std::span<const Var<T>>(inputs),
                                      S * batch + 1, H);
        store.scratch.clear();
        {
            NoGradGuard no_grad; // keeps nothing of the steps but what it copies out
            const auto [graph, part] = run_segment(tape, segment, false, false);
            const View<T> value = tape.node(id).value;
            for (std::size_t s = 0; s < S; ++s) {
                copy<T>(graph.final[s].value(), rows_of(value, s * batch, batch));
            }
            std::fill_n(value.row(segment.loss_row()), H, T(0));
            value(segment.loss_row(), 0) = part.value()(0, 0);
        }
        tape.set_attributes(id, detail::PlanRef<LossSegment<T>>{owned.get()});
        tape.set_backward(id, &loss_segment_backward<T>);
        store.segments.push_back(std::move(owned));
        previous = Var<T>(&tape, id);
        loss_rows.push_back(slice_rows(previous, S * batch, S * batch + 1));
    }
    const Var<T> parts = loss_rows.size() == 1 ? loss_rows[0] : concat_rows<T>(loss_rows);
    return sum(slice_cols(parts, 0, 1)); // sum of the segments' losses
}

template Var<float> checkpointed_sequence_loss<float>(Recurrent<float>&, const Var<float>&,
                                                      std::size_t, std::size_t,
                                                      const SegmentLoss<float>&);
template Var<double> checkpointed_sequence_loss<double>(Recurrent<double>&, const Var<double>&,
                                                        std::size_t, std::size_t,
                                                        const SegmentLoss<double>&);

} // namespace cellgrad::nn
