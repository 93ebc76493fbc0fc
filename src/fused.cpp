#include "cellgrad/fused.hpp"

#include "cellgrad/parallel.hpp"
#include "fast_math.hpp"

// The row kernels are compiled for AVX-512, AVX2+FMA and the baseline; the loader picks one.
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define CELLGRAD_TARGET_CLONES                                                                     \
    __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
#else
#define CELLGRAD_TARGET_CLONES
#endif

namespace cellgrad {

namespace {

/// Rows per task so that a task gets about `grain` elements.
std::size_t rows_per_task(std::size_t cols, std::size_t grain) {
    return std::max<std::size_t>(1, grain / std::max<std::size_t>(cols, 1));
}

/// One row of the LSTM forward; saved = [i|f|g|o|tanh c'] (5H).
template <class T>
CELLGRAD_TARGET_CLONES void lstm_forward_row(const T* __restrict a, const T* __restrict c,
                                             T* __restrict out, T* __restrict saved,
                                             std::size_t H) {
    for (std::size_t j = 0; j < H; ++j) {
        const T i = fast_math::sigmoid<T>(a[j]);
        const T f = fast_math::sigmoid<T>(a[H + j]);
        const T g = fast_math::tanh<T>(a[2 * H + j]);
        const T o = fast_math::sigmoid<T>(a[3 * H + j]);
        const T c_new = f * c[j] + i * g;
        const T tanh_c = fast_math::tanh<T>(c_new);
        out[j] = o * tanh_c;
        out[H + j] = c_new;
        saved[j] = i;
        saved[H + j] = f;
        saved[2 * H + j] = g;
        saved[3 * H + j] = o;
        saved[4 * H + j] = tanh_c;
    }
}

/// One row of the LSTM backward: adds into da (4H) and, when dc != nullptr, into dc (H).
template <class T>
CELLGRAD_TARGET_CLONES void lstm_backward_row(const T* __restrict dout, const T* __restrict saved,
                                              const T* __restrict c, T* __restrict da,
                                              T* __restrict dc, std::size_t H) {
    for (std::size_t j = 0; j < H; ++j) {
        const T i = saved[j];
        const T f = saved[H + j];
        const T g = saved[2 * H + j];
        const T o = saved[3 * H + j];
        const T tanh_c = saved[4 * H + j];
        const T dh = dout[j];
        const T dc_total = dout[H + j] + dh * o * (T(1) - tanh_c * tanh_c);
        da[j] += dc_total * g * i * (T(1) - i);
        da[H + j] += dc_total * c[j] * f * (T(1) - f);
        da[2 * H + j] += dc_total * i * (T(1) - g * g);
        da[3 * H + j] += dh * tanh_c * o * (T(1) - o);
    }
    if (dc != nullptr) {
        for (std::size_t j = 0; j < H; ++j) {
            const T o = saved[3 * H + j];
            const T tanh_c = saved[4 * H + j];
            dc[j] += (dout[H + j] + dout[j] * o * (T(1) - tanh_c * tanh_c)) * saved[H + j];
        }
    }
}

/// One row of the GRU forward; saved = [r|z|n] (3H).
template <class T>
CELLGRAD_TARGET_CLONES void gru_forward_row(const T* __restrict x, const T* __restrict p,
                                            const T* __restrict h, T* __restrict out,
                                            T* __restrict saved, std::size_t H) {
    for (std::size_t j = 0; j < H; ++j) {
        const T r = fast_math::sigmoid<T>(x[j] + p[j]);
        const T z = fast_math::sigmoid<T>(x[H + j] + p[H + j]);
        const T n = fast_math::tanh<T>(x[2 * H + j] + r * p[2 * H + j]);
        out[j] = (T(1) - z) * n + z * h[j];
        saved[j] = r;
        saved[H + j] = z;
        saved[2 * H + j] = n;
    }
}

/// One row of the GRU backward: writes the pre-activation gradients [dr~|dz~|dn~] into `pre`.
template <class T>
CELLGRAD_TARGET_CLONES void gru_backward_row(const T* __restrict dout, const T* __restrict saved,
                                             const T* __restrict p, const T* __restrict h,
                                             T* __restrict pre, std::size_t H) {
    for (std::size_t j = 0; j < H; ++j) {
        const T r = saved[j];
        const T z = saved[H + j];
        const T n = saved[2 * H + j];
        const T dn = dout[j] * (T(1) - z) * (T(1) - n * n);
        pre[j] = dn * p[2 * H + j] * r * (T(1) - r);
        pre[H + j] = dout[j] * (h[j] - n) * z * (T(1) - z);
        pre[2 * H + j] = dn;
    }
}

} // namespace

template <class T>
Var<T> lstm_gates(const Var<T>& pre_activations, const Var<T>& c) {
    Tape<T>& tape = pre_activations.tape();
    const Shape sa = pre_activations.shape();
    const Shape sc = c.shape();
    if (&c.tape() != &tape) {
        throw Error("lstm_gates: the two operands belong to different tapes");
    }
    if (sa.cols % 4 != 0 || sc.rows != sa.rows || sc.cols * 4 != sa.cols) {
        throw Error(fmt::format("lstm_gates: pre-activations {} and cell state {} must be (B, 4H) "
                                "and (B, H)",
                                sa, sc));
    }
    const std::size_t H = sc.cols;
    const NodeId id = tape.record("lstm_gates", {pre_activations, c}, sa.rows, 2 * H);
    const View<T> saved = tape.allocate(sa.rows, 5 * H);
    const View<T> out = tape.node(id).value;
    const View<const T> a = pre_activations.value();
    const View<const T> cv = c.value();
    parallel_chunks(sa.rows, rows_per_task(5 * H, costly_grain),
                    [&](std::size_t r0, std::size_t r1) {
                        for (std::size_t r = r0; r < r1; ++r) {
                            lstm_forward_row<T>(a.row(r), cv.row(r), out.row(r), saved.row(r), H);
                        }
                    });
    tape.node(id).saved = saved;
    tape.set_backward(id, [](Tape<T>& tape, NodeId self) {
        const Node<T>& node = tape.node(self);
        const auto in = tape.inputs(self);
        const bool a_needs = tape.node(in[0]).requires_grad;
        const bool c_needs = tape.node(in[1]).requires_grad;
        const std::size_t H = node.value.cols / 2;
        const View<const T> dout = node.grad;
        const View<const T> saved = node.saved;
        const View<const T> c = tape.node(in[1]).value;
        // A (B, 4H) scratch when the pre-activations need no gradient keeps the kernel branch-free.
        const View<T> da = a_needs ? tape.grad_for_update(in[0]) : tape.allocate(dout.rows, 4 * H);
        const View<T> dc = c_needs ? tape.grad_for_update(in[1]) : View<T>{};
        parallel_chunks(dout.rows, rows_per_task(7 * H, costly_grain),
                        [&](std::size_t r0, std::size_t r1) {
                            for (std::size_t r = r0; r < r1; ++r) {
                                lstm_backward_row<T>(dout.row(r), saved.row(r), c.row(r), da.row(r),
                                                     c_needs ? dc.row(r) : nullptr, H);
                            }
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
    parallel_chunks(
        sh.rows, rows_per_task(4 * H, costly_grain), [&](std::size_t r0, std::size_t r1) {
            for (std::size_t r = r0; r < r1; ++r) {
                gru_forward_row<T>(x.row(r), p.row(r), hv.row(r), out.row(r), saved.row(r), H);
            }
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
        parallel_chunks(dout.rows, rows_per_task(6 * H, costly_grain),
                        [&](std::size_t r0, std::size_t r1) {
                            for (std::size_t r = r0; r < r1; ++r) {
                                gru_backward_row<T>(dout.row(r), saved.row(r), p.row(r), hv.row(r),
                                                    pre.row(r), H);
                            }
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

template Var<float> lstm_gates(const Var<float>&, const Var<float>&);
template Var<double> lstm_gates(const Var<double>&, const Var<double>&);
template Var<float> gru_gates(const Var<float>&, const Var<float>&, const Var<float>&);
template Var<double> gru_gates(const Var<double>&, const Var<double>&, const Var<double>&);

} // namespace cellgrad
