# Warden gateway image: build with the Rust toolchain, run from a slim
# Debian as a non-root user. The model is not in the image: mount it
# (docker-compose.yml mounts ./models at /models).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Migrations are embedded in the binary; rustls only, so no OpenSSL.
RUN cargo build --release --locked -p warden-gateway --bin warden \
 && install -D target/release/warden /out/warden

FROM debian:bookworm-slim AS runtime
# curl for the health check; ca-certificates for https upstreams.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 warden \
 && useradd --system --uid 10001 --gid warden --home-dir /var/lib/warden --shell /usr/sbin/nologin warden \
 && mkdir -p /var/lib/warden/spool /etc/warden \
 && chown -R warden:warden /var/lib/warden
COPY --from=build /out/warden /usr/local/bin/warden
COPY warden.toml /etc/warden/warden.example.toml
USER 10001:10001
WORKDIR /var/lib/warden
EXPOSE 8080
VOLUME ["/var/lib/warden/spool", "/models"]
ENTRYPOINT ["warden"]
CMD ["serve", "--config", "/etc/warden/warden.toml"]
