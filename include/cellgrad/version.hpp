// The library's version, as set by project(cellgrad VERSION ...) in CMakeLists.txt.
#pragma once

#include <string>

namespace cellgrad {

/// The version of the linked library, "MAJOR.MINOR.PATCH" (e.g. "0.2.0").
const char* version();

/// The major part of version() (incompatible API changes).
int version_major();

/// The minor part of version() (additions).
int version_minor();

/// The patch part of version() (fixes).
int version_patch();

/// "<program> (cellgrad X.Y.Z)": what every example program prints for --version.
std::string version_line(const std::string& program);

} // namespace cellgrad
