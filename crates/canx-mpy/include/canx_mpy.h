/* C ABI of crates/canx-mpy (canx-core's J1939 engine for MicroPython).
 * Hand-written; crates/canx-mpy/src/tests.rs checks every constant here.
 * Rules: C calls Rust only; Rust never calls back, never allocates, has no
 * statics. State lives in caller memory of canx_j1939_size(variant) bytes aligned
 * to canx_j1939_align(). No enums cross (short enums on arm-none-eabi).
 * Times are microseconds of a caller-chosen monotonic 64-bit clock. */
#ifndef CANX_MPY_H
#define CANX_MPY_H

#include <stddef.h>
#include <stdint.h>

#define CANX_OK (0)
#define CANX_EARG (-1)     /* null pointer, bad memory, state not from init */
#define CANX_ENOADDR (-2)  /* no claimed address yet */
#define CANX_ETOOLONG (-3) /* above 1785 bytes, or an output buffer too small */
#define CANX_EINVAL (-4)   /* invalid priority, address, PGN or value */
#define CANX_EFULL (-5)    /* transmit queue, responder or request table full */
#define CANX_EBUSY (-6)    /* every TP session in use */

/* Engine variants (canx_j1939_size/init):
 * SMALL: 1 TP session, 4 responders, 4 outstanding requests, 16-entry table.
 * FULL:  4 TP sessions, 16 responders, 16 requests, 254-entry table. No ETP. */
#define CANX_J1939_SMALL (0)
#define CANX_J1939_FULL (1)

#define CANX_FLAG_RTR (1) /* == machine.CAN flags */
#define CANX_FLAG_EXT (2)

#define CANX_EV_CLAIMED (1)
#define CANX_EV_LOST (2)
#define CANX_EV_CANNOT_CLAIM (3)
#define CANX_EV_TABLE_ADDED (4)
#define CANX_EV_TABLE_REMOVED (5)
#define CANX_EV_MESSAGE (6)
#define CANX_EV_REQUEST (7)
#define CANX_EV_SENT (8)
#define CANX_EV_ABORTED (9)
#define CANX_EV_REQUEST_DONE (10)

#define CANX_OUTCOME_ANSWERED (0)
#define CANX_OUTCOME_ACKNOWLEDGED (1)
#define CANX_OUTCOME_ABORTED (2)
#define CANX_OUTCOME_TIMED_OUT (3)

#define CANX_EVF_TRUNCATED (1)
#define CANX_EVF_BY_PEER (2)
#define CANX_EVF_RECEIVE (4)
#define CANX_EVF_GLOBAL (8)

typedef struct {
    uint32_t id;    /* 11 or 29 bits, no flag bits */
    uint8_t flags;  /* CANX_FLAG_* */
    uint8_t len;    /* 0..8 */
    uint8_t pad[2];
    uint8_t data[8];
} canx_frame_t;

/* Fields by kind: see crates/canx-mpy/src/lib.rs (CanxEvent). */
typedef struct {
    uint8_t kind, priority, source, destination;
    uint32_t pgn;
    uint32_t len;
    uint16_t detail;
    uint8_t flags;
    uint8_t pad;
    uint64_t name;
} canx_event_t;

_Static_assert(sizeof(canx_frame_t) == 16, "canx_frame_t");
_Static_assert(sizeof(canx_event_t) == 24, "canx_event_t");

uint32_t canx_j1939_size(uint32_t variant); /* 0: unknown variant */
uint32_t canx_j1939_align(void); /* the same for every variant */
int32_t canx_j1939_init(void *mem, uint32_t variant, uint32_t size, uint64_t name, uint8_t address);
int32_t canx_j1939_start(void *e, uint64_t now_us);
int32_t canx_j1939_handle_frame(void *e, uint64_t now_us, const canx_frame_t *f);
int32_t canx_j1939_handle_timeout(void *e, uint64_t now_us);
int32_t canx_j1939_poll_transmit(void *e, uint64_t now_us, canx_frame_t *out); /* 1 frame, 0 none */
int32_t canx_j1939_poll_event(void *e, canx_event_t *out, uint8_t *buf, uint32_t cap); /* 1 event, 0 none */
int64_t canx_j1939_poll_timeout(void *e); /* µs, -1 none */
int32_t canx_j1939_address(void *e);      /* 0..253 or CANX_ENOADDR */
int64_t canx_j1939_dropped(void *e);
int32_t canx_j1939_send(void *e, uint8_t priority, uint32_t pgn, uint8_t destination, const uint8_t *data, uint32_t len);
int32_t canx_j1939_request(void *e, uint64_t now_us, uint32_t pgn, uint8_t destination);
int32_t canx_j1939_register(void *e, uint32_t pgn);
int32_t canx_j1939_respond(void *e, uint32_t pgn, uint8_t requester, uint8_t global, const uint8_t *data, uint32_t len);

int32_t canx_eec1_encode(uint16_t rpm_x8, uint8_t *out8);
int32_t canx_eec1_decode(const uint8_t *data, uint32_t len);
int32_t canx_et1_encode(int16_t coolant_deg_c, int16_t fuel_deg_c, uint8_t *out8);
int32_t canx_et1_coolant(const uint8_t *data, uint32_t len);
int32_t canx_vin_encode(const uint8_t *vin, uint32_t vin_len, uint8_t *out, uint32_t cap);
int32_t canx_vin_decode(const uint8_t *data, uint32_t len);
int32_t canx_dm1_encode(uint8_t lamps, uint8_t flash, const uint32_t *dtcs, uint32_t n, uint8_t *out, uint32_t cap);

/* Provided by the C glue: report and stop; never returns, never raises. */
_Noreturn void canx_mpy_fatal(void);

#endif
