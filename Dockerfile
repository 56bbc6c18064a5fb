# syntax=docker/dockerfile:1
# The oidc-operator image. Build it from the repository root:
#   docker build -t ghcr.io/oidc-operator/oidc-operator:0.1.0 .
# (BuildKit: the default builder of Docker 23+ and of `docker buildx build`; the cache mounts
# below keep downloaded crates between builds.)

# --- build -------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src
# The whole context minus .dockerignore: the manifest declares benches (cargo checks that
# their files exist even for `cargo build`) and the binary embeds config/argocd/health.lua.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    cargo build --release --locked \
 && strip target/release/oidc-operator

# --- runtime -----------------------------------------------------------------------------
# distroless cc: glibc, libgcc_s, libm and CA certificates, no shell; user nonroot (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="oidc-operator" \
      org.opencontainers.image.description="A Kubernetes operator that makes a cluster an OpenID Connect identity provider for workloads and machines" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/oidc-operator/oidc-operator" \
      org.opencontainers.image.vendor="oidc-operator"
COPY --from=builder /src/target/release/oidc-operator /usr/local/bin/oidc-operator
USER 65532:65532
# 8443: protocol endpoints (HTTPS); 9464: /healthz, /readyz, /metrics (plain HTTP).
EXPOSE 8443 9464
ENTRYPOINT ["/usr/local/bin/oidc-operator"]
CMD ["--help"]
