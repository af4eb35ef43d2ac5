# Two commands on a fresh Debian machine: `make run` and `make test`. Each installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Services the tests start, the fixture release builder (devstack/debian.py SYSTEM_PACKAGES), QEMU and
# the independent clients the tests cross-check with (skopeo, podman, openssl; promtool from prometheus
# checks the metrics and the chart's alert rules).
SYSTEM_PACKAGES := redis-server docker-registry skopeo podman openssl python3-venv \
	apt dpkg kmod squashfs-tools xz-utils zstd gcc libc6-dev qemu-system-x86 qemu-utils ovmf gdisk \
	xorriso grub-common grub-pc-bin grub-efi-amd64-bin mtools dosfstools squashfs-tools-ng cpio \
	xfsprogs libfaketime pigz fdisk gpgv debian-archive-keyring gpg gpg-agent \
	sbsigntool osslsigncode efitools softhsm2 systemd swtpm libtss2-esys-3.0.2-0 libtss2-rc0 strace \
	prometheus nginx chromium fonts-dejavu-core runc buildah mmdebstrap uidmap wrk bubblewrap \
	gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-system-arm qemu-efi-aarch64 \
	golang-github-containernetworking-plugin-dnsname apache2-utils
PYTEST_ARGS ?=
# pytest-xdist: test, unit and integration run on PYTEST_WORKERS processes (`make test PYTEST_WORKERS=0`
# runs serially in one process). loadfile keeps each module, and the modules tests/support/xdist_shared.py
# groups, on one worker, so module-scoped stacks start once; the fixture release is built once per run.
PYTEST_WORKERS ?= 2
PYTEST_XDIST := -n $(PYTEST_WORKERS) --dist loadfile

.PHONY: run stop test lint typecheck unit integration docs ui-screenshots ui-messages image compose-up compose-down chart-docs system-deps clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || $(MAKE) system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

run: system-deps $(BIN)/.installed
	$(BIN)/python -m devstack.run

stop:
	$(BIN)/python -m devstack.run --stop

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: $(BIN)/.installed
	$(BIN)/mypy

test: system-deps $(BIN)/.installed lint typecheck
	$(BIN)/pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

unit: $(BIN)/.installed
	$(BIN)/pytest tests/unit $(PYTEST_XDIST) $(PYTEST_ARGS)

integration: system-deps $(BIN)/.installed
	$(BIN)/pytest tests/integration $(PYTEST_XDIST) $(PYTEST_ARGS)

docs: $(BIN)/.installed
	$(BIN)/image-factory config --format reference > docs/configuration.md

# The web UI's screenshots in docs/ui/ (every step, 1280x800 and 390x844), taken by its browser tests.
ui-screenshots: system-deps $(BIN)/.installed
	UI_SCREENSHOTS=$(CURDIR)/docs/ui $(BIN)/pytest tests/e2e/test_ui_wizard.py $(PYTEST_ARGS)

# After changing a UI text: extract the messages and merge them into the .po catalogs, then translate
# what tests/unit/api/ui/test_translations.py lists (.mo files are compiled at start-up, never committed).
ui-messages: $(BIN)/.installed
	$(BIN)/pybabel extract -F api/ui/babel.cfg -k N_ --no-location --sort-output -o api/ui/translations/messages.pot .
	$(BIN)/pybabel update -i api/ui/translations/messages.pot -d api/ui/translations --ignore-obsolete

# The container image (Dockerfile) built with podman on a local Debian base; prints time and size.
# tests/integration/test_container_image.py builds and runs it in `make test` (cached layers).
image: system-deps $(BIN)/.installed
	$(BIN)/python -m devstack.container build

# docker-compose.yml through podman-compose: 2 APIs (:8080, :8081), 2 workers, Redis, registry (:5000),
# S3 (:8333), seeded with the fixture release. tests/integration/test_compose.py does the same.
compose-up: system-deps $(BIN)/.installed
	$(BIN)/python -m devstack.compose up

compose-down: $(BIN)/.installed
	$(BIN)/python -m devstack.compose down

# The Helm chart README's values table, from values.yaml (checked by tests/unit/deploy/test_chart.py).
chart-docs: $(BIN)/.installed
	$(BIN)/python -m devstack.chart_docs

clean:
	rm -rf $(VENV) .run .mypy_cache .ruff_cache .pytest_cache
