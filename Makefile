# Run `make help` for the targets.
.DEFAULT_GOAL := help

# A development secret for `make run`; set your own to match the webhook's settings on Hugging Face.
HUGGINGFACE_WEBHOOK_SECRET ?= dev-secret-change-me
export HUGGINGFACE_WEBHOOK_SECRET
# A development admin token for `make run`'s buttons and forms (log in with it); set your own in production.
ORCHESTRATOR_ADMIN_TOKEN ?= dev-admin-token
export ORCHESTRATOR_ADMIN_TOKEN

# As root the embedded PostgreSQL runs as the `postgres` user, which cannot enter a home directory of mode 0700:
# keep its data under /var/lib then.
ORCHESTRATOR_DATA_DIR ?= $(if $(filter 0,$(shell id -u)),/var/lib/orchestrator/dev,.orchestrator)
export ORCHESTRATOR_DATA_DIR

GO_TEST_FLAGS ?= -race -count=1 -timeout 10m
FUZZ_TIME ?= 20s
# The static checker, run by `make lint` and `make test` at this exact version (fetched by the go command).
STATICCHECK_VERSION ?= v0.8.2

.PHONY: help
help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: deps ## Run the orchestrator on the embedded PostgreSQL with examples/orchestrator.yaml on :8080
	ORCHESTRATOR_DEV=1 go run ./cmd/orchestrator serve --config examples/orchestrator.yaml

.PHONY: lint
lint: ## Run go vet and staticcheck (its default checks)
	go vet ./...
	go run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

.PHONY: test
test: deps lint ## Run the linters, every test (real PostgreSQL and Chromium, installed when missing) and a short fuzz
	go test $(GO_TEST_FLAGS) ./...
	go test -run '^$$' -fuzz FuzzParseAndDecide -fuzztime $(FUZZ_TIME) ./orchestrator/
	go test -run '^$$' -fuzz FuzzParsePayload -fuzztime $(FUZZ_TIME) ./orchestrator/hub/

.PHONY: docker-check
docker-check: ## Build the image and run the compose stack on a local Docker engine (root; installs Docker when missing)
	.ci/docker-check

.PHONY: build
build: ## Build bin/orchestrator
	go build -o bin/orchestrator ./cmd/orchestrator

.PHONY: bench
bench: ## Run the benchmark, short mode (about two minutes): docs/BENCHMARKS.md says what it measures
	go test -count=1 -run TestBench -v -timeout 30m ./bench/

.PHONY: bench-full
bench-full: ## Run the full benchmark (about 8 minutes on a quiet 2-core machine) and write its figures to docs/benchmarks.json
	BENCH_MODE=full BENCH_OUT=$(CURDIR)/docs/benchmarks.json go test -count=1 -run TestBench -v -timeout 120m ./bench/

.PHONY: deps
deps: ## Install the PostgreSQL server binaries and pgbench when missing (as root, with apt)
	@.ci/deps

.PHONY: fmt
fmt: ## Format the code
	gofmt -w $$(git ls-files '*.go')
