# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FONT := /usr/share/fonts/truetype/wqy/wqy-microhei.ttc

.PHONY: setup fonts catalogues messages lint typecheck test demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# The receipt PDF/PNG need a CJK font (WenQuanYi Micro Hei, Debian fonts-wqy-microhei).
fonts:
	@if [ -z "$$RECEIPT_FONT_PATH" ] && [ ! -f $(FONT) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing fonts-wqy-microhei (CJK font for receipts)"; \
	    (apt-get install -y -qq fonts-wqy-microhei >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null && apt-get install -y -qq fonts-wqy-microhei >/dev/null)); \
	  else \
	    echo "need the font fonts-wqy-microhei: sudo apt-get install fonts-wqy-microhei," \
	         "or set RECEIPT_FONT_PATH to a CJK TrueType font" >&2; exit 1; \
	  fi; \
	fi

catalogues: $(STAMP)
	$(VENV)/bin/pybabel compile -d locales -D messages --statistics

setup: $(STAMP) fonts catalogues

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

test: lint typecheck
	$(VENV)/bin/pytest

demo: setup
	$(VENV)/bin/reprint-bot demo

bench: setup
	$(PY) bench/import_ledger.py
	$(PY) bench/render.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# After changing user-facing text: refresh the catalogues, then translate the new entries.
messages: $(STAMP)
	$(VENV)/bin/pybabel extract -F babel.cfg -k _ -k __ -k t -k lazy_gettext \
	  --no-location --sort-output -o locales/messages.pot .
	$(VENV)/bin/pybabel update -i locales/messages.pot -d locales -D messages --no-fuzzy-matching
