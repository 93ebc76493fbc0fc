# char_rnn inspect: the recording, analyses and exports as a library (tests use it), the page
# template compiled in, zlib (the page's data is deflated) and, when found, HDF5 for LSTMVis.
find_package(ZLIB REQUIRED)
# HDF5's C library, found directly (FindHDF5 needs the C language, which this project does not
# enable); Debian's libhdf5-dev puts the serial build under hdf5/serial.
find_path(CELLGRAD_HDF5_INCLUDE hdf5.h PATH_SUFFIXES hdf5/serial)
find_library(CELLGRAD_HDF5_LIBRARY NAMES hdf5_serial hdf5 PATH_SUFFIXES hdf5/serial)

set(inspect_page_source ${CMAKE_CURRENT_BINARY_DIR}/inspect_page.cpp)
add_custom_command(
  OUTPUT ${inspect_page_source}
  COMMAND ${CMAKE_COMMAND} -DINPUT=${CMAKE_CURRENT_SOURCE_DIR}/inspect_page.html
          -DOUTPUT=${inspect_page_source} -P ${CMAKE_CURRENT_SOURCE_DIR}/embed_page.cmake
  DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/inspect_page.html ${CMAKE_CURRENT_SOURCE_DIR}/embed_page.cmake
  COMMENT "Embedding the inspect page template")

add_library(char_rnn_inspect STATIC inspect.cpp inspect_export.cpp inspect_lstmvis.cpp
                                    ${inspect_page_source})
target_link_libraries(char_rnn_inspect PUBLIC char_rnn_core PRIVATE ZLIB::ZLIB)
target_compile_options(char_rnn_inspect PRIVATE ${CELLGRAD_WARNINGS})
if(CELLGRAD_HDF5_INCLUDE AND CELLGRAD_HDF5_LIBRARY)
  target_compile_definitions(char_rnn_inspect PRIVATE CELLGRAD_HAVE_HDF5)
  target_include_directories(char_rnn_inspect SYSTEM PRIVATE ${CELLGRAD_HDF5_INCLUDE})
  target_link_libraries(char_rnn_inspect PRIVATE ${CELLGRAD_HDF5_LIBRARY})
  message(STATUS "char_rnn inspect: HDF5 found (${CELLGRAD_HDF5_LIBRARY}), --lstmvis available")
else()
  message(STATUS "char_rnn inspect: HDF5 not found (apt-get install libhdf5-dev), no --lstmvis")
endif()

target_sources(char_rnn PRIVATE inspect_command.cpp)
target_link_libraries(char_rnn PRIVATE char_rnn_inspect)
if(TARGET cellgrad_tests)
  target_link_libraries(cellgrad_tests PRIVATE char_rnn_inspect)
endif()

# The page in headless Chromium (tests/inspect_browser_test.sh): skipped (exit 77) where Chromium
# or python3 is missing; CI installs them and runs the script itself (.ci/run). Not in sanitizer
# builds: the browser, not char_rnn, is what it tests there.
if(TARGET cellgrad_tests AND NOT CELLGRAD_SANITIZE)
  add_test(NAME inspect_browser
           COMMAND bash ${PROJECT_SOURCE_DIR}/tests/inspect_browser_test.sh $<TARGET_FILE:char_rnn>)
  set_tests_properties(inspect_browser PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600
                                                  RUN_SERIAL TRUE)
endif()
