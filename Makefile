# Entry points; the real work is in the scripts under e2e/.
.PHONY: test tools cluster-up cluster-down cluster-status cluster-build demo release hot-functions bench

test:
	e2e/test-all

tools:
	e2e/tools

cluster-build:
	e2e/cluster build

cluster-up:
	e2e/cluster up

cluster-down:
	e2e/cluster down

cluster-status:
	e2e/cluster status

demo:
	e2e/demo

# Static x86_64 musl binary, as the Dockerfile builds it.
release:
	e2e/release

# Regenerates release/hot-functions.txt, the functions build.rs has lld lay
# out first (the operator under valgrind in the scale and admission benches).
hot-functions:
	e2e/hot-functions

# Benchmarks against the local control plane (not part of `make test`):
# scale (floor vs convergence, idle writes, memory, drift repair), admission
# (webhook latency over TLS at 1,000 requests/s) and sidecar (the audit
# sidecar process's throughput, CPU and RSS; needs no cluster).
bench:
	e2e/cluster up
	cargo bench --bench scale
	cargo bench --bench admission
	cargo bench --bench sidecar
