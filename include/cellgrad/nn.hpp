// Umbrella header for the neural-network layers.
#pragma once

#include "cellgrad/nn/cells.hpp"
#include "cellgrad/nn/cells/registry.hpp"
#include "cellgrad/nn/linear.hpp"
#include "cellgrad/nn/module.hpp"
#include "cellgrad/nn/recurrent.hpp"
