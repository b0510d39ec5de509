# The two commands a new user runs:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PHOTOS ?= ../shared/datasets/caltech101
COLLECTION ?= demo.lookalike
QUERY  ?= $(firstword $(wildcard $(PHOTOS)/*/image_0001.jpg $(PHOTOS)/*/*.jpg))

.PHONY: setup demo serve test lock clean browser

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# Index a real photo folder (incremental: a second run only embeds what changed) and search it.
demo: setup
	$(BIN)/lookalike index $(PHOTOS) --collection $(COLLECTION)
	$(BIN)/lookalike info --collection $(COLLECTION) --top 5
	$(BIN)/lookalike search "$(QUERY)" --collection $(COLLECTION) -k 10

# The web page and REST API for the demo collection, on http://127.0.0.1:8000/
serve: setup
	$(BIN)/lookalike serve --collection $(COLLECTION)

# The browser test drives Debian's chromium (Playwright cannot download browsers here).
browser:
	test -x /usr/bin/chromium || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }

test: setup browser
	$(BIN)/python -m pytest -q

lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.in
	$(BIN)/pip freeze --exclude-editable | grep -v '^lookalike' > requirements.lock

clean:
	rm -rf $(VENV) $(COLLECTION)
