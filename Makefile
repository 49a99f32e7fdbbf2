# The two commands a newcomer needs: `make serve` and `make test`. Each sets up what it uses.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: serve test lint browser

$(BIN)/gateway: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

serve: $(BIN)/gateway
	$(BIN)/gateway serve $(ARGS)

# The headless browser test needs Debian's chromium and chromedriver; install them when we can.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
		else \
			echo "chromium/chromedriver missing and not root: the browser test will skip"; \
		fi; \
	fi

lint: $(BIN)/gateway
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy gateway

test: $(BIN)/gateway browser lint
	$(BIN)/pytest $(PYTEST_ARGS)
