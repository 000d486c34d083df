# canx's Python layer (micropython/lib/canx), frozen as the package `canx`.
package("canx", base_path="$(CANX_DIR)/micropython/lib")
# MicroPython's asyncio (extmod/asyncio; task.py is the C module _asyncio),
# for ECU.claim_address_async/request_pgn_async/run.
include("$(MPY_DIR)/extmod/asyncio")
