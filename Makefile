# zrpc build, test and tooling. `make test` is what CI runs (via .ci/run).
GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
VERSION     ?= 0.1.0-dev
LDFLAGS     := -X github.com/zrpcio/zrpc/cli.Version=$(VERSION)
BIN         := bin

.PHONY: all build test lint bench bench-security bench-registry bench-rpc bench-dns proto run clean demo robustness fuzz docs
.PHONY: chromium iproute2
.PHONY: snapshot-big

all: build

## build: zrpcd and zrpcctl into ./bin
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/zrpcd ./cmd/zrpcd
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/zrpcctl ./cmd/zrpcctl

## test: every test, with the race detector; then the allocation tests,
## which the race detector would skip (it allocates and drops sync.Pool
## items), without it. Name an allocation test ...Allocate... to have it run.
## Then deploy/'s own module: the Dockerfile and the Kubernetes manifests,
## decoded strictly with the k8s.io/api types.
ALLOC_TESTS    := Allocate
ALLOC_PACKAGES := ./rpc/ ./rpc/clientchain/ ./rpc/balancer/ ./storage/codec/ ./node/health/ ./node/grpcapi/ ./node/dns/
## Tests in files built only without the race detector (//go:build !race,
## for a race inside a dependency that the file explains) run without it.
NORACE_TESTS    := TestAgentsAllRestartedAtNewAddressesElectALeader
NORACE_PACKAGES := ./node/
## TEST_PARALLEL: packages tested at once. The cluster tests spend about
## half their time waiting (elections, gossip rounds, deadlines), so four
## at once on two cores keep both busy: the race suite took 199 s at 4
## and 318 s at go test's default of one per core (2026-12-06, 2 cores).
TEST_PARALLEL ?= 4
test:
	$(GO) test -race -count=1 -p $(TEST_PARALLEL) -timeout 12m ./...
	$(GO) test -count=1 -run '$(ALLOC_TESTS)' $(ALLOC_PACKAGES)
	$(GO) test -count=1 -run '$(NORACE_TESTS)' $(NORACE_PACKAGES)
	cd deploy && $(GO) test -count=1 ./...

## chromium: the headless browser the web UI's e2e test drives (Debian
## package); test installs it when missing
chromium:
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
test: chromium

## iproute2: ip, with which the e2e partition tests put agents on a
## network of their own (Debian package); test installs it when missing
iproute2:
	command -v ip >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y iproute2)
test: iproute2

## robustness: random traffic under random faults, SEEDS runs (default 3)
## plus the regression seeds; ROBUSTNESS_SEED=N replays one run, SEEDS=200
## makes a long one. Failing seeds are appended to robustness/failed-seeds.
## ROBUSTNESS_PARALLEL runs go at once: one uses about a sixth of two
## cores (most of it waits on faults and deadlines).
SEEDS               ?= 3
ROBUSTNESS_TIMEOUT  ?= 30m
ROBUSTNESS_PARALLEL ?= 4
robustness:
	ROBUSTNESS=1 SEEDS=$(SEEDS) ROBUSTNESS_FAILED=$(CURDIR)/robustness/failed-seeds \
		$(GO) test -count=1 -parallel $(ROBUSTNESS_PARALLEL) -timeout $(ROBUSTNESS_TIMEOUT) -run 'TestRobustness|TestRegressions' ./robustness/

## snapshot-big: the snapshot round trip at full size (100,000 instances
## and 1,000 blobs saved from one 3-agent cluster and restored into
## another); make test runs it at 20,000 instances and 50 blobs.
snapshot-big:
	ZRPC_SNAPSHOT_BIG=1 $(GO) test -race -count=1 -timeout 15m -run '^TestSnapshotRoundTripBetweenClusters$$' -v ./node/

## fuzz: every fuzz target for FUZZTIME each (default 10s); all run, then
## the failing ones are listed. Inputs that fail are kept under the
## package's testdata/fuzz, as go test does.
FUZZTIME ?= 10s
FUZZ_TARGETS := \
	raftstore:FuzzFSMRestore raftstore:FuzzFSMApply raftstore:FuzzDecodeLog \
	gossip:FuzzDecodeMeta \
	storage/shardstore:FuzzHeader storage/shardstore:FuzzGet \
	storage/codec:FuzzDecodeCorrupt storage/codec:FuzzRoundTrip \
	storage:FuzzGetRange acl:FuzzParseRules \
	node/grpcapi:FuzzValidateInstance node:FuzzConfigLoadFile node:FuzzConfigLoadEnv \
	node/dns:FuzzDNSQuery \
	snapshot:FuzzInspect \
	internal/instcodec:FuzzDecodeRegistration internal/instcodec:FuzzEncodeRegistration \
	internal/instcodec:FuzzApplyBatch internal/wirecodec:FuzzBorrowedMessagesReadAsProtobufDoes \
	storage/shardstore:FuzzPartHeader gossip:FuzzCheckStream
fuzz:
	@failed=""; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; echo "== fuzz $$name (./$$pkg) for $(FUZZTIME)"; \
		scripts/fuzz-one.sh "$(GO)" $$pkg $$name $(FUZZTIME) || failed="$$failed $$pkg:$$name"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz targets that failed:$$failed"; exit 1; fi

## lint: gofmt, go vet, staticcheck
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	cd deploy && $(GO) vet ./... && $(GO) run $(STATICCHECK) ./...

## bench: registry, cluster, rpc and blob benchmarks (results: docs/benchmarks.md)
bench:
	$(GO) test -run '^$$' -bench . -benchtime 3s ./raftstore/ ./node/ ./rpc/...
	$(GO) test -run '^$$' -bench . -benchtime 2s ./storage/codec/ ./storage/shardstore/
	$(GO) test -run '^$$' -bench 'BenchmarkBlob|BenchmarkRepair' -benchtime 4x ./storage/

## bench-security: TLS + ACL vs plaintext, measured from outside: agents,
## the echo service and the load tool in their own processes (bench/, its
## own module; results: docs/benchmarks.md). REPS repetitions of
## BENCH_DURATION per step.
REPS           ?= 3
BENCH_DURATION ?= 5s
bench-security: build
	cd bench && $(GO) build -o ../$(BIN)/zrpcecho ./cmd/zrpcecho && \
		$(GO) run ./cmd/zrpcload --bin ../$(BIN) --reps $(REPS) --duration $(BENCH_DURATION)

## bench-registry: zrpc's registry against etcd 3.4, measured from outside:
## zrpcd agents and etcd members in their own processes, the load from
## bench/cmd/zrpcregbench, rounds interleaved zrpc/etcd (about 15 minutes;
## REGBENCH_FLAGS=--quick about 3). Installs etcd from Debian when missing.
## As root, the partition scenario runs each member on a network namespace
## of its own (iproute2) and cuts members off; without root it is left out.
## Results: a markdown table on stdout, JSON lines in REGBENCH_OUT.
REGBENCH_OUT   ?= $(CURDIR)/$(BIN)/bench-registry.jsonl
REGBENCH_FLAGS ?=
bench-registry: build
	command -v etcd >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server etcd-client)
	cd bench && $(GO) run ./cmd/zrpcregbench --bin ../$(BIN) --out $(REGBENCH_OUT) $(REGBENCH_FLAGS)

## bench-rpc: zrpc against plain grpc-go and go-zero zrpc, measured from
## outside: each server and load generator in its own process (zrpc's
## server registered in a zrpcd agent, its client dialling zrpc:///),
## interleaved over RPC_REPS repetitions at RPC_CALLERS callers, RPC_DURATION
## each (about 3 minutes with the defaults). Results: a markdown table.
RPC_REPS     ?= 3
RPC_CALLERS  ?= 1,16,64
RPC_DURATION ?= 5s
# RPC_FLAGS: more flags, e.g. "--base DIR" (another build's zrpcd, zrpcecho
# and zrpcrpcbench, compared round by round as zrpc-base).
RPC_FLAGS    ?=
bench-rpc: build
	cd bench && $(GO) build -o ../$(BIN)/zrpcecho ./cmd/zrpcecho && \
		$(GO) build -o ../$(BIN)/zrpcrpcbench ./cmd/zrpcrpcbench
	$(BIN)/zrpcrpcbench run --bin $(BIN) --reps $(RPC_REPS) --callers $(RPC_CALLERS) --duration $(RPC_DURATION) $(RPC_FLAGS)

## bench-dns: the agent's DNS from outside: a zrpcd agent and the UDP
## client (bench/cmd/zrpcdnsbench) in separate processes, 10,000 SRV
## questions a second. DNS_ZRPCD=old=path,new=path compares binaries round
## by round.
DNS_ZRPCD ?= zrpc=$(BIN)/zrpcd
DNS_REPS  ?= 3
bench-dns: build
	cd bench && $(GO) build -o ../$(BIN)/zrpcdnsbench ./cmd/zrpcdnsbench
	$(BIN)/zrpcdnsbench --zrpcd $(DNS_ZRPCD) --reps $(DNS_REPS)
## bench-blob: zrpcctl blob put/get against a plain gRPC stream of the same
## bytes into a file the server fsyncs, and cp + fsync, measured from
## outside: zrpcd agents (a fresh cluster of each of BLOB_AGENTS per
## repetition), zrpcctl and the stream's server and client in their own
## processes, interleaved over BLOB_REPS repetitions of BLOB_SIZE random
## bytes, at every --blob-block-size of BLOB_BLOCK_SIZES (about 10 minutes
## with the defaults). Results: a markdown table, JSON lines in BLOB_OUT.
BLOB_REPS        ?= 3
BLOB_SIZE        ?= 256MiB
BLOB_AGENTS      ?= 3,5
BLOB_BLOCK_SIZES ?= 1MiB,4MiB
BLOB_OUT         ?= $(CURDIR)/$(BIN)/bench-blob.jsonl
.PHONY: bench-blob
bench-blob: build
	cd bench && $(GO) build -o ../$(BIN)/zrpcblobbench ./cmd/zrpcblobbench
	$(BIN)/zrpcblobbench run --bin $(BIN) --reps $(BLOB_REPS) --size $(BLOB_SIZE) --agents $(BLOB_AGENTS) \
		--block-size $(BLOB_BLOCK_SIZES) --out $(BLOB_OUT)

## proto: regenerate api/zrpcpb from api/*.proto (installs protoc and plugins)
proto:
	command -v protoc >/dev/null || (apt-get update && apt-get install -y protobuf-compiler)
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
	cd api && PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc -I. -I/usr/include \
		--go_out=zrpcpb --go_opt=paths=source_relative \
		--go-grpc_out=zrpcpb --go-grpc_opt=paths=source_relative \
		registry.proto raft.proto blob.proto acl.proto keyring.proto snapshot.proto

## docs: regenerate docs/configuration.md from node.Config's settings and
## docs/metrics.md's table from the metrics an agent serves
docs:
	ZRPC_UPDATE_DOCS=1 $(GO) test -count=1 -run 'TestConfigurationReferenceIsUpToDate|TestAgentMetricsFollowPrometheusNamingConventions' ./node/

## run: a development agent (one node, temp data dir)
run:
	$(GO) run ./cmd/zrpcd agent --dev

## demo: the examples/user walk-through end to end (agent, service, registry, call)
demo:
	GO=$(GO) ./examples/user/demo.sh

clean:
	rm -rf $(BIN)
