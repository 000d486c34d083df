"""The canx exception hierarchy and the native error table (src/py/errors.rs)."""

import pytest

import canx
import canx.errors
from canx import _canx

DEINIT_MSG = "Object has been deinitialized and can no longer be used. Create a new object."


def test_native_error_table_names_canx_errors_classes():
    # The table is resolved once at import; every class it holds is the one
    # canx.errors exports under that name, and a CanxError.
    table = _canx._error_table()
    assert len(table) == 14
    for kind, cls in table:
        assert cls is getattr(canx.errors, cls.__name__), kind
        assert issubclass(cls, canx.CanxError), kind
        assert cls.__name__ in canx.errors.__all__


@pytest.mark.parametrize(
    "new, old",
    [
        ("TransferAbortedError", "TransferAborted"),
        ("RequestTimeoutError", "RequestTimeout"),
        ("RequestRejectedError", "RequestRejected"),
    ],
)
def test_j1939_errors_end_in_error_and_old_names_are_aliases(new, old):
    cls = getattr(canx, new)
    assert getattr(canx, old) is cls
    assert getattr(canx.errors, new) is cls and getattr(canx.errors, old) is cls
    assert new in canx.__all__ and old in canx.__all__
    assert issubclass(cls, canx.J1939Error)
    with pytest.raises(getattr(canx, old)):
        raise cls("x")


def test_request_errors_keep_their_fields_and_stdlib_bases():
    e = canx.TransferAbortedError("aborted", 3)
    assert e.reason == 3 and str(e) == "aborted"
    assert canx.RequestRejectedError("nack", 2).control == 2
    assert issubclass(canx.RequestTimeoutError, TimeoutError)


def test_use_after_deinit_is_canio_value_error_and_a_canx_error():
    can = canx.CAN(channel="virtual:errors-closed")
    can.deinit()
    with pytest.raises(canx.ClosedError) as ei:
        can.send(canx.Message(1, b""))
    assert isinstance(ei.value, ValueError)
    assert isinstance(ei.value, canx.CanxError)
    assert str(ei.value) == DEINIT_MSG


def test_closed_engine_error_is_closed_error():
    from canx import reliable

    can = canx.CAN(channel="virtual:errors-engine", loopback=True)
    try:
        s = reliable.Sender(can)
        s.close()
        with pytest.raises(canx.ClosedError) as ei:
            s.send(0x100, b"x")
        assert str(ei.value) == DEINIT_MSG
    finally:
        can.deinit()


def test_dead_receive_thread_surfaces_in_state_stats_and_next_calls():
    # B4: a backend whose every receive fails stops the receive thread after
    # its error limit. Before the fix nothing read that error: state stayed
    # ERROR_ACTIVE, send() succeeded and receive() timed out silently.
    from canio_helpers import wait_for

    ch = "virtual:errors-dead-rx"
    can = canx.CAN(channel=ch, loopback=True)
    listener = can.listen(timeout=60)
    try:
        assert can.stats()["receive_thread_stopped"] == 0
        assert _canx._virtual_fail_receive(ch)
        # A receive blocked when the thread dies wakes with the cause.
        with pytest.raises(canx.ReceiveThreadError, match="injected receive failure"):
            listener.receive()
        assert wait_for(lambda: can.state == canx.BusState.BUS_OFF)
        assert "receive thread stopped" in can.link_error
        assert can.stats()["receive_thread_stopped"] == 1
        with pytest.raises(canx.ReceiveThreadError, match="injected receive failure") as ei:
            can.send(canx.Message(1, b""))
        assert isinstance(ei.value, canx.InterfaceError) and isinstance(ei.value, OSError)
        with pytest.raises(canx.ReceiveThreadError):
            can.listen()
        with pytest.raises(canx.ReceiveThreadError):
            listener.receive_many(timeout=0)
    finally:
        can.deinit()
    with pytest.raises(canx.ClosedError):
        can.send(canx.Message(1, b""))
