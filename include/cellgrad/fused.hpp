// Fused gate nodes: the elementwise part of an LSTM or GRU step as one node with its own backward.
//
// They compute exactly what the composed cells in nn/cells.cpp compute (tests hold them equal to
// float64 rounding, forward and gradients); they exist because the composed cell spends most of a
// small model's step in a dozen tiny elementwise nodes. The composed cells stay available
// (CellOptions::fused = false) and remain the readable reference.
#pragma once

#include "cellgrad/tape.hpp"

namespace cellgrad {

/// LSTM remember gate: for pre-activations a = [a_i|a_f|a_g|a_o] (B, 4H) and c (B, H),
/// c' = sigmoid(a_f)*c + sigmoid(a_i)*tanh(a_g) (B, H);
/// backward: da_i += dc' g i(1-i), da_f += dc' c f(1-f), da_g += dc' i (1-g^2), dc += dc' f.
template <class T>
Var<T> lstm_cell_state(const Var<T>& pre_activations, const Var<T>& c);

/// LSTM use gate: h' = sigmoid(a_o) * tanh(c') (B, H) from the same pre-activations and c';
/// backward: da_o += dh' tanh(c') o(1-o), dc' += dh' o (1 - tanh^2 c').
/// Two nodes rather than one so that c' is a node of its own: its gradient is the full dL/dc_t.
template <class T>
Var<T> lstm_hidden_state(const Var<T>& pre_activations, const Var<T>& c_new);

/// GRU gates: for projected input x = [x_r|x_z|x_n] (B, 3H), projected hidden p = [p_r|p_z|p_n]
/// (B, 3H, with b_hh) and h (B, H), returns h' = (1-z)*n + z*h with r = sigmoid(x_r + p_r),
/// z = sigmoid(x_z + p_z), n = tanh(x_n + r*p_n);
/// backward: dn~ = dh'(1-z)(1-n^2), dz~ = dh'(h-n) z(1-z), dr~ = dn~ p_n r(1-r),
/// dx = [dr~|dz~|dn~], dp = [dr~|dz~|dn~ r], dh = dh' z.
template <class T>
Var<T> gru_gates(const Var<T>& projected_input, const Var<T>& projected_hidden, const Var<T>& h);

} // namespace cellgrad
