"""The floor for Autobahn section 9: a bare blocking echo server, not a WebSocket library.

    python bare_peer.py server     prints "PORT n", serves until killed

One thread per connection, blocking reads, no validation, no close
handshake beyond echoing the close frame, no limits: only what the
round-trip cases need, so that what remains of their time is the driver's.
Used by hand (see docs/performance.md), never by the benchmark or the tests.
"""

import base64
import hashlib
import socket
import struct
import sys
import threading

ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError
            self.buffer += data
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken


def head(opcode: int, size: int) -> bytes:
    if size < 126:
        return bytes([0x80 | opcode, size])
    if size < 65536:
        return bytes([0x80 | opcode, 126]) + struct.pack("!H", size)
    return bytes([0x80 | opcode, 127]) + struct.pack("!Q", size)


def echo(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = Reader(sock)
    while b"\r\n\r\n" not in reader.buffer:
        reader.buffer += sock.recv(65536)
    request, reader.buffer = reader.buffer.split(b"\r\n\r\n", 1)
    key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    accept = base64.b64encode(hashlib.sha1(key + ACCEPT_GUID).digest())
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    parts: list[bytes] = []
    message_opcode = 0
    try:
        while True:
            first, second = reader.take(2)
            size = second & 0x7F
            if size == 126:
                size = struct.unpack("!H", reader.take(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", reader.take(8))[0]
            key = reader.take(4)
            pad = (key * (size // 4 + 1))[:size]
            payload = (int.from_bytes(reader.take(size), "little")
                       ^ int.from_bytes(pad, "little")).to_bytes(size, "little")
            opcode = first & 0x0F
            if opcode == 0x8:
                sock.sendall(head(0x8, size) + payload)
                break
            if opcode == 0x9:
                sock.sendall(head(0xA, size) + payload)
                continue
            if opcode:
                message_opcode = opcode
            parts.append(payload)
            if first & 0x80:
                message = b"".join(parts)
                parts = []
                sock.sendall(head(message_opcode, len(message)) + message)
    except (EOFError, OSError):
        pass
    sock.close()


def main() -> None:
    if sys.argv[1:2] != ["server"]:
        sys.exit(__doc__)
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=echo, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    main()
