// Moved: the fast float math is public now (pointwise.hpp evaluates cells with it).
#pragma once
#include "cellgrad/detail/fast_math.hpp"
