# User C module `_canx_j1939` for CMake ports (rp2, esp32): link the
# prebuilt staticlib given as CANX_MPY_LIB (not built by any CI yet).
add_library(usermod_canx INTERFACE)
target_sources(usermod_canx INTERFACE ${CMAKE_CURRENT_LIST_DIR}/modcanx.c)
target_include_directories(usermod_canx INTERFACE ${CMAKE_CURRENT_LIST_DIR}/../../../crates/canx-mpy/include)
target_link_libraries(usermod_canx INTERFACE ${CANX_MPY_LIB})
target_link_libraries(usermod INTERFACE usermod_canx)
