# The two commands a newcomer needs: `make serve` and `make test`. Each sets up what it uses.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: serve test lint browser bench

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

# The side-by-side benchmark against the Apollo peer (issues 4 and 11): it needs Debian's wrk;
# it installs the peer's node_modules itself; `make bench ARGS="--duration 10"` passes options on.
bench: $(BIN)/gateway
	@if ! command -v wrk >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
		else \
			echo "wrk missing and not root: apt-get install wrk" >&2; exit 1; \
		fi; \
	fi
	$(BIN)/python -m bench.compare $(ARGS)

lint: $(BIN)/gateway
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy gateway tests bench

test: $(BIN)/gateway browser lint
	$(BIN)/pytest $(PYTEST_ARGS)
