# syntax=docker/dockerfile:1
# The bulkhead image: two static binaries, /bulkhead (operator and CLI) and
# /bulkhead-audit-sidecar (the sidecar the webhook injects into pods),
# non-root, on an empty base. Build:  docker build -t <registry>/bulkhead:0.1.0 .
# The build stage runs the same steps as `make release` (static musl binaries).

FROM rust:1.95-bookworm AS build
# ring's C and assembly parts need a musl C compiler.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
# build.rs links the operator with this toolchain's lld, which lays out the
# functions in release/hot-functions.txt first (less of its code resident).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CC_x86_64_unknown_linux_musl=musl-gcc \
    cargo build --release --locked --target x86_64-unknown-linux-musl --bin bulkhead --bin bulkhead-audit-sidecar \
 && cp target/x86_64-unknown-linux-musl/release/bulkhead target/x86_64-unknown-linux-musl/release/bulkhead-audit-sidecar / \
 && mkdir -p /rootfs/tmp /rootfs/etc/ssl/certs \
 && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ \
 && echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' > /rootfs/etc/passwd \
 && echo 'nonroot:x:65532:' > /rootfs/etc/group

FROM scratch
# CA roots for an HTTPS SIEM sink; the Kubernetes API uses the mounted service account CA.
COPY --from=build /rootfs/etc /etc
# /tmp for the SIEM spool when no volume is mounted (the chart mounts an emptyDir there).
COPY --from=build --chown=65532:65532 /rootfs/tmp /tmp
COPY --from=build /bulkhead /bulkhead-audit-sidecar /
USER 65532:65532
ENTRYPOINT ["/bulkhead"]
CMD ["run"]
