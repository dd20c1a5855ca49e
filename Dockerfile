# Builds the single `evisa` binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin evisa

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 evisa
COPY --from=build /src/target/release/evisa /usr/local/bin/evisa
USER evisa
EXPOSE 8080
ENTRYPOINT ["evisa"]
CMD ["serve"]
