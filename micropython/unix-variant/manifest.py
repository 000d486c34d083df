# canx's Python layer (micropython/lib/canx), frozen as the package `canx`.
package("canx", base_path="$(CANX_DIR)/micropython/lib")
