"""``canio`` for ``canx run``: exactly canio's six names, implemented by canx."""

from canx import CAN, BusState, Listener, Match, Message, RemoteTransmissionRequest

__all__ = ["BusState", "CAN", "Listener", "Match", "Message", "RemoteTransmissionRequest"]
