#include "cellgrad/fused.hpp"

#include "cellgrad/parallel.hpp"
#include "fast_math.hpp"

// The row kernels are compiled for AVX-512, AVX2+FMA and the baseline; the loader picks one.
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define CELLGRAD_TARGET_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CELLGRAD_TARGET_CLONES
#endif

namespace cellgrad {

namespace {

/// Calls row_body(r) for every row r < rows, in fixed tasks of about costly_grain elements when a
/// row touches `cols_per_row` of them.
template <class Body>
void for_each_row(std::size_t rows, std::size_t cols_per_row, const Body& row_body) {
    const std::size_t rows_per_task =
        std::max<std::size_t>(1, costly_grain / std::max<std::size_t>(cols_per_row, 1));
    parallel_chunks(rows, rows_per_task, [&](std::size_t first, std::size_t last) {
        for (std::size_t r = first; r < last; ++r) {
            row_body(r);
        }
    });
}

/// One row of the LSTM cell-state update c' = f*c + i*g; saved = [i|f|g] (3H).
template <class T>
CELLGRAD_TARGET_CLONES void lstm_cell_forward_row(const T* __restrict a, const T* __restrict c,
                                                  T* __restrict c_new, T* __restrict saved,
                                                  std::size_t H) {
    const T* __restrict a_i = a;
    const T* __restrict a_f = a + H;
    const T* __restrict a_g = a + 2 * H;
    T* __restrict s_i = saved;
    T* __restrict s_f = saved + H;
    T* __restrict s_g = saved + 2 * H;
    for (std::size_t j = 0; j < H; ++j) {
        const T i = fast_math::sigmoid<T>(a_i[j]);
        const T f = fast_math::sigmoid<T>(a_f[j]);
        const T g = fast_math::tanh<T>(a_g[j]);
        c_new[j] = f * c[j] + i * g;
        s_i[j] = i;
        s_f[j] = f;
        s_g[j] = g;
    }
}

/// One row of its backward: adds into da's i, f, g blocks and, when dc != nullptr, into dc.
template <class T>
CELLGRAD_TARGET_CLONES void
lstm_cell_backward_row(const T* __restrict dc_new, const T* __restrict saved, const T* __restrict c,
                       T* __restrict da, T* __restrict dc, std::size_t H) {
    const T* __restrict s_i = saved;
    const T* __restrict s_f = saved + H;
    const T* __restrict s_g = saved + 2 * H;
    T* __restrict da_i = da;
    T* __restrict da_f = da + H;
    T* __restrict da_g = da + 2 * H;
    for (std::size_t j = 0; j < H; ++j) {
        const T i = s_i[j];
        const T f = s_f[j];
        const T g = s_g[j];
        da_i[j] += dc_new[j] * g * i * (T(1) - i);
        da_f[j] += dc_new[j] * c[j] * f * (T(1) - f);
        da_g[j] += dc_new[j] * i * (T(1) - g * g);
    }
    if (dc != nullptr) {
        for (std::size_t j = 0; j < H; ++j) {
            dc[j] += dc_new[j] * s_f[j];
        }
    }
}

/// One row of the LSTM output h' = o * tanh(c'); saved = [o|tanh c'] (2H).
template <class T>
CELLGRAD_TARGET_CLONES void lstm_hidden_forward_row(const T* __restrict a_o,
                                                    const T* __restrict c_new, T* __restrict h_new,
                                                    T* __restrict saved, std::size_t H) {
    T* __restrict s_o = saved;
    T* __restrict s_tanh_c = saved + H;
    for (std::size_t j = 0; j < H; ++j) {
        const T o = fast_math::sigmoid<T>(a_o[j]);
        const T tanh_c = fast_math::tanh<T>(c_new[j]);
        h_new[j] = o * tanh_c;
        s_o[j] = o;
        s_tanh_c[j] = tanh_c;
    }
}

/// One row of its backward: adds into da's o block and, when dc_new != nullptr, into dc_new.
template <class T>
CELLGRAD_TARGET_CLONES void lstm_hidden_backward_row(const T* __restrict dh,
                                                     const T* __restrict saved, T* __restrict da_o,
                                                     T* __restrict dc_new, std::size_t H) {
    const T* __restrict s_o = saved;
    const T* __restrict s_tanh_c = saved + H;
    for (std::size_t j = 0; j < H; ++j) {
        da_o[j] += dh[j] * s_tanh_c[j] * s_o[j] * (T(1) - s_o[j]);
    }
    if (dc_new != nullptr) {
        for (std::size_t j = 0; j < H; ++j) {
            dc_new[j] += dh[j] * s_o[j] * (T(1) - s_tanh_c[j] * s_tanh_c[j]);
        }
    }
}

/// One row of the GRU forward; saved = [r|z|n] (3H).
template <class T>
CELLGRAD_TARGET_CLONES void gru_forward_row(const T* __restrict x, const T* __restrict p,
                                            const T* __restrict h, T* __restrict out,
                                            T* __restrict saved, std::size_t H) {
    const T* __restrict x_r = x;
    const T* __restrict x_z = x + H;
    const T* __restrict x_n = x + 2 * H;
    const T* __restrict p_r = p;
    const T* __restrict p_z = p + H;
    const T* __restrict p_n = p + 2 * H;
    T* __restrict s_r = saved;
    T* __restrict s_z = saved + H;
    T* __restrict s_n = saved + 2 * H;
    for (std::size_t j = 0; j < H; ++j) {
        const T r = fast_math::sigmoid<T>(x_r[j] + p_r[j]);
        const T z = fast_math::sigmoid<T>(x_z[j] + p_z[j]);
        const T n = fast_math::tanh<T>(x_n[j] + r * p_n[j]);
        out[j] = (T(1) - z) * n + z * h[j];
        s_r[j] = r;
        s_z[j] = z;
        s_n[j] = n;
    }
}

/// One row of the GRU backward: writes the pre-activation gradients [dr~|dz~|dn~] into `pre`.
template <class T>
CELLGRAD_TARGET_CLONES void gru_backward_row(const T* __restrict dout, const T* __restrict saved,
                                             const T* __restrict p, const T* __restrict h,
                                             T* __restrict pre, std::size_t H) {
    const T* __restrict s_r = saved;
    const T* __restrict s_z = saved + H;
    const T* __restrict s_n = saved + 2 * H;
    const T* __restrict p_n = p + 2 * H;
    T* __restrict pre_r = pre;
    T* __restrict pre_z = pre + H;
    T* __restrict pre_n = pre + 2 * H;
    for (std::size_t j = 0; j < H; ++j) {
        const T r = s_r[j];
        const T z = s_z[j];
        const T n = s_n[j];
        const T dn = dout[j] * (T(1) - z) * (T(1) - n * n);
        pre_r[j] = dn * p_n[j] * r * (T(1) - r);
        pre_z[j] = dout[j] * (h[j] - n) * z * (T(1) - z);
        pre_n[j] = dn;
    }
}

} // namespace

namespace {

/// Checks (B, 4H) pre-activations against a (B, H) state for `op`; returns H.
template <class T>
std::size_t lstm_hidden_size(const char* op, const Var<T>& pre_activations, const Var<T>& state) {
    const Shape sa = pre_activations.shape();
    const Shape sc = state.shape();
    if (&state.tape() != &pre_activations.tape()) {
        throw Error(fmt::format("{}: the two operands belong to different tapes", op));
    }
    if (sa.cols % 4 != 0 || sc.rows != sa.rows || sc.cols * 4 != sa.cols) {
        throw Error(fmt::format("{}: pre-activations {} and cell state {} must be (B, 4H) and "
                                "(B, H)",
                                op, sa, sc));
    }
    return sc.cols;
}

/// Gradient buffer of the (B, 4H) pre-activations for an LSTM node's backward: the real one, or a
/// scratch buffer when they need no gradient, so that the row kernels stay branch-free.
template <class T>
View<T> gates_gradient(Tape<T>& tape, NodeId pre_activations, std::size_t rows, std::size_t H) {
    return tape.node(pre_activations).requires_grad ? tape.grad_for_update(pre_activations)
                                                    : tape.allocate(rows, 4 * H);
}

} // namespace

template <class T>
Var<T> lstm_cell_state(const Var<T>& pre_activations, const Var<T>& c) {
    Tape<T>& tape = pre_activations.tape();
    const std::size_t H = lstm_hidden_size("lstm_cell_state", pre_activations, c);
    const std::size_t B = c.rows();
    const NodeId id = tape.record("lstm_cell_state", {pre_activations, c}, B, H);
    const View<T> saved = tape.allocate(B, 3 * H);
    const View<T> out = tape.node(id).value;
    const View<const T> a = pre_activations.value();
    const View<const T> cv = c.value();
    for_each_row(B, 4 * H, [&](std::size_t r) {
        lstm_cell_forward_row<T>(a.row(r), cv.row(r), out.row(r), saved.row(r), H);
    });
    tape.node(id).saved = saved;
    tape.set_backward(id, [](Tape<T>& tape, NodeId self) {
        const Node<T>& node = tape.node(self);
        const auto in = tape.inputs(self);
        const bool c_needs = tape.node(in[1]).requires_grad;
        const std::size_t H = node.value.cols;
        const View<const T> dc_new = node.grad;
        const View<const T> saved = node.saved;
        const View<const T> c = tape.node(in[1]).value;
        const View<T> da = gates_gradient(tape, in[0], dc_new.rows, H);
        const View<T> dc = c_needs ? tape.grad_for_update(in[1]) : View<T>{};
        for_each_row(dc_new.rows, 6 * H, [&](std::size_t r) {
            lstm_cell_backward_row<T>(dc_new.row(r), saved.row(r), c.row(r), da.row(r),
                                      c_needs ? dc.row(r) : nullptr, H);
        });
    });
    tape.check_forward(id);
    return Var<T>(&tape, id);
}

template <class T>
Var<T> lstm_hidden_state(const Var<T>& pre_activations, const Var<T>& c_new) {
    Tape<T>& tape = pre_activations.tape();
    const std::size_t H = lstm_hidden_size("lstm_hidden_state", pre_activations, c_new);
    const std::size_t B = c_new.rows();
    const NodeId id = tape.record("lstm_hidden_state", {pre_activations, c_new}, B, H);
    const View<T> saved = tape.allocate(B, 2 * H);
    const View<T> out = tape.node(id).value;
    const View<const T> a = pre_activations.value();
    const View<const T> cv = c_new.value();
    for_each_row(B, 3 * H, [&](std::size_t r) {
        lstm_hidden_forward_row<T>(a.row(r) + 3 * H, cv.row(r), out.row(r), saved.row(r), H);
    });
    tape.node(id).saved = saved;
    tape.set_backward(id, [](Tape<T>& tape, NodeId self) {
        const Node<T>& node = tape.node(self);
        const auto in = tape.inputs(self);
        const bool c_needs = tape.node(in[1]).requires_grad;
        const std::size_t H = node.value.cols;
        const View<const T> dh = node.grad;
        const View<const T> saved = node.saved;
        const View<T> da = gates_gradient(tape, in[0], dh.rows, H);
        const View<T> dc = c_needs ? tape.grad_for_update(in[1]) : View<T>{};
        for_each_row(dh.rows, 4 * H, [&](std::size_t r) {
            lstm_hidden_backward_row<T>(dh.row(r), saved.row(r), da.row(r) + 3 * H,
                                        c_needs ? dc.row(r) : nullptr, H);
        });
    });
    tape.check_forward(id);
    return Var<T>(&tape, id);
}

template <class T>
Var<T> gru_gates(const Var<T>& projected_input, const Var<T>& projected_hidden, const Var<T>& h) {
    Tape<T>& tape = projected_input.tape();
    const Shape sx = projected_input.shape();
    const Shape sp = projected_hidden.shape();
    const Shape sh = h.shape();
    if (&projected_hidden.tape() != &tape || &h.tape() != &tape) {
        throw Error("gru_gates: the operands belong to different tapes");
    }
    if (sx != sp || sh.rows != sx.rows || sh.cols * 3 != sx.cols) {
        throw Error(fmt::format("gru_gates: projected input {}, projected hidden {} and h {} must "
                                "be (B, 3H), (B, 3H) and (B, H)",
                                sx, sp, sh));
    }
    const std::size_t H = sh.cols;
    const NodeId id = tape.record("gru_gates", {projected_input, projected_hidden, h}, sh.rows, H);
    const View<T> saved = tape.allocate(sh.rows, 3 * H);
    const View<T> out = tape.node(id).value;
    const View<const T> x = projected_input.value();
    const View<const T> p = projected_hidden.value();
    const View<const T> hv = h.value();
    for_each_row(sh.rows, 4 * H, [&](std::size_t r) {
        gru_forward_row<T>(x.row(r), p.row(r), hv.row(r), out.row(r), saved.row(r), H);
    });
    tape.node(id).saved = saved;
    tape.set_backward(id, [](Tape<T>& tape, NodeId self) {
        const Node<T>& node = tape.node(self);
        const auto in = tape.inputs(self);
        const std::size_t H = node.value.cols;
        const View<const T> dout = node.grad;
        const View<const T> saved = node.saved;
        const View<const T> p = tape.node(in[1]).value;
        const View<const T> hv = tape.node(in[2]).value;
        const View<T> pre = tape.allocate(dout.rows, 3 * H);
        for_each_row(dout.rows, 6 * H, [&](std::size_t r) {
            gru_backward_row<T>(dout.row(r), saved.row(r), p.row(r), hv.row(r), pre.row(r), H);
        });
        if (tape.node(in[0]).requires_grad) {
            const View<T> dx = tape.grad_for_update(in[0]);
            for (std::size_t r = 0; r < dout.rows; ++r) {
                for (std::size_t j = 0; j < 3 * H; ++j) {
                    dx(r, j) += pre(r, j);
                }
            }
        }
        if (tape.node(in[1]).requires_grad) {
            const View<T> dp = tape.grad_for_update(in[1]);
            for (std::size_t r = 0; r < dout.rows; ++r) {
                for (std::size_t j = 0; j < 2 * H; ++j) {
                    dp(r, j) += pre(r, j);
                }
                for (std::size_t j = 0; j < H; ++j) {
                    dp(r, 2 * H + j) += pre(r, 2 * H + j) * saved(r, j);
                }
            }
        }
        if (tape.node(in[2]).requires_grad) {
            const View<T> dh = tape.grad_for_update(in[2]);
            for (std::size_t r = 0; r < dout.rows; ++r) {
                for (std::size_t j = 0; j < H; ++j) {
                    dh(r, j) += dout(r, j) * saved(r, H + j);
                }
            }
        }
    });
    tape.check_forward(id);
    return Var<T>(&tape, id);
}

template Var<float> lstm_cell_state(const Var<float>&, const Var<float>&);
template Var<double> lstm_cell_state(const Var<double>&, const Var<double>&);
template Var<float> lstm_hidden_state(const Var<float>&, const Var<float>&);
template Var<double> lstm_hidden_state(const Var<double>&, const Var<double>&);
template Var<float> gru_gates(const Var<float>&, const Var<float>&, const Var<float>&);
template Var<double> gru_gates(const Var<double>&, const Var<double>&, const Var<double>&);

} // namespace cellgrad
