# Entry points; the real work is in the scripts under e2e/.
.PHONY: test tools cluster-up cluster-down cluster-status cluster-build demo

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
