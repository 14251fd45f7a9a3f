#!/usr/bin/env python3
"""Waits until a local Kafka broker answers requests: scripts/broker.sh's readiness check.

    ready.py PORT PID TIMEOUT_SECONDS

An open port is not enough (Kafka accepts connections before it serves them), so each probe is an
ApiVersions v0 request, then a Metadata request (v1..v8, whichever the broker supports, asking
for no topics) whose broker list must hold a broker on 127.0.0.1:PORT. Standard library only.
Exit status: 0 ready, 1 timed out, 3 the broker process (PID) exited. Prints nothing on stdout.
"""

import os
import socket
import struct
import sys
import time

API_METADATA = 3
API_VERSIONS = 18
CLIENT_ID = b"sagaflow-broker-sh"


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        value = self.data[self.pos : self.pos + n].decode()
        self.pos += n
        return value


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        buf += chunk
    return buf


def call(sock, api_key, version, correlation_id, body):
    """Sends one request (header v1) and returns its response body after the correlation id."""
    header = struct.pack(">hhih", api_key, version, correlation_id, len(CLIENT_ID)) + CLIENT_ID
    request = header + body
    sock.sendall(struct.pack(">i", len(request)) + request)
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    response = Reader(recv_exact(sock, size))
    if response.take(">i") != correlation_id:
        raise ValueError("correlation id mismatch")
    return response


def metadata_range(sock):
    r = call(sock, API_VERSIONS, 0, 1, b"")
    error = r.take(">h")
    if error != 0:
        raise ValueError(f"ApiVersions error {error}")
    for _ in range(r.take(">i")):
        key, low, high = r.take(">h"), r.take(">h"), r.take(">h")
        if key == API_METADATA:
            return low, high
    raise ValueError("the broker does not offer Metadata")


def brokers(sock, version):
    body = struct.pack(">i", 0)  # v1+: an empty topic array asks for no topics
    if version >= 4:
        body += b"\x00"  # allow_auto_topic_creation
    if version >= 8:
        body += b"\x00\x00"  # include cluster / topic authorized operations
    r = call(sock, API_METADATA, version, 2, body)
    if version >= 3:
        r.take(">i")  # throttle_time_ms
    found = []
    for _ in range(r.take(">i")):
        node_id, host, port = r.take(">i"), r.string(), r.take(">i")
        r.string()  # rack (v1+)
        found.append((node_id, host, port))
    return found


def probe(port):
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        low, high = metadata_range(sock)
        version = min(high, 8)  # v9+ is the flexible encoding; v1..v8 are enough here
        if version < max(low, 1):
            sys.exit(f"ready.py: the broker's Metadata versions {low}..{high} are not understood here")
        return any(host == "127.0.0.1" and p == port for _, host, p in brokers(sock, version))


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie nobody has reaped yet is gone too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def main():
    port, pid, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return 3
        try:
            if probe(port):
                return 0
        except (OSError, ValueError, struct.error):
            pass  # not listening yet, or not serving yet
        time.sleep(0.2)
    return 1


if __name__ == "__main__":
    sys.exit(main())
