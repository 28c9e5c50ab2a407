"""A stand-in for a network receipt printer (ESC/POS over TCP), for tests and the demo.

`PrinterStandIn` listens on 127.0.0.1, answers DLE EOT status queries the way an Epson-style
printer does, and decodes what it receives back into printed lines, QR payloads and cuts.
Set `.mode` to make it misbehave: "ok", "paper_low", "offline", "paper_out", "cover_open",
"slow" (each read is delayed), "drop" (closes mid-job) or "refuse" (stops listening).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

Mode = Literal["ok", "paper_low", "offline", "paper_out", "cover_open", "slow", "drop", "refuse"]
MODES: tuple[Mode, ...] = (
    "ok",
    "paper_low",
    "offline",
    "paper_out",
    "cover_open",
    "slow",
    "drop",
    "refuse",
)

ESC, GS, FS, DLE = 0x1B, 0x1D, 0x1C, 0x10
EOT, ENQ, DC4 = 0x04, 0x05, 0x14
LF, CR, HT = 0x0A, 0x0D, 0x09

# Replies to DLE EOT n (n = 1 printer, 2 offline cause, 3 error cause, 4 paper sensor).
_OK = 0x12
STATUS_REPLIES: dict[str, dict[int, int]] = {
    "ok": {1: _OK, 2: _OK, 3: _OK, 4: _OK},
    "paper_low": {1: _OK, 2: _OK, 3: _OK, 4: _OK | 0x0C},
    "offline": {1: _OK | 0x08, 2: _OK, 3: _OK, 4: _OK},
    "paper_out": {1: _OK | 0x08, 2: _OK | 0x20, 3: _OK, 4: _OK | 0x60},
    "cover_open": {1: _OK | 0x08, 2: _OK | 0x04, 3: _OK, 4: _OK},
}

# Argument bytes after ESC x / FS x for the commands with a fixed length.
_ESC_ARGS = {
    ord("@"): 0,
    ord("E"): 1,
    ord("G"): 1,
    ord("a"): 1,
    ord("!"): 1,
    ord("-"): 1,
    ord("M"): 1,
    ord("{"): 1,
    ord("t"): 1,
    ord("R"): 1,
    ord("d"): 1,
    ord("J"): 1,
    ord("e"): 1,
    ord("2"): 0,
    ord("3"): 1,
    ord("V"): 1,
    ord("p"): 3,
    ord("S"): 0,
    ord("L"): 0,
    ord("T"): 1,
    ord(" "): 1,
    ord("$"): 2,
    ord("\\"): 2,
    ord("i"): 0,
    ord("m"): 0,
    ord("="): 1,
    ord("%"): 1,
    ord("r"): 1,
    ord("U"): 1,
    ord("9"): 1,
    ord("c"): 2,
    ord("B"): 2,
}
_FS_ARGS = {
    ord("&"): 0,
    ord("."): 0,
    ord("!"): 1,
    ord("-"): 1,
    ord("C"): 1,
    ord("S"): 2,
    ord("W"): 1,
    ord("p"): 2,
}
_GS_ARGS = {
    ord("!"): 1,
    ord("B"): 1,
    ord("h"): 1,
    ord("w"): 1,
    ord("H"): 1,
    ord("f"): 1,
    ord("L"): 2,
    ord("W"): 2,
    ord("a"): 1,
    ord("b"): 1,
    ord("P"): 2,
    ord("$"): 2,
    ord("\\"): 2,
    ord("I"): 1,
    ord("r"): 1,
}


@dataclass
class PrintedJob:
    """One job as the paper would show it: text lines, QR payloads, cuts."""

    lines: list[str] = field(default_factory=list)
    qr_codes: list[str] = field(default_factory=list)
    cuts: int = 0
    raw: bytes = b""
    complete: bool = False
    unknown_commands: list[bytes] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The printed lines joined with newlines."""
        return "\n".join(self.lines)


class _NeedMore(Exception):
    """The buffer ends inside a command; wait for more bytes."""


class EscPosDecoder:
    """Incremental ESC/POS decoder: feed it bytes as they arrive, read `.jobs`.

    Text is decoded as GB18030 (ASCII is a subset). A job ends at each cut, or when
    `finish()` is called (the connection closed). `on_status(n)` is called for every
    DLE EOT n and GS r n query so a server can answer it; its return value is ignored here.
    """

    def __init__(self, on_status: Callable[[int], object] | None = None) -> None:
        self.on_status = on_status
        self.jobs: list[PrintedJob] = []
        self.status_queries: list[int] = []
        self._buf = bytearray()
        self._line = bytearray()
        self._job = PrintedJob()
        self._job_raw = bytearray()
        self._qr_store = b""
        self._cut = False
        self._job_bytes = 0

    @property
    def job_bytes(self) -> int:
        """How many bytes of print data (not status queries) have been decoded so far."""
        return self._job_bytes

    def feed(self, data: bytes) -> None:
        """Decode as much of `data` (plus any earlier partial command) as possible."""
        self._buf += data
        pos = 0
        while pos < len(self._buf):
            try:
                used = self._step(pos)
            except _NeedMore:
                break
            if not self._is_status_query(pos):
                self._job_raw += self._buf[pos : pos + used]
                self._job_bytes += used
            if self._cut:
                self._cut = False
                self._end_job(complete=True)
            pos += used
        del self._buf[:pos]

    def finish(self, complete: bool = True) -> None:
        """End the stream: a job with anything in it is recorded; `complete` False if dropped."""
        self._flush_line()
        if self._has_content():
            self._end_job(complete=complete)

    def _is_status_query(self, pos: int) -> bool:
        return self._buf[pos] == DLE or (
            self._buf[pos] == GS and pos + 1 < len(self._buf) and self._buf[pos + 1] == ord("r")
        )

    def _has_content(self) -> bool:
        return bool(self._job.lines or self._job.qr_codes or self._job_raw)

    def _need(self, pos: int, count: int) -> None:
        if pos + count > len(self._buf):
            raise _NeedMore

    def _step(self, pos: int) -> int:
        """Handle the byte(s) at `pos`; return how many were consumed."""
        byte = self._buf[pos]
        if byte == ESC:
            return self._esc(pos)
        if byte == GS:
            return self._gs(pos)
        if byte == FS:
            self._need(pos, 2)
            return 2 + self._fixed(_FS_ARGS, pos, b"FS")
        if byte == DLE:
            return self._dle(pos)
        if byte == LF:
            self._flush_line(force=True)
        elif byte == HT:
            self._line += b" "
        elif byte >= 0x20:
            self._line += bytes([byte])
        return 1  # CR and other control bytes print nothing

    def _fixed(self, table: dict[int, int], pos: int, prefix: bytes) -> int:
        """Length of the arguments of a fixed-length command (0 and noted if unknown)."""
        cmd = self._buf[pos + 1]
        if cmd not in table:
            self._job.unknown_commands.append(prefix + bytes([cmd]))
            return 0
        self._need(pos, 2 + table[cmd])
        return table[cmd]

    def _esc(self, pos: int) -> int:
        self._need(pos, 2)
        cmd = self._buf[pos + 1]
        if cmd in (ord("d"), ord("J")):
            self._need(pos, 3)
            self._flush_line()
            return 3
        if cmd == ord("*"):  # bit image: m nL nH data
            self._need(pos, 5)
            m, count = self._buf[pos + 2], self._buf[pos + 3] + 256 * self._buf[pos + 4]
            size = count * (3 if m in (32, 33) else 1)
            self._need(pos, 5 + size)
            return 5 + size
        return 2 + self._fixed(_ESC_ARGS, pos, b"ESC")

    def _gs(self, pos: int) -> int:
        self._need(pos, 2)
        cmd = self._buf[pos + 1]
        if cmd == ord("V"):  # cut: GS V m, plus n for m = 65, 66, 97, 98, 103, 104
            self._need(pos, 3)
            size = 4 if self._buf[pos + 2] in (65, 66, 97, 98, 103, 104) else 3
            self._need(pos, size)
            self._flush_line()
            self._job.cuts += 1
            self._cut = True
            return size
        if cmd == ord("("):  # GS ( fn pL pH data
            self._need(pos, 5)
            size = self._buf[pos + 3] + 256 * self._buf[pos + 4]
            self._need(pos, 5 + size)
            if self._buf[pos + 2] == ord("k"):
                self._qr(bytes(self._buf[pos + 5 : pos + 5 + size]))
            return 5 + size
        if cmd == ord("v"):  # GS v 0 m xL xH yL yH data: raster image
            self._need(pos, 8)
            width = self._buf[pos + 4] + 256 * self._buf[pos + 5]
            height = self._buf[pos + 6] + 256 * self._buf[pos + 7]
            self._need(pos, 8 + width * height)
            return 8 + width * height
        if cmd == ord("k"):  # barcode: m < 7 NUL-terminated, else length byte
            self._need(pos, 3)
            if self._buf[pos + 2] < 7:
                end = self._buf.find(b"\x00", pos + 3)
                if end < 0:
                    raise _NeedMore
                return end + 1 - pos
            self._need(pos, 4)
            return 4 + self._buf[pos + 3]
        if cmd == ord("r"):
            self._need(pos, 3)
            self._query(self._buf[pos + 2])
            return 3
        return 2 + self._fixed(_GS_ARGS, pos, b"GS")

    def _dle(self, pos: int) -> int:
        self._need(pos, 2)
        cmd = self._buf[pos + 1]
        if cmd == EOT:
            self._need(pos, 3)
            self._query(self._buf[pos + 2])
            return 3
        if cmd == ENQ:
            self._need(pos, 3)
            return 3
        if cmd == DC4:
            self._need(pos, 5)
            return 5
        self._line += b"\x10"
        return 1

    def _query(self, n: int) -> None:
        self.status_queries.append(n)
        if self.on_status is not None:
            self.on_status(n)

    def _qr(self, data: bytes) -> None:
        """GS ( k: cn fn [m] data; store (fn 80) then print (fn 81) records the payload."""
        if len(data) < 2 or data[0] != ord("1"):
            return
        fn = data[1]
        if fn == 80:
            self._qr_store = data[3:]
        elif fn == 81:
            self._job.qr_codes.append(self._qr_store.decode("utf-8", "replace"))

    def _flush_line(self, force: bool = False) -> None:
        if self._line or force:
            self._job.lines.append(bytes(self._line).decode("gb18030", "replace"))
            self._line.clear()

    def _end_job(self, complete: bool) -> None:
        self._job.raw = bytes(self._job_raw)
        self._job.complete = complete
        self.jobs.append(self._job)
        self._job = PrintedJob()
        self._job_raw.clear()


def decode_escpos(data: bytes) -> list[PrintedJob]:
    """Decode a complete ESC/POS byte string into its jobs (one per cut, plus any tail)."""
    decoder = EscPosDecoder()
    decoder.feed(data)
    decoder.finish()
    return decoder.jobs


class PrinterStandIn:
    """A fake network receipt printer on 127.0.0.1; use as `async with PrinterStandIn() as p:`.

    The transport is blocking, so drive it from another thread
    (`await asyncio.to_thread(send_to_printer, ...)`) while this server runs on the loop.
    """

    def __init__(
        self,
        mode: Mode = "ok",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        delay: float = 0.5,
        drop_after: int = 64,
    ) -> None:
        self.host = host
        self.delay = delay
        self.drop_after = drop_after
        self.jobs: list[PrintedJob] = []
        self.status_queries: list[int] = []
        self.connections = 0
        self._port = port
        self._sock: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._started = False
        if mode not in MODES:
            raise ValueError(f"unknown printer mode {mode!r}; one of {', '.join(MODES)}")
        self._mode = mode

    @property
    def port(self) -> int:
        """The TCP port (known once started)."""
        return self._port

    @property
    def uri(self) -> str:
        """`tcp://127.0.0.1:PORT`."""
        return f"tcp://{self.host}:{self._port}"

    @property
    def mode(self) -> Mode:
        """How the printer behaves; "refuse" closes the listening socket at once."""
        return self._mode

    @mode.setter
    def mode(self, value: Mode) -> None:
        if value not in MODES:
            raise ValueError(f"unknown printer mode {value!r}; one of {', '.join(MODES)}")
        self._mode = value
        if not self._started:
            return
        if value == "refuse":
            self._stop_listening()
        elif self._sock is None:
            self._listen()

    async def __aenter__(self) -> PrinterStandIn:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind the port and start serving (unless the mode is "refuse")."""
        self._started = True
        self._listen()
        if self._mode == "refuse":
            self._stop_listening()

    async def stop(self) -> None:
        """Stop listening and end open connections."""
        self._stop_listening()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._started = False

    async def idle(self) -> None:
        """Wait until every connection so far has been closed and its job recorded.

        Wrap it in `asyncio.timeout(...)` to bound the wait.
        """
        await self._idle.wait()

    def _listen(self) -> None:
        """Bind and listen synchronously (clients queue in the backlog), then serve."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        sock.listen(16)
        sock.setblocking(False)
        self._port = sock.getsockname()[1]
        self._sock = sock
        task = asyncio.get_running_loop().create_task(self._serve(sock))
        self._track(task)

    async def _serve(self, sock: socket.socket) -> None:
        if sock is not self._sock:
            return  # told to refuse before the server got going
        server = await asyncio.start_server(self._handle, sock=sock)
        if sock is self._sock:
            self._server = server
        else:
            server.close()

    def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.connections += 1
        self._active += 1
        self._idle.clear()
        decoder = EscPosDecoder(on_status=lambda n: self._answer(writer, n))
        complete = True
        try:
            complete = await self._receive(reader, writer, decoder)
        except ConnectionError:
            complete = False
        except asyncio.CancelledError:
            complete = False
            raise
        finally:
            decoder.finish(complete=complete)
            self.jobs += decoder.jobs
            self.status_queries += decoder.status_queries
            if complete:
                writer.close()
            else:
                writer.transport.abort()
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    async def _receive(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: EscPosDecoder,
    ) -> bool:
        """Read until the client closes; False when this stand-in dropped the connection."""
        while True:
            if self._mode == "slow":
                await asyncio.sleep(self.delay)
            data = await reader.read(4096)
            if not data:
                return True
            if self._mode == "drop":
                # Take the job in small pieces and hang up once part of it has arrived.
                for start in range(0, len(data), 16):
                    decoder.feed(data[start : start + 16])
                    if decoder.job_bytes > self.drop_after:
                        return False
            else:
                decoder.feed(data)
            await writer.drain()

    def _answer(self, writer: asyncio.StreamWriter, n: int) -> None:
        replies = STATUS_REPLIES.get(self._mode, STATUS_REPLIES["ok"])
        writer.write(bytes([replies.get(n, _OK)]))
