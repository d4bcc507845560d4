# The orchestrator image. Training commands run inside this container, so a real deployment builds its own image
# FROM this one (or copies /usr/local/bin/orchestrator into its training image) with its toolchain installed.
# GO_IMAGE and BASE_IMAGE name the build and the runtime base images; the defaults are the official ones.
ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/orchestrator ./cmd/orchestrator

FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /app --shell /usr/sbin/nologin orchestrator
COPY --from=build /out/orchestrator /usr/local/bin/orchestrator
USER orchestrator
WORKDIR /app
ENV ORCHESTRATOR_ADDR=:8080
EXPOSE 8080
# `orchestrator healthcheck` asks the process's own /healthz; compose and Kubernetes set their own checks too.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["orchestrator", "healthcheck"]
# tini forwards SIGTERM to the orchestrator, which stops its commands' process groups gracefully.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "orchestrator"]
CMD ["serve"]
