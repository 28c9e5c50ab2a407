"""Printer URIs as operators write them: tcp://host:9100, usb://vid:pid, serial://, file://."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit


class PrinterUriError(ValueError):
    """The URI does not name a printer this service can reach."""


@dataclass(frozen=True)
class PrinterTarget:
    scheme: str
    host: str = ""
    port: int = 9100
    vendor_id: int = 0
    product_id: int = 0
    path: str = ""
    options: dict[str, str] = field(default_factory=dict)


def parse_printer_uri(uri: str) -> PrinterTarget:
    """Parse and validate; raise `PrinterUriError` with a one-line reason."""
    parts = urlsplit(uri.strip())
    scheme = parts.scheme.lower()
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if scheme == "tcp":
        if not parts.hostname:
            raise PrinterUriError(f"{uri!r}: tcp printer needs a host, e.g. tcp://10.0.0.5:9100")
        try:
            port = parts.port or 9100
        except ValueError:
            raise PrinterUriError(f"{uri!r}: port must be a number 1-65535") from None
        return PrinterTarget("tcp", host=parts.hostname, port=port, options=options)
    if scheme == "usb":
        ids = (parts.netloc + parts.path).strip("/").split(":")
        try:
            vendor, product = (int(x, 16) for x in ids)
        except ValueError:
            raise PrinterUriError(f"{uri!r}: usb printer is usb://VENDOR:PRODUCT in hex") from None
        if not (0 < vendor <= 0xFFFF and 0 < product <= 0xFFFF):
            raise PrinterUriError(f"{uri!r}: usb ids must be 1-FFFF")
        return PrinterTarget("usb", vendor_id=vendor, product_id=product, options=options)
    if scheme in ("serial", "file"):
        if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
            raise PrinterUriError(
                f"{uri!r}: {scheme} printer needs an absolute path, e.g. {scheme}:///dev/ttyUSB0"
            )
        return PrinterTarget(scheme, path=parts.path, options=options)
    raise PrinterUriError(f"{uri!r}: scheme must be tcp, usb, serial or file")
