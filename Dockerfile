# The orchestrator image. Training commands run inside this container, so a real deployment builds its own image
# FROM this one (or copies /usr/local/bin/orchestrator into its training image) with its toolchain installed.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/orchestrator ./cmd/orchestrator

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /app --shell /usr/sbin/nologin orchestrator
COPY --from=build /out/orchestrator /usr/local/bin/orchestrator
USER orchestrator
WORKDIR /app
ENV ORCHESTRATOR_ADDR=:8080
EXPOSE 8080
# tini forwards SIGTERM to the orchestrator, which stops its commands' process groups gracefully.
ENTRYPOINT ["/usr/bin/tini", "--", "orchestrator"]
CMD ["serve"]
