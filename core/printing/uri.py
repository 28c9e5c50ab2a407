"""Printer URIs as operators write them: tcp://host:9100, usb://vid:pid, serial://, file://.

The one parser of printer addresses: enrolment validates with it when a printer is bound, and
the transport reaches the printer it names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, urlsplit

TargetKind = Literal["tcp", "usb", "serial", "file"]
DEFAULT_TCP_PORT = 9100
DEFAULT_BAUDRATE = 9600
_BAUDRATES = frozenset({1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200})


class PrinterUriError(ValueError):
    """A printer URI that is not one of the supported forms."""


@dataclass(frozen=True, slots=True)
class PrinterTarget:
    """Where a printer is: tcp host/port, USB vendor/product, serial device, or a file."""

    kind: TargetKind
    host: str = ""
    port: int = DEFAULT_TCP_PORT
    vendor_id: int = 0
    product_id: int = 0
    path: str = ""
    baudrate: int = DEFAULT_BAUDRATE

    @property
    def uri(self) -> str:
        """The canonical URI for this target."""
        if self.kind == "tcp":
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"tcp://{host}:{self.port}"
        if self.kind == "usb":
            return f"usb://0x{self.vendor_id:04x}:0x{self.product_id:04x}"
        if self.kind == "serial":
            return f"serial://{self.path}?baudrate={self.baudrate}"
        return f"file://{self.path}"

    def __str__(self) -> str:
        return self.uri


def parse_printer_uri(uri: str) -> PrinterTarget:
    """Parse `tcp://host[:9100]`, `usb://0xVVVV:0xPPPP`, `serial:///dev/tty...?baudrate=N`,
    `file:///abs/path`; anything else raises `PrinterUriError` (a `ValueError`) with the reason.
    """
    text = (uri or "").strip()
    scheme, sep, _ = text.partition("://")
    if not sep:
        raise PrinterUriError(
            f"not a printer URI (expected tcp://, usb://, serial://, file://): {text!r}"
        )
    scheme = scheme.lower()
    if scheme == "tcp":
        return _parse_tcp(text)
    if scheme == "usb":
        return _parse_usb(text)
    if scheme == "serial":
        return _parse_serial(text)
    if scheme == "file":
        return _parse_file(text)
    raise PrinterUriError(f"unsupported printer scheme {scheme!r}; use tcp, usb, serial or file")


def _parse_tcp(text: str) -> PrinterTarget:
    parts = urlsplit(text)
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise PrinterUriError(f"a tcp printer URI is only tcp://host[:port]: {text!r}")
    try:
        port = parts.port
    except ValueError:
        raise PrinterUriError(f"tcp port must be a number from 1 to 65535: {text!r}") from None
    host = parts.hostname or ""
    if not host:
        raise PrinterUriError(f"tcp printer URI has no host: {text!r}")
    if port == 0:
        raise PrinterUriError(f"tcp port must be a number from 1 to 65535: {text!r}")
    return PrinterTarget("tcp", host=host, port=port or DEFAULT_TCP_PORT)


def _parse_usb(text: str) -> PrinterTarget:
    ids = text[len("usb://") :].rstrip("/")
    vendor, sep, product = ids.partition(":")
    try:
        if not sep:
            raise ValueError
        vendor_id, product_id = int(vendor, 16), int(product, 16)
    except ValueError:
        raise PrinterUriError(
            f"usb printer URI must be usb://0xVVVV:0xPPPP (hex): {text!r}"
        ) from None
    if not (0 < vendor_id <= 0xFFFF and 0 < product_id <= 0xFFFF):
        raise PrinterUriError(f"usb vendor and product ids must be 0x0001-0xffff: {text!r}")
    return PrinterTarget("usb", vendor_id=vendor_id, product_id=product_id)


def _parse_serial(text: str) -> PrinterTarget:
    parts = urlsplit(text)
    if parts.netloc or not parts.path.startswith("/dev/"):
        raise PrinterUriError(f"serial printer URI must be serial:///dev/<device>: {text!r}")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"baudrate"}
    if unknown:
        raise PrinterUriError(f"serial printer URI accepts only baudrate, not {sorted(unknown)}")
    baudrate = DEFAULT_BAUDRATE
    if "baudrate" in query:
        value = query["baudrate"][-1]
        if not value.isdigit() or int(value) not in _BAUDRATES:
            raise PrinterUriError(f"unsupported serial baudrate {value!r}")
        baudrate = int(value)
    return PrinterTarget("serial", path=parts.path, baudrate=baudrate)


def _parse_file(text: str) -> PrinterTarget:
    parts = urlsplit(text)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/") or parts.query:
        raise PrinterUriError(f"file printer URI must be file:///absolute/path: {text!r}")
    if parts.path.endswith("/"):
        raise PrinterUriError(f"file printer URI names a folder, not a file: {text!r}")
    return PrinterTarget("file", path=parts.path)
