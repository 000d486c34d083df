# Frozen into the ports/qemu boards (scripts/build-micropython qemu-m3|qemu-m0):
# canx's Python layer only, no micropython-lib (the port's default manifest
# requires unittest from it).
package("canx", base_path="$(CANX_DIR)/micropython/lib")
