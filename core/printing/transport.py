"""The blocking transport that delivers ESC/POS bytes to a printer, and its status replies.

Printer addresses are parsed in `core.printing.uri` (re-exported here).

Everything here blocks (sockets, USB, serial, files). Callers on the event loop run it with
`asyncio.to_thread(send_to_printer, target, payload)`; never call it inside a handler directly.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from escpos.exceptions import DeviceNotFoundError
from escpos.printer import File, Network, Serial, Usb

from core.printing.uri import (
    DEFAULT_BAUDRATE,
    DEFAULT_TCP_PORT,
    PrinterTarget,
    PrinterUriError,
    TargetKind,
    parse_printer_uri,
)

__all__ = [
    "DEFAULT_BAUDRATE",
    "DEFAULT_TCP_PORT",
    "DEFAULT_TIMEOUT",
    "PrinterConnectionError",
    "PrinterCoverOpen",
    "PrinterError",
    "PrinterOffline",
    "PrinterPaperOut",
    "PrinterStatus",
    "PrinterTarget",
    "PrinterTimeout",
    "PrinterUriError",
    "TargetKind",
    "decode_status",
    "parse_printer_uri",
    "raise_for_status",
    "send_to_printer",
]

DEFAULT_TIMEOUT = 10.0

DLE_EOT = b"\x10\x04"
STATUS_PRINTER = 1  # bit 3: offline
STATUS_OFFLINE_CAUSE = 2  # bit 2: cover open; bit 5: stopped at paper end
STATUS_PAPER = 4  # bits 2,3: paper near end; bits 5,6: paper end
_FIXED_BITS_MASK = 0x93  # bits 0,1,4,7 of every DLE EOT reply are fixed at 0,1,1,0
_FIXED_BITS = 0x12


@dataclass(frozen=True, slots=True)
class PrinterStatus:
    """What the printer reported over DLE EOT; `checked` is False when it could not be asked."""

    online: bool = True
    cover_open: bool = False
    paper_out: bool = False
    paper_low: bool = False
    checked: bool = True

    @property
    def ready(self) -> bool:
        """True when a job can be sent (paper low is only a warning)."""
        return self.online and not self.cover_open and not self.paper_out

    def describe(self) -> tuple[str, str]:
        """A short (zh, en) phrase for the operator."""
        if not self.checked:
            return ("未检查打印机状态", "printer status not checked")
        if self.cover_open:
            return ("打印机纸仓盖未关", "printer cover is open")
        if self.paper_out:
            return ("打印机缺纸", "printer is out of paper")
        if not self.online:
            return ("打印机离线", "printer is offline")
        if self.paper_low:
            return ("打印机纸将用尽", "printer paper is running low")
        return ("打印机正常", "printer ready")


def decode_status(printer: int, offline_cause: int, paper: int) -> PrinterStatus:
    """Decode the replies to DLE EOT 1, 2 and 4 (Epson ESC/POS bit layout)."""
    for name, byte in (("printer", printer), ("offline cause", offline_cause), ("paper", paper)):
        if byte & _FIXED_BITS_MASK != _FIXED_BITS:
            raise PrinterConnectionError(
                f"the device's {name} status byte 0x{byte:02x} is not an ESC/POS status reply"
            )
    return PrinterStatus(
        online=not printer & 0x08,
        cover_open=bool(offline_cause & 0x04),
        paper_out=bool(paper & 0x60) or bool(offline_cause & 0x20),
        paper_low=bool(paper & 0x0C),
    )


class PrinterError(Exception):
    """Printing failed; `.reason` says why in one line, `.sent` whether any bytes went out."""

    def __init__(self, reason: str, *, status: PrinterStatus | None = None, sent: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.sent = sent


class PrinterOffline(PrinterError):
    """The printer reports itself offline."""


class PrinterPaperOut(PrinterError):
    """The printer has no paper."""


class PrinterCoverOpen(PrinterError):
    """The printer's cover is open."""


class PrinterTimeout(PrinterError):
    """The printer did not answer in time."""


class PrinterConnectionError(PrinterError):
    """The printer could not be reached, or the connection broke."""


def raise_for_status(status: PrinterStatus, *, sent: bool = False) -> None:
    """Raise the typed error for a status that cannot print; return if it can."""
    if status.ready:
        return
    zh, en = status.describe()
    after = " after the slip was sent; it may be incomplete" if sent else ""
    error: type[PrinterError]
    if status.cover_open:
        error = PrinterCoverOpen
    elif status.paper_out:
        error = PrinterPaperOut
    else:
        error = PrinterOffline
    raise error(f"{en}{after} ({zh})", status=status, sent=sent)


class _Link(Protocol):
    """The two things the transport needs from a connection."""

    def write(self, data: bytes) -> None: ...

    def read_status(self, n: int) -> int: ...

    def close(self) -> None: ...


class _Deadline:
    """One time budget shared by every step of a job."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise PrinterTimeout(f"printer did not finish within {self.seconds:g}s")
        return left


class _TcpLink:
    """python-escpos `Network` with a total deadline and typed errors."""

    def __init__(self, target: PrinterTarget, deadline: _Deadline) -> None:
        self.where = f"{target.host}:{target.port}"
        self.deadline = deadline
        self.printer = Network(target.host, target.port, timeout=deadline.remaining())
        try:
            self.printer.open()
        except DeviceNotFoundError as exc:
            cause = exc.__context__
            if isinstance(cause, TimeoutError):
                raise PrinterTimeout(
                    f"printer {self.where} did not accept a connection in time"
                ) from exc
            detail = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
            raise PrinterConnectionError(
                f"cannot connect to printer {self.where}: {detail}"
            ) from exc

    def _arm(self) -> None:
        """Give the next socket operation whatever is left of the job's time budget."""
        sock = self.printer.device
        assert isinstance(sock, socket.socket)
        sock.settimeout(self.deadline.remaining())

    def write(self, data: bytes) -> None:
        with self._errors("sending the slip"):
            self._arm()
            self.printer._raw(data)

    def read_status(self, n: int) -> int:
        with self._errors("reading its status"):
            self._arm()
            reply = self.printer.query_status(DLE_EOT + bytes([n]))
        if not reply:
            raise PrinterConnectionError(f"printer {self.where} closed the connection")
        return reply[0]

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except TimeoutError as exc:
            raise PrinterTimeout(f"printer {self.where} timed out while {doing}") from exc
        except OSError as exc:
            reason = exc.strerror or exc.__class__.__name__
            raise PrinterConnectionError(
                f"connection to printer {self.where} broke while {doing}: {reason}"
            ) from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.printer.close()


class _EscposLink:
    """USB and serial printers through python-escpos's `Usb` / `Serial` (`_raw`, `_read`)."""

    def __init__(self, printer: Usb | Serial, where: str) -> None:
        self.printer = printer
        self.where = where
        try:
            printer.open()
        except DeviceNotFoundError as exc:
            raise PrinterConnectionError(f"cannot open printer {where}: {exc}") from exc
        except Exception as exc:  # pyusb/pyserial raise their own exception types
            raise PrinterConnectionError(f"cannot open printer {where}: {exc}") from exc

    def write(self, data: bytes) -> None:
        try:
            self.printer._raw(data)
        except Exception as exc:
            raise PrinterConnectionError(f"writing to printer {self.where} failed: {exc}") from exc

    def read_status(self, n: int) -> int:
        try:
            self.printer._raw(DLE_EOT + bytes([n]))
            reply = self.printer._read()
        except Exception as exc:
            raise PrinterConnectionError(
                f"reading printer {self.where} status failed: {exc}"
            ) from exc
        if not reply:
            raise PrinterTimeout(f"printer {self.where} did not answer its status query")
        return reply[0]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.printer.close()


def _open(target: PrinterTarget, deadline: _Deadline) -> _Link:
    if target.kind == "tcp":
        return _TcpLink(target, deadline)
    if target.kind == "usb":
        if not Usb.is_usable():
            raise PrinterConnectionError("USB printing needs pyusb: install python-escpos[usb]")
        usb = Usb(target.vendor_id, target.product_id, timeout=int(deadline.remaining() * 1000))
        return _EscposLink(usb, target.uri)
    if not Serial.is_usable():
        raise PrinterConnectionError(
            "serial printing needs pyserial: install python-escpos[serial]"
        )
    serial = Serial(target.path, baudrate=target.baudrate, timeout=deadline.remaining())
    return _EscposLink(serial, target.uri)


def _query_status(link: _Link) -> PrinterStatus:
    """Ask DLE EOT 1, 2 and 4 and decode the answers."""
    return decode_status(
        link.read_status(STATUS_PRINTER),
        link.read_status(STATUS_OFFLINE_CAUSE),
        link.read_status(STATUS_PAPER),
    )


def _write_file(target: PrinterTarget, payload: bytes) -> PrinterStatus:
    if not Path(target.path).parent.is_dir():
        raise PrinterConnectionError(f"folder for {target.path} does not exist")
    printer = File(target.path)
    try:
        printer.open()
        printer._raw(payload)
        printer.close()
    except (DeviceNotFoundError, OSError) as exc:
        raise PrinterConnectionError(f"cannot write {target.path}: {exc}") from exc
    return PrinterStatus(checked=False)


def send_to_printer(
    target: PrinterTarget,
    payload: bytes,
    timeout: float = DEFAULT_TIMEOUT,
    check_status: bool = True,
) -> PrinterStatus:
    """Send one job; blocking by design (run it with `asyncio.to_thread`).

    With `check_status`, asks the printer's status (DLE EOT) before sending, and raises
    `PrinterOffline`/`PrinterPaperOut`/`PrinterCoverOpen` without sending anything; asks again
    after sending and raises (with `.sent = True`) if the printer stopped mid-job. `timeout`
    is the budget for the whole job. Returns the status after printing (a file target cannot
    be asked: `checked=False`).
    """
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    if target.kind == "file":
        return _write_file(target, payload)
    deadline = _Deadline(timeout)
    link = _open(target, deadline)
    try:
        if check_status:
            raise_for_status(_query_status(link))
        try:
            link.write(payload)
        except PrinterError as exc:
            exc.sent = True
            raise
        if not check_status:
            return PrinterStatus(checked=False)
        try:
            after = _query_status(link)
        except PrinterError as exc:
            exc.sent = True
            raise
        raise_for_status(after, sent=True)
        return after
    finally:
        link.close()
