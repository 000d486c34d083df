# User C module `_canx_j1939` for CMake ports (rp2, esp32): link the
# prebuilt staticlib given as -DCANX_MPY_LIB= or, since the ports' Makefiles
# build their own cmake command line, as the environment variable
# CANX_MPY_LIB (docs/boards.md, "MicroPython"). Configure-checked by
# scripts/build-micropython cmake-check; no rp2/esp32 firmware built yet.
if(NOT CANX_MPY_LIB)
    set(CANX_MPY_LIB $ENV{CANX_MPY_LIB})
endif()
if(NOT CANX_MPY_LIB)
    message(FATAL_ERROR "_canx_j1939: set CANX_MPY_LIB to libcanx_mpy.a built for this port's target")
endif()
add_library(usermod_canx INTERFACE)
target_sources(usermod_canx INTERFACE ${CMAKE_CURRENT_LIST_DIR}/modcanx.c)
target_include_directories(usermod_canx INTERFACE ${CMAKE_CURRENT_LIST_DIR}/../../../crates/canx-mpy/include)
target_link_libraries(usermod_canx INTERFACE ${CANX_MPY_LIB})
target_link_libraries(usermod INTERFACE usermod_canx)
