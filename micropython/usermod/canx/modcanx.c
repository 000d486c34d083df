// _canx_j1939: MicroPython glue over crates/canx-mpy (canx-core's J1939
// engine). C calls Rust only; Rust returns codes, and this file raises only
// after Rust has returned (MicroPython raises by longjmp, which must never
// cross Rust frames). Engine state lives inside the object (GC heap).
#include <stdlib.h>
#include <string.h>

#include "py/runtime.h"
#include "py/mphal.h"
#include "py/mperrno.h"
#include "py/objint.h"
#include "py/objstr.h"
#include "py/objtype.h"
#include "canx_mpy.h"

#define CANX_TP_MAX (1785)

// Called by Rust's panic handler (dead code by canx-core's no-panic
// contract). Must not raise: print and stop.
void canx_mpy_fatal(void) {
    mp_printf(&mp_plat_print, "canx: fatal error in the Rust engine\n");
    #if defined(__unix__)
    abort();
    #else
    for (;;) {
    }
    #endif
}

#if defined(__unix__)
// The host's precompiled Rust `core`/`compiler_builtins` (built with
// panic=unwind) reference the unwinder's personality routine; canx-mpy is
// built with panic=abort, so nothing ever unwinds and this is never called.
// Board builds use -Zbuild-std with panic=abort and need no stub.
void rust_eh_personality(void);
void rust_eh_personality(void) {
    abort();
}
#endif

typedef struct _canx_ecu_obj_t {
    mp_obj_base_t base;
    uint32_t last_ticks; // mp_hal_ticks_us() at the last read
    uint64_t ticks_high; // wraps of it, << 32
    // A frame/event taken from the engine whose Python object could not be
    // allocated (MemoryError, e.g. under heap_lock): returned by the next
    // poll_transmit/poll_event instead of being lost.
    bool tx_held;
    bool ev_held;
    // dispatch(): events it handled before its last return of an event or
    // True (read by dispatched()).
    mp_int_t dispatched;
    // message_type(): the Python class message events are returned as
    // (attributes set here, no __init__), or MP_OBJ_NULL: tuples.
    mp_obj_t msg_type;
    canx_frame_t tx;
    canx_event_t ev;
    uint8_t buf[CANX_TP_MAX]; // event data of the last poll_event
    uint64_t state[]; // canx_j1939_size(variant) bytes, 8-aligned
} canx_ecu_obj_t;

static void canx_check(int32_t r) {
    switch (r) {
        case CANX_OK:
            return;
        case CANX_ENOADDR:
            mp_raise_msg(&mp_type_RuntimeError, MP_ERROR_TEXT("no claimed address"));
        case CANX_ETOOLONG:
            mp_raise_ValueError(MP_ERROR_TEXT("too long"));
        case CANX_EINVAL:
            mp_raise_ValueError(MP_ERROR_TEXT("invalid priority, address, PGN or value"));
        case CANX_EFULL:
            mp_raise_OSError(MP_ENOBUFS);
        case CANX_EBUSY:
            mp_raise_OSError(MP_EBUSY);
        default:
            if (r >= 0) {
                return;
            }
            mp_raise_ValueError(MP_ERROR_TEXT("bad argument"));
    }
}

static uint64_t canx_ticks64(canx_ecu_obj_t *self) {
    uint32_t t = (uint32_t)mp_hal_ticks_us();
    if (t < self->last_ticks) {
        self->ticks_high += (uint64_t)1 << 32;
    }
    self->last_ticks = t;
    return self->ticks_high | t;
}

// now_us argument: None = the object's 64-bit extension of mp_hal_ticks_us().
static uint64_t canx_now(canx_ecu_obj_t *self, mp_obj_t now) {
    if (now == mp_const_none) {
        return canx_ticks64(self);
    }
    if (mp_obj_is_small_int(now) || !mp_obj_is_exact_type(now, &mp_type_int)) {
        mp_int_t v = mp_obj_get_int(now); // TypeError for a non-int
        if (v < 0) {
            mp_raise_ValueError(MP_ERROR_TEXT("negative time"));
        }
        return (uint64_t)v;
    }
    // A long int: on a 32-bit port 64-bit microseconds outgrow a machine
    // word (and mp_obj_get_int) after 2**31 us, i.e. 36 min of uptime.
    if (mp_obj_int_sign(now) < 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("negative time"));
    }
    uint8_t b[8];
    if (!mp_obj_int_to_bytes_impl(now, false, sizeof(b), b)) {
        mp_raise_msg(&mp_type_OverflowError, MP_ERROR_TEXT("time beyond 64 bits"));
    }
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | b[i];
    }
    return v;
}

static const mp_obj_type_t canx_ecu_type;

// ECU(name: bytes[8] little-endian, address: int, variant: int = FULL)
static mp_obj_t canx_ecu_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 2, 3, false);
    mp_buffer_info_t name;
    mp_get_buffer_raise(args[0], &name, MP_BUFFER_READ);
    if (name.len != 8) {
        mp_raise_ValueError(MP_ERROR_TEXT("name must be 8 bytes"));
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) {
        n = (n << 8) | ((const uint8_t *)name.buf)[i];
    }
    mp_int_t address = mp_obj_get_int(args[1]);
    if (address < 0 || address > 253) {
        mp_raise_ValueError(MP_ERROR_TEXT("address must be 0..253"));
    }
    mp_int_t variant = n_args > 2 ? mp_obj_get_int(args[2]) : CANX_J1939_FULL;
    uint32_t size = variant < 0 || variant > 0xFFFF ? 0 : canx_j1939_size((uint32_t)variant);
    if (size == 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("unknown engine variant"));
    }
    if (canx_j1939_align() > 8) {
        mp_raise_msg(&mp_type_RuntimeError, MP_ERROR_TEXT("engine alignment"));
    }
    canx_ecu_obj_t *self = mp_obj_malloc_var(canx_ecu_obj_t, state, uint64_t, (size + 7) / 8, type);
    self->last_ticks = (uint32_t)mp_hal_ticks_us();
    self->ticks_high = 0;
    self->tx_held = false;
    self->ev_held = false;
    self->dispatched = 0;
    self->msg_type = MP_OBJ_NULL;
    canx_check(canx_j1939_init(self->state, (uint32_t)variant, size, n, (uint8_t)address));
    return MP_OBJ_FROM_PTR(self);
}

static mp_obj_t canx_ecu_ticks_us64(mp_obj_t self_in) {
    canx_ecu_obj_t *self = MP_OBJ_TO_PTR(self_in);
    return mp_obj_new_int_from_ull(canx_ticks64(self));
}
static MP_DEFINE_CONST_FUN_OBJ_1(canx_ecu_ticks_us64_obj, canx_ecu_ticks_us64);

static mp_obj_t canx_ecu_start(mp_obj_t self_in, mp_obj_t now) {
    canx_ecu_obj_t *self = MP_OBJ_TO_PTR(self_in);
    canx_check(canx_j1939_start(self->state, canx_now(self, now)));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(canx_ecu_start_obj, canx_ecu_start);

static void canx_feed(canx_ecu_obj_t *self, uint64_t now, mp_obj_t id, mp_obj_t data_in, mp_obj_t flags) {
    canx_frame_t f;
    memset(&f, 0, sizeof(f));
    f.id = (uint32_t)mp_obj_get_int_truncated(id);
    mp_buffer_info_t data;
    mp_get_buffer_raise(data_in, &data, MP_BUFFER_READ);
    if (data.len > 8) {
        mp_raise_ValueError(MP_ERROR_TEXT("more than 8 bytes"));
    }
    f.len = (uint8_t)data.len;
    memcpy(f.data, data.buf, data.len);
    f.flags = (uint8_t)mp_obj_get_int(flags);
    canx_check(canx_j1939_handle_frame(self->state, now, &f));
}

// handle_frame(now, id, data, flags)
static mp_obj_t canx_ecu_handle_frame(size_t n_args, const mp_obj_t *args) {
    canx_ecu_obj_t *self = MP_OBJ_TO_PTR(args[0]);
    canx_feed(self, canx_now(self, args[1]), args[2], args[3], args[4]);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(canx_ecu_handle_frame_obj, 5, 5, canx_ecu_handle_frame);

static mp_obj_t canx_ecu_handle_timeout(mp_obj_t self_in, mp_obj_t now) {
    canx_ecu_obj_t *self = MP_OBJ_TO_PTR(self_in);
    canx_check(canx_j1939_handle_timeout(self->state, canx_now(self, now)));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(canx_ecu_handle_timeout_obj, canx_ecu_handle_timeout);

// poll_transmit(now) -> None | (id, bytes, flags)
static mp_obj_t canx_ecu_poll_transmit(mp_obj_t self_in, mp_obj_t now) {
    canx_ecu_obj_t *self = MP_OBJ_TO_PTR(self_in);
    canx_frame_t *f = &self->tx;
    if (!self->tx_held) {
        int32_t r = canx_j1939_poll_transmit(self->state, canx_now(self, now), f);
        canx_check(r);
        if (r == 0) {
            return mp_const_none;
        }
        self->tx_held = true; // until its tuple exists (allocation may raise)
    }
    mp_obj_t t[3] = {
        mp_obj_new_int_from_uint(f->id),
        mp_obj_new_bytes(f->data, f->len),
        MP_OBJ_NEW_SMALL_INT(f->flags),
    };
    mp_obj_t tuple = mp_obj_new_tuple(3, t);
    self->tx_held = false;
    return tuple;
}
static MP_DEFINE_CONST_FUN_OBJ_2(canx_ecu_poll_transmit_obj, canx_ecu_poll_transmit);

static void canx_set_attr(mp_map_t *map, qstr attr, mp_obj_t value) {
    mp_map_lookup(map, MP_OBJ_NEW_QSTR(attr), MP_MAP_LOOKUP_ADD_IF_NOT_FOUND)->value = value;
}

// message_type(cls): message events come from poll_event() as instances of
// cls (a Python class without bases; __init__ is not called) with pgn,
// source, destination, priority, data; None: as tuples again.
static mp_obj_t canx_ecu_message_type(mp_obj_t self_in, mp_obj_t cls) {
    canx_ecu_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (cls == mp_const_none) {
        self->msg_type = MP_OBJ_NULL;
        return mp_const_none;
    }
    if (!mp_obj_is_type(cls, &mp_type_type)) {
        mp_raise_TypeError(MP_ERROR_TEXT("a class"));
    }
    const mp_obj_type_t *t = MP_OBJ_TO_PTR(cls);
    if (!(t->flags & MP_TYPE_FLAG_INSTANCE_TYPE) || MP_OBJ_TYPE_HAS_SLOT(t, parent)) {
        mp_raise_TypeError(MP_ERROR_TEXT("a Python class without bases"));
    }
    self->msg_type = cls;
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(canx_ecu_message_type_obj, canx_ecu_message_type);

// poll_event() -> None | (kind, priority, source, destination, pgn, data|None, len, detail, flags, name)
// | a message_type() instance for a message event
static mp_obj_t canx_ecu_poll_event(mp_obj_t self_in) {
    canx_ecu_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (!self->ev_held) {
        int32_t r = canx_j1939_poll_event(self->state, &self->ev, self->buf, sizeof(self->buf));
        canx_check(r);
        if (r == 0) {
            return mp_const_none;
        }
        self->ev_held = true; // until its tuple exists (allocation may raise)
    }
    canx_event_t ev = self->ev;
    mp_obj_t data = mp_const_none;
    if (ev.kind == CANX_EV_MESSAGE) {
        data = mp_obj_new_bytes(self->buf, ev.len < sizeof(self->buf) ? ev.len : sizeof(self->buf));
        if (self->msg_type != MP_OBJ_NULL) {
            // The message object itself (the single-frame hot path): an
            // instance of the class with its five attributes, in two
            // allocations (object, member table) instead of __init__'s.
            mp_obj_instance_t *m = mp_obj_malloc_var(mp_obj_instance_t, subobj, mp_obj_t, 0,
                MP_OBJ_TO_PTR(self->msg_type));
            mp_map_init(&m->members, 7);
            canx_set_attr(&m->members, MP_QSTR_pgn, mp_obj_new_int_from_uint(ev.pgn));
            canx_set_attr(&m->members, MP_QSTR_source, MP_OBJ_NEW_SMALL_INT(ev.source));
            canx_set_attr(&m->members, MP_QSTR_destination, MP_OBJ_NEW_SMALL_INT(ev.destination));
            canx_set_attr(&m->members, MP_QSTR_priority, MP_OBJ_NEW_SMALL_INT(ev.priority));
            canx_set_attr(&m->members, MP_QSTR_data, data);
            self->ev_held = false;
            return MP_OBJ_FROM_PTR(m);
        }
    }
    mp_obj_t t[10] = {
        MP_OBJ_NEW_SMALL_INT(ev.kind),
        MP_OBJ_NEW_SMALL_INT(ev.priority),
        MP_OBJ_NEW_SMALL_INT(ev.source),
        MP_OBJ_NEW_SMALL_INT(ev.destination),
        mp_obj_new_int_from_uint(ev.pgn),
        data,
        mp_obj_new_int_from_uint(ev.len),
        MP_OBJ_NEW_SMALL_INT(ev.detail),
        MP_OBJ_NEW_SMALL_INT(ev.flags),
        mp_obj_new_int_from_ull(ev.name),
    };
    mp_obj_t tuple = mp_obj_new_tuple(10, t);
    self->ev_held = false;
    return tuple;
}
static MP_DEFINE_CONST_FUN_OBJ_1(canx_ecu_poll_event_obj, canx_ecu_poll_event);

// The frame feed of j1939.ECU._frames, in C: a single frame then runs no
// Python bytecode of the layer, only its callbacks (called from here, after
// the engine returned: Rust is never on the stack below a callback).
//
// dispatch(now, bus, by_pgn, layer, done, pending_tx, mode)
// mode 0: a new feed (the frame poll() handed to handle_frame is in the
// engine), 1: on after an event it returned (events first, as 0), 2: on
// after the layer sent (recv() first).
// Loop: events; each message event (a message_type() instance) whose
// callbacks this table holds (by_pgn[normalized PGN], else layer._any_pgn: tuples
// of (callback, source)) is dispatched here while `done` is empty; then, if
// pending_tx is non-empty or the engine has a frame to send (kept in the
// glue), returns True (the layer sends, then calls again with mode 2);
// then bus.recv(): None ends the feed and returns the number of events
// handled in this call, a frame (id, data, flags) goes to the engine. Any other
// event (and messages while `done` is non-empty) is returned for the layer.
// A callback's Exception goes to layer._dispatch_error(exc) and the next
// callback runs; its returning true stops this message's callbacks (its
// own MemoryError); BaseExceptions and errors of recv/the engine propagate.
// Methods are looked up, not bound: nothing here allocates but the
// message objects (and what the callbacks do).
static mp_obj_t canx_ecu_dispatch(size_t n_args, const mp_obj_t *args) {
    canx_ecu_obj_t *self = MP_OBJ_TO_PTR(args[0]);
    uint64_t now = canx_now(self, args[1]);
    mp_obj_t recv[2];
    mp_load_method(args[2], MP_QSTR_recv, recv);
    mp_map_t *by_pgn = mp_obj_dict_get_map(args[3]);
    mp_obj_t layer = args[4];
    mp_map_t *done = mp_obj_dict_get_map(args[5]);
    mp_obj_t pending = args[6];
    mp_int_t mode = mp_obj_get_int(args[7]);
    if (!mp_obj_is_type(pending, &mp_type_list)) {
        mp_raise_TypeError(MP_ERROR_TEXT("pending_tx: a list"));
    }
    mp_obj_list_t *pend = MP_OBJ_TO_PTR(pending);
    // Events handled here in this call (a local: a callback may poll this
    // ECU again, nesting a feed).
    mp_int_t n = 0;
    for (;;) {
        if (mode != 2) {
            for (;;) {
                mp_obj_t msg = canx_ecu_poll_event(args[0]); // MemoryError: held
                if (msg == mp_const_none) {
                    break;
                }
                if (self->msg_type == MP_OBJ_NULL || mp_obj_get_type(msg) != MP_OBJ_TO_PTR(self->msg_type)
                    || done->used != 0) {
                    self->dispatched = n;
                    return msg;
                }
                n++;
                // The event the message was built from (self->ev, unchanged
                // until the next poll_event): its PGN and source as the
                // message had them before any callback ran.
                mp_uint_t pgn = self->ev.pgn;
                mp_obj_t source = MP_OBJ_NEW_SMALL_INT(self->ev.source);
                // _normalize: PDU1 (PF < 240) without the destination.
                mp_uint_t key = (pgn & 0xF000) == 0xF000 ? pgn : (pgn & 0x3FF00);
                mp_map_elem_t *el = mp_map_lookup(by_pgn, MP_OBJ_NEW_SMALL_INT(key), MP_MAP_LOOKUP);
                // The layer's _any_pgn as the Python loop read it: per message
                // (a callback's on_pgn(None, ...) replaces it).
                mp_obj_t cbs = el != NULL ? el->value : mp_load_attr(layer, MP_QSTR__any_pgn);
                size_t ncb;
                mp_obj_t *cb;
                mp_obj_get_array(cbs, &ncb, &cb);
                for (size_t i = 0; i < ncb; i++) {
                    mp_obj_t *pair;
                    mp_obj_get_array_fixed_n(cb[i], 2, &pair);
                    if (pair[1] != mp_const_none && !mp_obj_equal(pair[1], source)) {
                        continue;
                    }
                    nlr_buf_t nlr;
                    if (nlr_push(&nlr) == 0) {
                        mp_call_function_1(pair[0], msg);
                        nlr_pop();
                    } else {
                        mp_obj_t exc = MP_OBJ_FROM_PTR(nlr.ret_val);
                        if (!mp_obj_is_subclass_fast(MP_OBJ_FROM_PTR(mp_obj_get_type(exc)),
                            MP_OBJ_FROM_PTR(&mp_type_Exception))) {
                            nlr_jump(nlr.ret_val); // KeyboardInterrupt, SystemExit
                        }
                        mp_obj_t on_error[3];
                        mp_load_method(layer, MP_QSTR__dispatch_error, on_error);
                        on_error[2] = exc;
                        if (mp_obj_is_true(mp_call_method_n_kw(1, 0, on_error))) {
                            break;
                        }
                    }
                }
            }
            if (pend->len != 0) {
                self->dispatched = n;
                return mp_const_true;
            }
            if (!self->tx_held) {
                int32_t r = canx_j1939_poll_transmit(self->state, now, &self->tx);
                canx_check(r);
                if (r != 0) {
                    self->tx_held = true; // poll_transmit() returns it
                }
            }
            if (self->tx_held) {
                self->dispatched = n;
                return mp_const_true;
            }
        }
        mode = 1;
        mp_obj_t f = mp_call_method_n_kw(0, 0, recv);
        if (f == mp_const_none) {
            return MP_OBJ_NEW_SMALL_INT(n);
        }
        if (mp_obj_is_type(f, &mp_type_tuple) || mp_obj_is_type(f, &mp_type_list)) {
            size_t fn;
            mp_obj_t *fi;
            mp_obj_get_array(f, &fn, &fi);
            if (fn < 3) {
                mp_raise_ValueError(MP_ERROR_TEXT("a frame (id, data, flags)"));
            }
            canx_feed(self, now, fi[0], fi[1], fi[2]);
        } else {
            canx_feed(self, now, mp_obj_subscr(f, MP_OBJ_NEW_SMALL_INT(0), MP_OBJ_SENTINEL),
                mp_obj_subscr(f, MP_OBJ_NEW_SMALL_INT(1), MP_OBJ_SENTINEL),
                mp_obj_subscr(f, MP_OBJ_NEW_SMALL_INT(2), MP_OBJ_SENTINEL));
        }
    }
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(canx_ecu_dispatch_obj, 8, 8, canx_ecu_dispatch);

// dispatched() -> int: the events the last dispatch() call that returned an
// event or True had handled before it.
static mp_obj_t canx_ecu_dispatched(mp_obj_t self_in) {
    canx_ecu_obj_t *self = MP_OBJ_TO_PTR(self_in);
    return MP_OBJ_NEW_SMALL_INT(self->dispatched);
}
static MP_DEFINE_CONST_FUN_OBJ_1(canx_ecu_dispatched_obj, canx_ecu_dispatched);

static mp_obj_t canx_ecu_poll_timeout(mp_obj_t self_in) {
    canx_ecu_obj_t *self = MP_OBJ_TO_PTR(self_in);
    int64_t t = canx_j1939_poll_timeout(self->state);
    if (t < 0) {
        return mp_const_none;
    }
    return mp_obj_new_int_from_ull((uint64_t)t);
}
static MP_DEFINE_CONST_FUN_OBJ_1(canx_ecu_poll_timeout_obj, canx_ecu_poll_timeout);

static mp_obj_t canx_ecu_address(mp_obj_t self_in) {
    canx_ecu_obj_t *self = MP_OBJ_TO_PTR(self_in);
    int32_t a = canx_j1939_address(self->state);
    if (a == CANX_ENOADDR) {
        return mp_const_none;
    }
    canx_check(a);
    return MP_OBJ_NEW_SMALL_INT(a);
}
static MP_DEFINE_CONST_FUN_OBJ_1(canx_ecu_address_obj, canx_ecu_address);

static mp_obj_t canx_ecu_dropped(mp_obj_t self_in) {
    canx_ecu_obj_t *self = MP_OBJ_TO_PTR(self_in);
    return mp_obj_new_int_from_ll(canx_j1939_dropped(self->state));
}
static MP_DEFINE_CONST_FUN_OBJ_1(canx_ecu_dropped_obj, canx_ecu_dropped);

static uint8_t canx_u8(mp_obj_t o) {
    mp_int_t v = mp_obj_get_int(o);
    if (v < 0 || v > 255) {
        mp_raise_ValueError(MP_ERROR_TEXT("value out of 0..255"));
    }
    return (uint8_t)v;
}

static uint32_t canx_pgn(mp_obj_t o) {
    mp_int_t v = mp_obj_get_int(o);
    if (v < 0 || v > 0x3FFFF) {
        mp_raise_ValueError(MP_ERROR_TEXT("PGN out of 0..0x3FFFF"));
    }
    return (uint32_t)v;
}

// send(priority, pgn, destination, data)
static mp_obj_t canx_ecu_send(size_t n_args, const mp_obj_t *args) {
    canx_ecu_obj_t *self = MP_OBJ_TO_PTR(args[0]);
    uint8_t priority = canx_u8(args[1]);
    uint32_t pgn = canx_pgn(args[2]);
    uint8_t destination = canx_u8(args[3]);
    mp_buffer_info_t data;
    mp_get_buffer_raise(args[4], &data, MP_BUFFER_READ);
    if (data.len > CANX_TP_MAX) {
        canx_check(CANX_ETOOLONG);
    }
    canx_check(canx_j1939_send(self->state, priority, pgn, destination, data.buf, (uint32_t)data.len));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(canx_ecu_send_obj, 5, 5, canx_ecu_send);

// request(now, pgn, destination)
static mp_obj_t canx_ecu_request(size_t n_args, const mp_obj_t *args) {
    canx_ecu_obj_t *self = MP_OBJ_TO_PTR(args[0]);
    uint64_t now = canx_now(self, args[1]);
    uint32_t pgn = canx_pgn(args[2]);
    uint8_t destination = canx_u8(args[3]);
    canx_check(canx_j1939_request(self->state, now, pgn, destination));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(canx_ecu_request_obj, 4, 4, canx_ecu_request);

static mp_obj_t canx_ecu_register(mp_obj_t self_in, mp_obj_t pgn) {
    canx_ecu_obj_t *self = MP_OBJ_TO_PTR(self_in);
    canx_check(canx_j1939_register(self->state, canx_pgn(pgn)));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(canx_ecu_register_obj, canx_ecu_register);

// respond(pgn, requester, global, data)
static mp_obj_t canx_ecu_respond(size_t n_args, const mp_obj_t *args) {
    canx_ecu_obj_t *self = MP_OBJ_TO_PTR(args[0]);
    uint32_t pgn = canx_pgn(args[1]);
    uint8_t requester = canx_u8(args[2]);
    uint8_t global = mp_obj_is_true(args[3]) ? 1 : 0;
    mp_buffer_info_t data;
    mp_get_buffer_raise(args[4], &data, MP_BUFFER_READ);
    if (data.len > CANX_TP_MAX) {
        canx_check(CANX_ETOOLONG);
    }
    canx_check(canx_j1939_respond(self->state, pgn, requester, global, data.buf, (uint32_t)data.len));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(canx_ecu_respond_obj, 5, 5, canx_ecu_respond);

static const mp_rom_map_elem_t canx_ecu_locals_dict_table[] = {
    { MP_ROM_QSTR(MP_QSTR_start), MP_ROM_PTR(&canx_ecu_start_obj) },
    { MP_ROM_QSTR(MP_QSTR_handle_frame), MP_ROM_PTR(&canx_ecu_handle_frame_obj) },
    { MP_ROM_QSTR(MP_QSTR_handle_timeout), MP_ROM_PTR(&canx_ecu_handle_timeout_obj) },
    { MP_ROM_QSTR(MP_QSTR_poll_transmit), MP_ROM_PTR(&canx_ecu_poll_transmit_obj) },
    { MP_ROM_QSTR(MP_QSTR_poll_event), MP_ROM_PTR(&canx_ecu_poll_event_obj) },
    { MP_ROM_QSTR(MP_QSTR_message_type), MP_ROM_PTR(&canx_ecu_message_type_obj) },
    { MP_ROM_QSTR(MP_QSTR_dispatch), MP_ROM_PTR(&canx_ecu_dispatch_obj) },
    { MP_ROM_QSTR(MP_QSTR_dispatched), MP_ROM_PTR(&canx_ecu_dispatched_obj) },
    { MP_ROM_QSTR(MP_QSTR_poll_timeout), MP_ROM_PTR(&canx_ecu_poll_timeout_obj) },
    { MP_ROM_QSTR(MP_QSTR_address), MP_ROM_PTR(&canx_ecu_address_obj) },
    { MP_ROM_QSTR(MP_QSTR_dropped), MP_ROM_PTR(&canx_ecu_dropped_obj) },
    { MP_ROM_QSTR(MP_QSTR_send), MP_ROM_PTR(&canx_ecu_send_obj) },
    { MP_ROM_QSTR(MP_QSTR_request), MP_ROM_PTR(&canx_ecu_request_obj) },
    { MP_ROM_QSTR(MP_QSTR_register), MP_ROM_PTR(&canx_ecu_register_obj) },
    { MP_ROM_QSTR(MP_QSTR_respond), MP_ROM_PTR(&canx_ecu_respond_obj) },
    { MP_ROM_QSTR(MP_QSTR_ticks_us64), MP_ROM_PTR(&canx_ecu_ticks_us64_obj) },
};
static MP_DEFINE_CONST_DICT(canx_ecu_locals_dict, canx_ecu_locals_dict_table);

static MP_DEFINE_CONST_OBJ_TYPE(
    canx_ecu_type,
    MP_QSTR_ECU,
    MP_TYPE_FLAG_NONE,
    make_new, canx_ecu_make_new,
    locals_dict, &canx_ecu_locals_dict
    );

// eec1_encode(rpm_x8) -> bytes (0xFFFF = not available)
static mp_obj_t canx_eec1_encode_fn(mp_obj_t raw) {
    uint8_t out[8];
    mp_int_t v = mp_obj_get_int(raw);
    if (v < 0 || v > 0xFFFF) {
        canx_check(CANX_EINVAL);
    }
    canx_check(canx_eec1_encode((uint16_t)v, out));
    return mp_obj_new_bytes(out, 8);
}
static MP_DEFINE_CONST_FUN_OBJ_1(canx_eec1_encode_obj, canx_eec1_encode_fn);

// eec1_decode(data) -> raw (0.125 rpm/bit) or None
static mp_obj_t canx_eec1_decode_fn(mp_obj_t data_in) {
    mp_buffer_info_t data;
    mp_get_buffer_raise(data_in, &data, MP_BUFFER_READ);
    int32_t r = canx_eec1_decode(data.buf, (uint32_t)data.len);
    return r < 0 ? mp_const_none : MP_OBJ_NEW_SMALL_INT(r);
}
static MP_DEFINE_CONST_FUN_OBJ_1(canx_eec1_decode_obj, canx_eec1_decode_fn);

// vin_encode(vin: str|bytes) -> bytes ("VIN*")
static mp_obj_t canx_vin_encode_fn(mp_obj_t vin_in) {
    mp_buffer_info_t vin;
    mp_get_buffer_raise(vin_in, &vin, MP_BUFFER_READ);
    uint8_t out[256];
    int32_t n = canx_vin_encode(vin.buf, (uint32_t)vin.len, out, sizeof(out));
    canx_check(n);
    return mp_obj_new_bytes(out, (size_t)n);
}
static MP_DEFINE_CONST_FUN_OBJ_1(canx_vin_encode_obj, canx_vin_encode_fn);

// dm1_encode(lamps, flash, dtcs: list of int (J1939-73 v4 u32)) -> bytes
static mp_obj_t canx_dm1_encode_fn(mp_obj_t lamps, mp_obj_t flash, mp_obj_t dtcs_in) {
    size_t n;
    mp_obj_t *items;
    mp_obj_get_array(dtcs_in, &n, &items);
    uint32_t dtcs[16];
    if (n > 16) {
        canx_check(CANX_ETOOLONG);
    }
    for (size_t i = 0; i < n; i++) {
        dtcs[i] = (uint32_t)mp_obj_get_int_truncated(items[i]);
    }
    uint8_t out[2 + 4 * 16];
    int32_t len = canx_dm1_encode(canx_u8(lamps), canx_u8(flash), dtcs, (uint32_t)n, out, sizeof(out));
    canx_check(len);
    return mp_obj_new_bytes(out, (size_t)len);
}
static MP_DEFINE_CONST_FUN_OBJ_3(canx_dm1_encode_obj, canx_dm1_encode_fn);

#if CANX_MPY_STACK_PROBE
// Test builds only (-DCANX_MPY_STACK_PROBE=1, the qemu boards): the C stack's
// high-water mark. _stack_paint() fills the unused stack below its own frame
// down to the limit MicroPython was given (stack_top - stack_limit) with a
// pattern and returns the bytes in use now; _stack_used() finds the lowest
// overwritten word and returns stack_top minus its address: the deepest the
// stack went in between (interpreter, glue and Rust frames, interrupts).
#include "py/stackctrl.h"
#define CANX_STACK_PAINT (0xC5A7C5A7u)
static uint32_t *canx_stack_bottom(void) {
    uintptr_t b = (uintptr_t)(MP_STATE_THREAD(stack_top) - MP_STATE_THREAD(stack_limit));
    return (uint32_t *)((b + 3u) & ~(uintptr_t)3u);
}
static mp_obj_t canx_stack_paint_fn(void) {
    volatile uint32_t here = 0;
    uint32_t *end = (uint32_t *)((uintptr_t)&here - 128u);
    for (volatile uint32_t *w = canx_stack_bottom(); w < end; w++) {
        *w = CANX_STACK_PAINT;
    }
    return MP_OBJ_NEW_SMALL_INT(mp_stack_usage());
}
static MP_DEFINE_CONST_FUN_OBJ_0(canx_stack_paint_obj, canx_stack_paint_fn);
static mp_obj_t canx_stack_used_fn(void) {
    const volatile uint32_t *w = canx_stack_bottom();
    while ((const char *)w < MP_STATE_THREAD(stack_top) && *w == CANX_STACK_PAINT) {
        w++;
    }
    return MP_OBJ_NEW_SMALL_INT(MP_STATE_THREAD(stack_top) - (const char *)w);
}
static MP_DEFINE_CONST_FUN_OBJ_0(canx_stack_used_obj, canx_stack_used_fn);
#endif

// variant_size(variant) -> int: bytes of that engine variant's state, 0 when
// it is not compiled in (crates/canx-mpy features small/full).
static mp_obj_t canx_variant_size_fn(mp_obj_t variant) {
    mp_int_t v = mp_obj_get_int(variant);
    return mp_obj_new_int_from_uint(v < 0 || v > 0xFFFF ? 0 : canx_j1939_size((uint32_t)v));
}
static MP_DEFINE_CONST_FUN_OBJ_1(canx_variant_size_obj, canx_variant_size_fn);

static const mp_rom_map_elem_t canx_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR__canx_j1939) },
    { MP_ROM_QSTR(MP_QSTR_ECU), MP_ROM_PTR(&canx_ecu_type) },
    { MP_ROM_QSTR(MP_QSTR_SMALL), MP_ROM_INT(CANX_J1939_SMALL) },
    { MP_ROM_QSTR(MP_QSTR_FULL), MP_ROM_INT(CANX_J1939_FULL) },
    { MP_ROM_QSTR(MP_QSTR_variant_size), MP_ROM_PTR(&canx_variant_size_obj) },
    { MP_ROM_QSTR(MP_QSTR_eec1_encode), MP_ROM_PTR(&canx_eec1_encode_obj) },
    { MP_ROM_QSTR(MP_QSTR_eec1_decode), MP_ROM_PTR(&canx_eec1_decode_obj) },
    { MP_ROM_QSTR(MP_QSTR_vin_encode), MP_ROM_PTR(&canx_vin_encode_obj) },
    { MP_ROM_QSTR(MP_QSTR_dm1_encode), MP_ROM_PTR(&canx_dm1_encode_obj) },
    #if CANX_MPY_STACK_PROBE
    { MP_ROM_QSTR(MP_QSTR__stack_paint), MP_ROM_PTR(&canx_stack_paint_obj) },
    { MP_ROM_QSTR(MP_QSTR__stack_used), MP_ROM_PTR(&canx_stack_used_obj) },
    #endif
};
static MP_DEFINE_CONST_DICT(canx_module_globals, canx_module_globals_table);

const mp_obj_module_t canx_j1939_user_cmodule = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&canx_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR__canx_j1939, canx_j1939_user_cmodule);
