# User C module `_canx_j1939`: C glue over crates/canx-mpy's staticlib.
# CANX_MPY_LIB: the absolute path of libcanx_mpy.a for this port's target
# (scripts/build-micropython builds it and passes it).
CANX_MOD_DIR := $(USERMOD_DIR)
SRC_USERMOD_C += $(CANX_MOD_DIR)/modcanx.c
CFLAGS_USERMOD += -I$(CANX_MOD_DIR)/../../../crates/canx-mpy/include
# v1.28 has no LIBS_USERMOD; LDFLAGS come last on the unix link line.
LDFLAGS_USERMOD += $(CANX_MPY_LIB)
