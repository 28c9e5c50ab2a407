"""Locating the CJK font the PDF and PNG slips are drawn with (WenQuanYi Micro Hei)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

FONT_ENV = "RECEIPT_FONT_PATH"
DEFAULT_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
FONT_FAMILY = "WenQuanYi Micro Hei"
INSTALL_HINT = "run `apt-get install fonts-wqy-microhei` (the Makefile does this)"


class FontNotFound(RuntimeError):
    """No usable CJK font; the message says how to install one."""


def find_cjk_font(explicit: str | Path | None = None) -> Path:
    """Return the CJK font file: `explicit`, then $RECEIPT_FONT_PATH, the Debian path, fc-match.

    A path that was asked for explicitly (argument or environment) must exist; we never fall
    back silently from a configured font to another one.
    """
    configured = explicit or os.environ.get(FONT_ENV)
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            source = "argument" if explicit else f"${FONT_ENV}"
            raise FontNotFound(f"CJK font {path} (from {source}) does not exist; {INSTALL_HINT}")
        return path
    if DEFAULT_FONT.is_file():
        return DEFAULT_FONT
    found = _fontconfig_lookup()
    if found is not None:
        return found
    raise FontNotFound(
        f"no CJK font found ({FONT_FAMILY} at {DEFAULT_FONT} or via fontconfig); {INSTALL_HINT},"
        f" or set ${FONT_ENV} to a .ttc/.ttf file"
    )


def face_index(path: Path) -> int:
    """The face to use inside the file: the Mono face (1) of a .ttc collection, else 0."""
    return 1 if path.suffix.lower() == ".ttc" else 0


def _fontconfig_lookup() -> Path | None:
    """Ask fc-match for WenQuanYi Micro Hei; fc-match always answers, so check the family."""
    fc_match = shutil.which("fc-match")
    if fc_match is None:
        return None
    try:
        out = subprocess.run(
            [fc_match, "-f", "%{file}|%{family}", FONT_FAMILY],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    file, _, family = out.partition("|")
    path = Path(file.strip())
    if FONT_FAMILY.lower() in family.lower() and path.is_file():
        return path
    return None
