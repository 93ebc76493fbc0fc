// cellgrad::version(): generated from project(cellgrad VERSION ...) and consistent with its parts.
#include <doctest/doctest.h>

#include <string>

#include <fmt/format.h>

#include "cellgrad/cellgrad.hpp"

#ifndef CELLGRAD_PROJECT_VERSION
#error "tests/CMakeLists.txt passes CELLGRAD_PROJECT_VERSION (the CMake project version)"
#endif

TEST_CASE("version() is the CMake project version the library was configured with") {
    CHECK(std::string(cellgrad::version()) == CELLGRAD_PROJECT_VERSION);
}

TEST_CASE("version() is MAJOR.MINOR.PATCH of version_major/minor/patch") {
    const std::string parts = fmt::format("{}.{}.{}", cellgrad::version_major(),
                                          cellgrad::version_minor(), cellgrad::version_patch());
    CHECK(parts == cellgrad::version());
    CHECK(cellgrad::version_major() >= 0);
    // 0.2.0 is the first numbered release (CHANGELOG.md); the version only goes up.
    CHECK((cellgrad::version_major() > 0 || cellgrad::version_minor() >= 2));
}

TEST_CASE("version_line names the program and the library version") {
    CHECK(cellgrad::version_line("char_rnn") ==
          std::string("char_rnn (cellgrad ") + CELLGRAD_PROJECT_VERSION + ")");
}
