# canx's out-of-tree unix variant (make VARIANT_DIR=...): the standard
# feature level without anything that needs a git submodule (micropython-lib,
# berkeley-db, mbedtls, libffi) and with canx's Python layer frozen in.
FROZEN_MANIFEST ?= $(VARIANT_DIR)/manifest.py

MICROPY_PY_BTREE = 0
MICROPY_PY_FFI = 0
MICROPY_PY_SSL = 0
MICROPY_PY_THREAD = 0
MICROPY_USE_READLINE = 0
MICROPY_VFS_FAT = 0
MICROPY_VFS_LFS1 = 0
MICROPY_VFS_LFS2 = 0
