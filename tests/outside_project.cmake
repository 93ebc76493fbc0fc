# A user's view of the installed package: installs the build to a fresh prefix, checks the licence
# is there, builds examples/first_model as a separate project with find_package(cellgrad 0.2
# REQUIRED), runs it, and checks which versions find_package accepts (0.2 only, before 1.0).
# Usage: cmake -DBUILD_DIR=<cellgrad build> -DSOURCE_DIR=<repo> -DWORK_DIR=<scratch> \
#          -DVERSION=<project version> -DCXX_COMPILER=<compiler> -P outside_project.cmake
cmake_minimum_required(VERSION 3.20)
foreach(var BUILD_DIR SOURCE_DIR WORK_DIR VERSION CXX_COMPILER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "outside_project: -D${var}=... is required")
  endif()
endforeach()

# Runs a command; stops with its output if it fails; its output goes to `run_output`.
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " command "${ARGN}")
    message(FATAL_ERROR "outside_project: '${command}' failed (${rc}):\n${out}")
  endif()
  set(run_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")

message(STATUS "cmake --install ${BUILD_DIR} --prefix ${prefix}")
run("${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}")
file(GLOB_RECURSE licence "${prefix}/share/doc/cellgrad/LICENSE")
if(NOT licence)
  message(FATAL_ERROR "outside_project: the package installs no share/doc/cellgrad/LICENSE")
endif()
file(READ "${licence}" installed_licence)
file(READ "${SOURCE_DIR}/LICENSE" source_licence)
if(NOT installed_licence STREQUAL source_licence)
  message(FATAL_ERROR "outside_project: the installed LICENSE differs from the repository's")
endif()

message(STATUS "examples/first_model as an outside project against ${prefix}")
set(outside "${WORK_DIR}/first_model")
run("${CMAKE_COMMAND}" -S "${SOURCE_DIR}/examples/first_model" -B "${outside}"
    "-DCMAKE_PREFIX_PATH=${prefix}" "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}"
    -DCMAKE_BUILD_TYPE=Release)
file(STRINGS "${outside}/CMakeCache.txt" found_dir REGEX "^cellgrad_DIR:")
string(FIND "${found_dir}" "${prefix}/" in_prefix)
if(in_prefix EQUAL -1)
  message(FATAL_ERROR "outside_project: found cellgrad outside the fresh prefix: ${found_dir}")
endif()
run("${CMAKE_COMMAND}" --build "${outside}" -j 2)
run("${outside}/first_model" --version)
if(NOT run_output STREQUAL "first_model (cellgrad ${VERSION})\n")
  message(FATAL_ERROR "outside_project: first_model --version printed '${run_output}'")
endif()
run("${CMAKE_COMMAND}" "-DPROGRAM=${outside}/first_model" -P
    "${CMAKE_CURRENT_LIST_DIR}/check_first_model.cmake")

# find_package(cellgrad <want>): accepted for the installed minor version only.
string(REGEX MATCH "^[0-9]+\\.[0-9]+" minor "${VERSION}")
string(REGEX MATCH "^[0-9]+" major "${VERSION}")
math(EXPR next_major "${major} + 1")
string(REGEX REPLACE "^([0-9]+)\\.([0-9]+).*" "\\2" minor_number "${VERSION}")
math(EXPR next_minor "${minor_number} + 1")
set(cases "${minor}:1" "${VERSION}:1" "${major}.${next_minor}:0" "${next_major}.0:0")
if(major EQUAL 0 AND minor_number GREATER 0)
  math(EXPR previous_minor "${minor_number} - 1")
  list(APPEND cases "0.${previous_minor}:0") # before 1.0 a minor release may break the API
endif()
foreach(case ${cases})
  string(REPLACE ":" ";" case "${case}")
  list(GET case 0 want)
  list(GET case 1 expect_found)
  run("${CMAKE_COMMAND}" -S "${CMAKE_CURRENT_LIST_DIR}/outside/version_probe"
      -B "${WORK_DIR}/probe-${want}" "-DCMAKE_PREFIX_PATH=${prefix}" "-DWANT=${want}"
      "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
  if(run_output MATCHES "found '(1|TRUE)', version '${VERSION}'")
    set(found 1)
  else()
    set(found 0)
  endif()
  if(NOT found EQUAL expect_found)
    message(FATAL_ERROR "outside_project: find_package(cellgrad ${want}) with ${VERSION} "
      "installed: found = ${found}, expected ${expect_found}\n${run_output}")
  endif()
  message(STATUS "find_package(cellgrad ${want}) with ${VERSION} installed: found = ${found}")
  if(want STREQUAL minor)
    set(accepted_output "${run_output}")
  endif()
endforeach()
if(NOT accepted_output MATCHES "licence 'Apache-2.0'")
  message(FATAL_ERROR "outside_project: the package config names no licence:\n${accepted_output}")
endif()
message(STATUS "outside_project: the installed package builds and runs first_model")
