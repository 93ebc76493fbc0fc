// cellgrad::version(): the numbers come from CMake (project(cellgrad VERSION ...)) as compile
// definitions of this file only, so a version bump rebuilds one file.
#include "cellgrad/version.hpp"

#if !defined(CELLGRAD_VERSION_STRING) || !defined(CELLGRAD_VERSION_MAJOR) ||                       \
    !defined(CELLGRAD_VERSION_MINOR) || !defined(CELLGRAD_VERSION_PATCH)
#error "CELLGRAD_VERSION_* come from CMakeLists.txt (set_source_files_properties on this file)"
#endif

namespace cellgrad {

const char* version() {
    return CELLGRAD_VERSION_STRING;
}

int version_major() {
    return CELLGRAD_VERSION_MAJOR;
}

int version_minor() {
    return CELLGRAD_VERSION_MINOR;
}

int version_patch() {
    return CELLGRAD_VERSION_PATCH;
}

std::string version_line(const std::string& program) {
    return program + " (cellgrad " + version() + ")";
}

} // namespace cellgrad
