# tptctl: the command-line client.
#   docker build -f deploy/docker/tptctl.Dockerfile -t tptctl .
#   docker run --rm -v ~/.config/tptctl:/home/nonroot/.config/tptctl tptctl get workloads

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tptctl \
 && cp target/release/tptctl /tptctl

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /tptctl /usr/local/bin/tptctl
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tptctl"]
