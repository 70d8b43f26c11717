.DEFAULT_GOAL := help
FUZZTIME ?= 30s
GO ?= go
# BIN is where build, run and bench-load put the binaries.
BIN ?= bin
# Fuzz targets, package:Function; `make fuzz` runs each for FUZZTIME.
FUZZ_TARGETS := ./events:FuzzToken ./events:FuzzHeaderValues ./events:FuzzDecode ./events:FuzzFastDecode ./events:FuzzFastEncode ./rvp:FuzzReadRequest ./rvp:FuzzParsePropertyUpdate \
	./rvp:FuzzParsePropFind ./rvp:FuzzCheckNotification ./rvp:FuzzParseURL ./rvp:FuzzParseNodePath ./rvp:FuzzReadAnswer \
	./rvp:FuzzParseACL ./gateway:FuzzParseAuthenticate ./gateway:FuzzDigestParams ./rvp:FuzzCallbackPolicy \
	./projections:FuzzDecodeSub ./cmd/rvpctl:FuzzParseCSV ./cmd/rvpctl:FuzzParseLDIF \
	./gateway:FuzzAuthorization ./events:FuzzFactSubject ./rvp:FuzzReadFinalAnswer ./rvp:FuzzNormalizeHost ./rvp:FuzzBodyEvents ./rvp:FuzzReadRequestHTTP ./rvp:FuzzScanXML ./rvp:FuzzScanXMLStructured

run: ## start rvpd dev: one process, embedded NATS, demo domain example.test on 127.0.0.1:8080 (data in ./data; more flags in ARGS="...")
	$(GO) build -o $(BIN)/ ./cmd/rvpd
	exec $(BIN)/rvpd dev $(ARGS)

test: ## all tests (fuzz seeds included) with the race detector
	$(GO) test -race -count=1 -timeout 20m ./...

interop: ## only the tests with the real RVP client (Pidgin's librvp); fails when it cannot run
	RVP_INTEROP=1 $(GO) test -race -count=1 -run 'TestInterop' -v ./cmd/rvpd ./testcluster

fuzz: ## fuzz every parser for FUZZTIME each
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
	  echo "fuzz $$pkg $$fn"; \
	  $(GO) test -run='^$$' -fuzz="^$$fn$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; done

bench: ## benchmarks, 10 runs each, into bench.txt (compare with benchstat)
	$(GO) test -run='^$$' -bench=. -benchmem -count=10 ./... | tee bench.txt

bench-load: ## load benchmark: rvpd dev (default and -nats.sync always) against a bare relay, in processes, into bench-load.txt (ARGS="-rounds 5 ..."; see docs/performance.md)
	$(GO) build -o $(BIN)/ ./cmd/rvpd ./testcluster/rvpload
	$(BIN)/rvpload -rvpd $(BIN)/rvpd $(ARGS) > bench-load.txt; status=$$?; cat bench-load.txt; exit $$status

lint: ## vet and formatting
	$(GO) vet ./... && test -z "$$(gofmt -l .)"

build: ## build rvpd and rvpctl into ./bin (BIN=dir elsewhere)
	$(GO) build -o $(BIN)/ ./cmd/...

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

.PHONY: run test interop fuzz bench bench-load lint build help
