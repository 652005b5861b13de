"""A 2048x1080 RGBA half frame round trip: BodyDouble protocol (raw zero-copy buffers) vs PNG-16 + base64 in
JSON (what ComfyUI-style tools send). Both over the same DEALER/ROUTER pair on loopback; the echo side decodes
the frame fully and sends it back encoded the same way. Target: >= 20x faster.
"""
from __future__ import annotations

import argparse
import base64
import json
import statistics
import struct
import threading
import time
import zlib

import numpy as np
import zmq

from bodydouble import protocol


def png16_encode(rgba_u16: np.ndarray) -> bytes:
    """A real 16-bit RGBA PNG (filter 0, zlib level 6), as image libraries write it."""
    h, w, c = rgba_u16.shape
    raw = np.empty((h, 1 + w * c * 2), np.uint8)
    raw[:, 0] = 0
    raw[:, 1:] = rgba_u16.astype(">u2").view(np.uint8).reshape(h, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b"")


def png16_decode(data: bytes) -> np.ndarray:
    w, h = struct.unpack(">II", data[16:24])
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, -1)[:, 1:]
    return raw.copy().view(">u2").reshape(h, w, 4).astype(np.uint16)


def to_json_png(frame_half: np.ndarray) -> bytes:
    # PNG holds 16-bit integers: the float plate must be quantised (and loses overbrights) on the way in.
    u16 = (np.clip(frame_half.astype(np.float32), 0, 1) * 65535 + 0.5).astype(np.uint16)
    return json.dumps({"type": "image", "png": base64.b64encode(png16_encode(u16)).decode()}).encode()


def from_json_png(data: bytes) -> np.ndarray:
    u16 = png16_decode(base64.b64decode(json.loads(data)["png"]))
    return (u16.astype(np.float32) / 65535).astype(np.float16)


def echo(ctx: zmq.Context, address: str, stop: threading.Event) -> None:
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(address)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while not stop.is_set():
        if not poller.poll(100):
            continue
        frames = sock.recv_multipart(copy=False)
        peer, rest = frames[0], frames[1:]
        if bytes(rest[0].buffer) == protocol.TAG:
            msg = protocol.decode(rest)
            sock.send_multipart([peer, *protocol.encode(protocol.Message("result", msg.id, buffers=msg.buffers))], copy=False)
        else:
            image = from_json_png(rest[0].bytes)
            sock.send_multipart([peer, to_json_png(image)])
    sock.close(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # A plate-like frame: smooth gradients + grain, as compressible as real footage roughly is.
    y, x = np.mgrid[0:1080, 0:2048].astype(np.float32)
    base = np.stack([x / 2048, y / 1080, (x + y) / 3128, np.ones_like(x)], -1)
    frame = (base + rng.normal(0, 0.01, base.shape)).astype(np.float16)

    ctx = zmq.Context()
    stop = threading.Event()
    address = "tcp://127.0.0.1:0"
    probe = ctx.socket(zmq.ROUTER)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(0)
    address = f"tcp://127.0.0.1:{port}"
    server = threading.Thread(target=echo, args=(ctx, address, stop), daemon=True)
    server.start()
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(address)

    def ours() -> float:
        t = time.perf_counter()
        dealer.send_multipart(protocol.encode(protocol.Message("submit", "b", buffers=[frame])), copy=False)
        back = protocol.decode(dealer.recv_multipart(copy=False), expect=protocol.REPLY_TYPES)
        assert back.buffers[0].shape == frame.shape
        return time.perf_counter() - t

    def theirs() -> float:
        t = time.perf_counter()
        dealer.send(to_json_png(frame))
        back = from_json_png(dealer.recv())
        assert back.shape == frame.shape
        return time.perf_counter() - t

    ours(), theirs()
    a, b = [], []
    for _ in range(args.repeats):
        a.append(ours())
        b.append(theirs())
    stop.set()
    server.join()
    dealer.close(0)
    ctx.term()
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"2048x1080 RGBA half ({frame.nbytes / 1e6:.1f} MB) round trip, {args.repeats} interleaved runs")
    print(f"  BodyDouble protocol (raw buffers)  : {ma * 1000:8.1f} ms (median)")
    print(f"  PNG-16 + base64 in JSON             : {mb * 1000:8.1f} ms (median)")
    print(f"  speed-up                            : {mb / ma:.1f}x   (target >= 20x)")


if __name__ == "__main__":
    main()
