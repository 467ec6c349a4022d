# threeport-server: the control plane (every role: serve, api, controller, agent, probe).
#   docker build -f deploy/docker/threeport-server.Dockerfile -t threeport-server .
# Multi-stage: built on the Rust image, run on distroless (glibc, CA certificates, no shell)
# as the non-root user 65532, with `helm` for the Helm-workload controller and `terraform` for
# the Terraform controller (configurations needing a shell, as `local-exec` does, need an
# image with one). No HEALTHCHECK:
# Kubernetes probes the HTTP endpoints (/healthz, /readyz), and `threeport-server probe <url>`
# checks them where a command is needed.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p threeport-server \
 && cp target/release/threeport-server /threeport-server

FROM debian:bookworm-slim AS tools
ARG HELM_VERSION=v3.18.4
ARG TERRAFORM_VERSION=1.11.4
ARG TARGETARCH=amd64
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl unzip \
 && curl -fsSL "https://get.helm.sh/helm-${HELM_VERSION}-linux-${TARGETARCH}.tar.gz" \
    | tar -xz -C /tmp \
 && mv "/tmp/linux-${TARGETARCH}/helm" /helm \
 && curl -fsSL -o /tmp/terraform.zip \
    "https://releases.hashicorp.com/terraform/${TERRAFORM_VERSION}/terraform_${TERRAFORM_VERSION}_linux_${TARGETARCH}.zip" \
 && unzip /tmp/terraform.zip terraform -d /

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /threeport-server /usr/local/bin/threeport-server
COPY --from=tools /helm /usr/local/bin/helm
COPY --from=tools /terraform /usr/local/bin/terraform
# Helm's caches, Terraform's working directories and the data directory live on a writable
# volume; the root filesystem can be
# read-only.
ENV THREEPORT_LOG_FORMAT=json \
    THREEPORT_DATA_DIR=/var/lib/threeport \
    HELM_CACHE_HOME=/var/lib/threeport/helm/cache \
    HELM_CONFIG_HOME=/var/lib/threeport/helm/config \
    HELM_DATA_HOME=/var/lib/threeport/helm/data
USER 65532:65532
EXPOSE 1323
ENTRYPOINT ["/usr/local/bin/threeport-server"]
CMD ["serve", "--listen", "0.0.0.0:1323"]
