// Umbrella header: everything a user of cellgrad needs.
#pragma once

#include "cellgrad/grad_check.hpp"
#include "cellgrad/ops.hpp"
#include "cellgrad/parallel.hpp"
#include "cellgrad/tape.hpp"
#include "cellgrad/tensor.hpp"
#include "cellgrad/version.hpp"
