# vmdkpop: build, check and test. `make help` lists the targets.
GO        ?= go
BIN       ?= bin
FUZZTIME  ?= 15s
GOFILES    = $(shell git ls-files '*.go' 2>/dev/null || find . -name '*.go')

IMAGE     ?= vmdkpop:dev

.PHONY: all build static image demo test unit race fuzz fmt vet lint bench bench-import help clean

all: build

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## build bin/imager
	$(GO) build -o $(BIN)/imager ./imager

static: ## static binaries for the container image (bin/static/)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags=-s -o $(BIN)/static/imager ./imager

image: static ## the container image as a docker-archive tarball, without Docker (bin/vmdkpop-image.tar)
	$(GO) run ./hack/ociimage -o $(BIN)/vmdkpop-image.tar -t $(IMAGE) -entrypoint /imager $(BIN)/static/imager

fmt: ## format the Go sources
	gofmt -w $(GOFILES)

vet: ## go vet
	$(GO) vet ./...

lint: vet ## gofmt check + go vet
	@out=$$(gofmt -l $(GOFILES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

unit: ## go test (qemu-img interop tests included; needs qemu-utils)
	$(GO) test -count=1 ./...

race: ## the concurrent paths under the race detector
	$(GO) test -race -count=1 -run 'Concurrent|StreamVMDKstream|StreamQemu|StreamWriterDeterministic|CloseOnStall|SmallGrains|CreateAllSubformats|ConvertToStream|CreateAndConvert|TestImport' ./...

fuzz: ## run each fuzz target for FUZZTIME
	$(GO) test ./vmdk -run '^$$' -fuzz '^FuzzParseDescriptor$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s
	$(GO) test ./vmdk -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s
	$(GO) test ./vmdk -run '^$$' -fuzz '^FuzzStreamReader$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s

test: lint unit race fuzz ## everything CI runs

demo: build ## imager end to end on a generated disk (hack/demo.sh)
	hack/demo.sh

bench: build ## imager vs qemu-img convert on 1 GiB images (hack/bench-convert.sh)
	hack/bench-convert.sh

bench-import: ## imager import over HTTP vs curl + qemu-img convert (hack/bench-import.sh)
	hack/bench-import.sh

clean:
	rm -rf $(BIN)
