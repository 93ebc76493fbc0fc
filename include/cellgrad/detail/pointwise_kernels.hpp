// The machinery under pointwise.hpp: the recorded math as plain data, the reverse sweep's plan
// (outputs used inside other outputs), the vectorised row loops and the node's backward.
#pragma once

#include <array>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "cellgrad/cellmath.hpp"
#include "cellgrad/detail/vector_clones.hpp"
#include "cellgrad/parallel.hpp"
#include "cellgrad/tape.hpp"

namespace cellgrad {

namespace pointwise_detail {

/// The math's outputs as one plain-data list (std::tuple is not trivially copyable).
template <class... E>
struct OutputList;
template <>
struct OutputList<> {};
template <class E, class... Rest>
struct OutputList<E, Rest...> {
    E head;
    OutputList<Rest...> tail;
};

/// The list of the given expressions.
template <class E, class... Rest>
OutputList<E, Rest...> make_list(const E& head, const Rest&... rest) {
    if constexpr (sizeof...(Rest) == 0) {
        return {head, OutputList<>{}};
    } else {
        return {head, make_list(rest...)};
    }
}

/// The M-th output of a list.
template <std::size_t M, class List>
CELLGRAD_ALWAYS_INLINE const auto& output(const List& list) {
    if constexpr (M == 0) {
        return list.head;
    } else {
        return output<M - 1>(list.tail);
    }
}

/// The list of what `math` returns for symbolic arguments Arg<0> ... Arg<N-1>.
template <std::size_t N, class Math>
auto record_math(const Math& math) {
    auto result = [&]<std::size_t... k>(std::index_sequence<k...>) {
        static_assert(std::is_invocable_v<const Math&, cellmath::Arg<k>...>,
                      "pointwise: the math must take one argument per operand");
        return math(cellmath::Arg<k>{}...);
    }
    (std::make_index_sequence<N>{});
    if constexpr (cellmath::Expression<decltype(result)>) {
        return make_list(result);
    } else {
        return std::apply(
            [](const auto&... outputs) {
                static_assert((cellmath::Expression<decltype(outputs)> && ...),
                              "pointwise: the math must return expressions of its arguments");
                return make_list(outputs...);
            },
            result);
    }
}

template <class List>
struct output_count;
template <class... E>
struct output_count<OutputList<E...>> : std::integral_constant<std::size_t, sizeof...(E)> {};

/// Where an operand lives: input slot, first column, and whether its one row is broadcast.
struct OperandPlace {
    std::uint32_t input;
    std::uint32_t first_col;
    bool broadcast;
};

/// What the node keeps: the recorded math and where each operand lives.
template <class List, std::size_t N>
struct Attributes {
    List outputs;
    std::array<OperandPlace, N> operands;
    std::uint32_t width;
};

/// x[k] = in[k][j] for every operand k.
template <class T, std::size_t N, std::size_t... k>
CELLGRAD_ALWAYS_INLINE void load(const std::array<const T*, N>& in, std::size_t j,
                                 std::array<T, N>& x, std::index_sequence<k...>) {
    ((x[k] = in[k][j]), ...);
}

/// out[m][j] = output m of the math at x, for every output m.
template <class T, class List, std::size_t N, std::size_t M, std::size_t... m>
CELLGRAD_ALWAYS_INLINE void store_outputs(const List& outputs, const std::array<T, N>& x,
                                          const std::array<T*, M>& out, std::size_t j,
                                          std::index_sequence<m...>) {
    ((out[m][j] = cellmath::evaluate(output<m>(outputs), x)), ...);
}

/// target[k][j] += dx[k] for every operand k < N.
template <class T, std::size_t N, std::size_t NM, std::size_t... k>
CELLGRAD_ALWAYS_INLINE void add_gradients(const std::array<T*, N>& target, std::size_t j,
                                          const std::array<T, NM>& dx, std::index_sequence<k...>) {
    ((target[k][j] += dx[k]), ...);
}

/// out[m][j] = output m of the math at element j, for j < count.
template <class T, class List, std::size_t N, std::size_t M>
CELLGRAD_POINTWISE_CLONES void forward_span(const List& outputs, std::array<const T*, N> in,
                                            std::array<T*, M> out, std::size_t count) {
    CELLGRAD_IVDEP
    for (std::size_t j = 0; j < count; ++j) {
        std::array<T, N> x;
        load(in, j, x, std::make_index_sequence<N>{});
        store_outputs(outputs, x, out, j, std::make_index_sequence<M>{});
    }
}

/// The reverse sweep's plan. An output used inside another (the LSTM's c' inside h') is the
/// argument Arg<N + k> there, read from the forward's values, so that its gradient adds what flows
/// back through the others before its own sweep: dL/dc' is then total, as for separate nodes.
template <std::size_t N, class List>
struct Sweep;
template <std::size_t N, class... E>
struct Sweep<N, OutputList<E...>> {
    static constexpr std::size_t M = sizeof...(E);
    static constexpr std::array<std::size_t, M> sizes{cellmath::size_of<E>::value...};

    /// Output m with every other, smaller output k replaced by Arg<N + k>, larger ones first.
    template <std::size_t m>
    static auto rewritten(const OutputList<E...>& list) {
        return replace_from<m, 0>(output<m>(list));
    }
    template <std::size_t m, std::size_t k, class X>
    static auto replace_from(const X& x) {
        if constexpr (k == M) {
            return x;
        } else {
            // Replace larger outputs first: one that contains another is larger.
            constexpr std::size_t next = kth_largest(k);
            using Other =
                std::remove_cvref_t<decltype(output<next>(std::declval<OutputList<E...>>()))>;
            if constexpr (next != m && sizes[next] < sizes[m]) {
                return replace_from<m, k + 1>(cellmath::substitute<Other, N + next>(x));
            } else {
                return replace_from<m, k + 1>(x);
            }
        }
    }
    /// Index of the k-th largest output (ties in index order).
    static constexpr std::size_t kth_largest(std::size_t k) {
        std::array<std::size_t, M> order{};
        for (std::size_t i = 0; i < M; ++i) {
            order[i] = i;
        }
        for (std::size_t i = 0; i < M; ++i) {
            for (std::size_t j = i + 1; j < M; ++j) {
                if (sizes[order[j]] > sizes[order[i]]) {
                    std::swap(order[i], order[j]);
                }
            }
        }
        return order[k];
    }
    /// True when output k appears inside output m.
    template <std::size_t m, std::size_t k>
    static constexpr bool uses() {
        using Rewritten = decltype(rewritten<m>(std::declval<OutputList<E...>>()));
        return m != k && contains_arg<N + k>(static_cast<Rewritten*>(nullptr));
    }
    template <std::size_t L, class X>
    static constexpr bool contains_arg(X*) {
        if constexpr (std::is_same_v<X, cellmath::Arg<L>>) {
            return true;
        } else if constexpr (requires(X x) { x.b; }) {
            return contains_arg<L>(static_cast<decltype(X::a)*>(nullptr)) ||
                   contains_arg<L>(static_cast<decltype(X::b)*>(nullptr));
        } else if constexpr (requires(X x) { x.a; }) {
            return contains_arg<L>(static_cast<decltype(X::a)*>(nullptr));
        } else {
            return false;
        }
    }
    /// True when output k appears inside some other output.
    template <std::size_t k>
    static constexpr bool used() {
        return [&]<std::size_t... m>(std::index_sequence<m...>) {
            return (uses<m, k>() || ...);
        }
        (std::make_index_sequence<M>{});
    }
    /// Sweeps output order[s] for s = 0 .. M-1: users before the outputs they use.
    static constexpr std::array<std::size_t, M> order() {
        std::array<std::size_t, M> result{};
        for (std::size_t s = 0; s < M; ++s) {
            result[s] = kth_largest(s);
        }
        return result;
    }
    /// The rewritten outputs, in output order.
    static auto rewritten_list(const OutputList<E...>& list) {
        return [&]<std::size_t... m>(std::index_sequence<m...>) {
            return make_list(rewritten<m>(list)...);
        }
        (std::make_index_sequence<M>{});
    }
    /// True when every replaced subexpression has the output's constants (not just its type).
    static bool agrees(const OutputList<E...>& list) {
        return [&]<std::size_t... m>(std::index_sequence<m...>) {
            return (agrees_for<m>(list) && ...);
        }
        (std::make_index_sequence<M>{});
    }
    template <std::size_t k>
    static bool agrees_for(const OutputList<E...>& list) {
        return [&]<std::size_t... m>(std::index_sequence<m...>) {
            return ((m == k || sizes[k] >= sizes[m] ||
                     cellmath::matches_agree(output<m>(list), output<k>(list))) &&
                    ...);
        }
        (std::make_index_sequence<M>{});
    }
};

/// Sweeps output m: its gradient is dout[m][j] plus what the outputs using it sent; an output
/// used by others gets that total written back (its column view's gradient).
template <class Plan, std::size_t m, class T, class Rewritten, std::size_t NM, std::size_t M>
CELLGRAD_ALWAYS_INLINE void sweep_output(const Rewritten& rewritten, const std::array<T, NM>& x,
                                         const std::array<T*, M>& dout, std::size_t j,
                                         std::array<T, NM>& dx) {
    constexpr std::size_t N = NM - M;
    T g = dout[m][j];
    if constexpr (Plan::template used<m>()) {
        g += dx[N + m];
        dout[m][j] = g;
    }
    cellmath::backprop(output<m>(rewritten), g, x, dx);
}

/// Sweeps the outputs in the plan's order (users before the outputs they use).
template <class Plan, class T, class Rewritten, std::size_t NM, std::size_t M, std::size_t... s>
CELLGRAD_ALWAYS_INLINE void sweep_outputs(const Rewritten& rewritten, const std::array<T, NM>& x,
                                          const std::array<T*, M>& dout, std::size_t j,
                                          std::array<T, NM>& dx, std::index_sequence<s...>) {
    constexpr auto order = Plan::order();
    (sweep_output<Plan, order[s]>(rewritten, x, dout, j, dx), ...);
}

/// dx[k][j] += sum over m of dout[m][j] * d(output m)/d(argument k) at element j, for j < count,
/// with y the forward's outputs (read where one output stands inside another).
template <class T, class List, class Rewritten, std::size_t N, std::size_t M>
CELLGRAD_POINTWISE_CLONES void backward_span(const Rewritten& rewritten,
                                             std::array<const T*, N + M> in, std::array<T*, M> dout,
                                             std::array<T*, N> dx, std::size_t count) {
    using Plan = Sweep<N, List>;
    CELLGRAD_IVDEP
    for (std::size_t j = 0; j < count; ++j) {
        std::array<T, N + M> x;
        std::array<T, N + M> dxj{};
        load(in, j, x, std::make_index_sequence<N + M>{});
        sweep_outputs<Plan>(rewritten, x, dout, j, dxj, std::make_index_sequence<M>{});
        add_gradients(dx, j, dxj, std::make_index_sequence<N>{});
    }
}

/// Each operand's input value, looked up once per pass instead of once per row.
template <class T, class List, std::size_t N>
std::array<View<const T>, N> operand_values(const Tape<T>& tape, NodeId self,
                                            const Attributes<List, N>& attributes) {
    std::array<View<const T>, N> values;
    for (std::size_t k = 0; k < N; ++k) {
        values[k] = tape.node(tape.inputs(self)[attributes.operands[k].input]).value;
    }
    return values;
}

/// Row r of an operand whose input value is `value` (row 0 when broadcast).
template <class T>
const T* operand_row(View<const T> value, const OperandPlace& place, std::size_t r) {
    return value.row(place.broadcast ? 0 : r) + place.first_col;
}

/// The node's backward: the reverse sweep over every element (outputs used inside others last),
/// then the row sums of broadcast operands and of operands repeated in one call.
template <class T, class List, std::size_t N>
void backward(Tape<T>& tape, NodeId self) {
    constexpr std::size_t M = output_count<List>::value;
    const auto& attributes = tape.template attributes<Attributes<List, N>>(self);
    const std::size_t H = attributes.width;
    const View<T> dy = tape.node(self).grad;       // (B, M*H)
    const View<const T> y = tape.node(self).value; // (B, M*H)
    const std::size_t B = dy.rows;
    const auto rewritten = Sweep<N, List>::rewritten_list(attributes.outputs);
    const std::array<View<const T>, N> values = operand_values(tape, self, attributes);
    // Rows are cut into fixed groups (one row and a column piece each when rows are long). Each
    // operand's gradient goes straight into its input's columns, unless its input needs none
    // (scratch), an earlier operand writes into overlapping columns (scratch rows, added after),
    // or it is a broadcast row: then every group adds its rows into a partial row of its own, and
    // the partials are summed in group order, so the bits do not depend on the thread count.
    const std::size_t grain = costly_grain / 2;
    const bool split_rows = H >= grain;
    const std::size_t rows_per_group = split_rows ? 1 : std::max<std::size_t>(1, grain / H);
    const std::size_t groups = (B + rows_per_group - 1) / rows_per_group;
    enum class Mode { direct, scratch_rows, partial_rows };
    std::array<View<T>, N> target{};
    std::array<Mode, N> mode{};
    View<T> discard; // shared by the operands whose input needs no gradient, made on demand
    const auto zeroed = [&](std::size_t rows) {
        const View<T> buffer = tape.allocate(rows, H);
        std::memset(buffer.data, 0, sizeof(T) * buffer.size());
        return buffer;
    };
    for (std::size_t k = 0; k < N; ++k) {
        const OperandPlace& place = attributes.operands[k];
        const NodeId input = tape.inputs(self)[place.input];
        bool repeated = false;
        for (std::size_t e = 0; e < k; ++e) {
            const OperandPlace& other = attributes.operands[e];
            repeated =
                repeated || (other.input == place.input && other.first_col < place.first_col + H &&
                             place.first_col < other.first_col + H);
        }
        if (!tape.node(input).requires_grad) {
            discard = discard.data != nullptr ? discard : zeroed(B);
            target[k] = discard;
            mode[k] = Mode::scratch_rows;
        } else if (place.broadcast) {
            target[k] = zeroed(groups);
            mode[k] = Mode::partial_rows;
        } else if (repeated) {
            target[k] = zeroed(B);
            mode[k] = Mode::scratch_rows;
        } else {
            const View<T> whole = tape.grad_for_update(input);
            target[k] = {whole.data + place.first_col, B, H, whole.stride};
            mode[k] = Mode::direct;
        }
    }
    const auto sweep_rows = [&](std::size_t first, std::size_t last, std::size_t c0,
                                std::size_t c1) {
        const std::size_t group = first / rows_per_group;
        for (std::size_t r = first; r < last; ++r) {
            std::array<const T*, N + M> in;
            std::array<T*, N> dx;
            for (std::size_t k = 0; k < N; ++k) {
                in[k] = operand_row(values[k], attributes.operands[k], r) + c0;
                dx[k] = target[k].row(mode[k] == Mode::partial_rows ? group : r) + c0;
            }
            std::array<T*, M> dout;
            for (std::size_t m = 0; m < M; ++m) {
                in[N + m] = y.row(r) + m * H + c0;
                dout[m] = dy.row(r) + m * H + c0;
            }
            backward_span<T, List>(rewritten, in, dout, dx, c1 - c0);
        }
    };
    if (split_rows) {
        const std::size_t pieces_per_row = (H + grain - 1) / grain;
        parallel_chunks(B * pieces_per_row, 1, [&](std::size_t first, std::size_t last) {
            for (std::size_t piece = first; piece < last; ++piece) {
                const std::size_t r = piece / pieces_per_row;
                const std::size_t c0 = (piece % pieces_per_row) * grain;
                sweep_rows(r, r + 1, c0, std::min(c0 + grain, H));
            }
        });
    } else {
        parallel_chunks(B, rows_per_group, [&](std::size_t first, std::size_t last) {
            sweep_rows(first, last, 0, H);
        });
    }
    for (std::size_t k = 0; k < N; ++k) {
        const OperandPlace& place = attributes.operands[k];
        if (mode[k] == Mode::direct || target[k].data == discard.data) {
            continue;
        }
        const View<T> whole = tape.grad_for_update(tape.inputs(self)[place.input]);
        const View<const T> rows = target[k];
        const bool partial = mode[k] == Mode::partial_rows;
        for_each_piece(partial ? 1 : B, H, cheap_grain,
                       [&](std::size_t r, std::size_t c0, std::size_t c1) {
                           T* g = whole.row(r) + place.first_col;
                           // A broadcast operand sums its groups' partial rows in group order.
                           const std::size_t first = partial ? 0 : r;
                           const std::size_t last = partial ? rows.rows : r + 1;
                           for (std::size_t i = first; i < last; ++i) {
                               for (std::size_t c = c0; c < c1; ++c) {
                                   g[c] += rows(i, c);
                               }
                           }
                       });
    }
}

/// Evaluates every named intermediate of the node's math (each name once) into a (B, H) buffer
/// and keeps it on the tape for inspection (Tape::keep_intermediates).
template <class T, class List, std::size_t N>
void keep_named_values(Tape<T>& tape, NodeId self, const Attributes<List, N>& attributes,
                       std::size_t B, std::size_t H) {
    const std::array<View<const T>, N> inputs = operand_values(tape, self, attributes);
    std::vector<const char*> seen;
    const auto keep = [&](const char* name, const auto& expression) {
        for (const char* other : seen) {
            if (std::strcmp(other, name) == 0) {
                return;
            }
        }
        seen.push_back(name);
        const View<T> values = tape.allocate(B, H);
        for (std::size_t r = 0; r < B; ++r) {
            for (std::size_t j = 0; j < H; ++j) {
                std::array<T, N> x;
                for (std::size_t k = 0; k < N; ++k) {
                    x[k] = operand_row(inputs[k], attributes.operands[k], r)[j];
                }
                values(r, j) = cellmath::evaluate(expression, x);
            }
        }
        tape.add_intermediate(name, values);
    };
    [&]<std::size_t... m>(std::index_sequence<m...>) {
        (cellmath::for_each_named(output<m>(attributes.outputs), keep), ...);
    }
    (std::make_index_sequence<output_count<List>::value>{});
}

} // namespace pointwise_detail

} // namespace cellgrad
