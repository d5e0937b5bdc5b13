# Convenience targets; the scripts under scripts/ are the source of truth.
.PHONY: build demo test bench generate fmt

build:
	cargo build --release

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

bench:
	bash bench/run.sh

# Regenerate completions/ and man/ (a test fails when they are stale).
generate:
	cargo run --quiet -- generate .
