"""Chinese is the first language: every message has a zh_CN translation with the same fields."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

LOCALES = Path(__file__).resolve().parent.parent / "locales"
FIELD = re.compile(r"\{(\w*)\}")


@pytest.mark.parametrize("locale", ["zh_CN", "en"])
def test_translations_keep_the_placeholders(locale: str) -> None:
    with (LOCALES / locale / "LC_MESSAGES" / "messages.po").open("rb") as f:
        catalog = read_po(f, locale=locale)
    untranslated, broken = [], []
    for message in catalog:
        if not message.id or not isinstance(message.id, str):
            continue
        if not message.string:
            untranslated.append(message.id)
            continue
        if sorted(FIELD.findall(message.id)) != sorted(FIELD.findall(str(message.string))):
            broken.append(message.id)
    assert broken == []
    if locale == "zh_CN":
        assert untranslated == []
