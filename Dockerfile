# One image for every marketbridge component: `marketbridge account`,
# `marketbridge provisioning`, `marketbridge billing`, `marketbridge gateway`.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# protoc is vendored by the build; nothing to install.
RUN cargo build --release --locked --bin marketbridge

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/marketbridge --create-home marketbridge \
 && install -d -m 0755 -o marketbridge /var/lib/marketbridge/secrets
COPY --from=build /src/target/release/marketbridge /usr/local/bin/marketbridge
COPY config/catalog.toml /etc/marketbridge/catalog.toml
USER marketbridge
WORKDIR /var/lib/marketbridge
ENV MARKETBRIDGE_CATALOG__PATH=/etc/marketbridge/catalog.toml \
    MARKETBRIDGE_DATA__DIR=/var/lib/marketbridge
ENTRYPOINT ["marketbridge"]
CMD ["up"]
