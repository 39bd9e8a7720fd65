# syntax=docker/dockerfile:1
# The operator image: the `ferry` binary (controller and kubectl plugin), statically linked against musl, on
# distroless/static (no shell, no libc) as the non-root user 65532. It writes nothing to disk, so it runs with
# readOnlyRootFilesystem: true; the Helm chart runs it as `ferry run`.
#
# Build from the repository root (the Cargo workspace):
#   docker build -t ferry .

ARG RUST_VERSION=1.92

# Alpine's Rust targets musl natively, so the build is the plain cargo command CI runs and the result is static.
FROM docker.io/library/rust:${RUST_VERSION}-alpine AS build
# A C toolchain for ring (rustls' cryptography).
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ferry \
 && install -D -m 0755 target/release/ferry /out/ferry

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ferry /usr/bin/ferry
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/bin/ferry"]
CMD ["run"]
