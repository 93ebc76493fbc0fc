// Umbrella header for the optimizers and gradient clipping.
#pragma once

#include "cellgrad/optim/adagrad.hpp"
#include "cellgrad/optim/adam.hpp"
#include "cellgrad/optim/clip_grad.hpp"
#include "cellgrad/optim/optimizer.hpp"
#include "cellgrad/optim/rmsprop.hpp"
#include "cellgrad/optim/sgd.hpp"
