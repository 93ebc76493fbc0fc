// Every cell by name: what char_rnn, adding_problem and the labs select with --cell.
#pragma once

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cellgrad/nn/cells/variants.hpp"
#include "cellgrad/nn/recurrent.hpp"

namespace cellgrad::nn {

/// The names make_recurrent knows: rnn, lstm, gru, then the variants (lesson-lstm, ...).
const std::vector<std::string>& cell_names();

/// The stacked weights' layout of a cell: weight_ih is (gates * H, in), weight_hh is
/// (gates * H, recurrent_inputs * H).
struct CellShape {
    std::size_t gates;
    std::size_t recurrent_inputs;
};

/// The layout of cell `name` (see cell_names()); throws for an unknown name.
CellShape cell_shape(const std::string& name);

/// A sequence layer of cell `name` built with `options` (forget_bias applies to the cells with a
/// forget gate); throws an error listing cell_names() for an unknown name.
template <class T>
std::unique_ptr<Recurrent<T>> make_recurrent(const std::string& name,
                                             const RecurrentOptions& options, std::mt19937_64& rng);

} // namespace cellgrad::nn
