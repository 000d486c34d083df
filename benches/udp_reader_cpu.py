"""CPU time per frame of canx's udp_multicast native reader thread (user + system, from
/proc/self/task), host only:

    .venv/bin/python benches/udp_reader_cpu.py [N [BURST]]

A plain UDP socket in this process sends N datagrams (python-can's format,
8-byte frames) in bursts of BURST (default 64) and waits for each burst to
be received (`receive_many`). BURST 1 is a frame arriving alone, the
reader woken per frame. Compare builds by running it with each build's
interpreter; instruction counts (load-independent) are in instructions.py.
"""
import os
import socket
import sys

import msgpack

import canx

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
BURST = int(sys.argv[2]) if len(sys.argv) > 2 else 64
G, P = "239.74.163.9", 43298
d = msgpack.packb({"timestamp": 1.0, "arbitration_id": 0x123, "is_extended_id": False, "is_remote_frame": False,
    "is_error_frame": False, "channel": None, "dlc": 8, "data": bytes(8), "is_fd": False,
    "bitrate_switch": False, "error_state_indicator": False}, use_bin_type=True)
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
rx = canx.CAN(channel=f"udp_multicast:{G}:{P}")
l = rx.listen(timeout=5.0)


def reader_cpu() -> float:
    t = 0
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/comm") as f:
            if not f.read().startswith("canx-udp"):
                continue
        with open(f"/proc/self/task/{tid}/stat") as f:
            st = f.read().rsplit(")", 1)[1].split()
        t += int(st[11]) + int(st[12])
    return t / os.sysconf("SC_CLK_TCK")


c0 = reader_cpu()
sent = 0
while sent < N:
    for _ in range(BURST):
        tx.sendto(d, (G, P))
    got = 0
    while got < BURST:
        got += len(l.receive_many(BURST - got, 5.0))
    sent += BURST
c1 = reader_cpu()
print(f"reader thread: {(c1 - c0) / N * 1e6:.2f} us CPU/frame over {N} frames (bursts of {BURST})")
rx.deinit()
