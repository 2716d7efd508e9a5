# taskd container image.
#
#   docker build -t taskd .
#   docker run -p 8080:8080 -v taskd-data:/data taskd
#
# Stage 1 builds the release binary; the dependency layer is cached for as long as the
# manifests and Cargo.lock stay the same. Stage 2 is a slim Debian with the binary only
# (stripped of debug info: see [profile.release] in Cargo.toml).

# ---- build --------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependencies first: the manifests of every workspace member, then a dummy of each target,
# so that this expensive layer is rebuilt only when a manifest or the lock file changes.
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY bench/Cargo.toml bench/
RUN mkdir -p src bench/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > bench/src/main.rs \
    && cargo build --release --locked --bin taskd \
    && rm -rf src

# Then the crate itself. `touch` makes sure cargo sees the real sources as newer than the
# dummy it just built (COPY keeps the build context's timestamps, which may be older).
COPY src ./src
COPY migrations ./migrations
COPY openapi.yaml ./
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin taskd \
    && cp target/release/taskd /usr/local/bin/taskd

# ---- runtime ------------------------------------------------------------------------------
FROM debian:bookworm-slim

# A fixed, unprivileged uid that owns only the data directory.
RUN groupadd --system --gid 10001 taskd \
    && useradd --system --uid 10001 --gid taskd --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin taskd \
    && mkdir /data \
    && chown taskd:taskd /data

COPY --from=build /usr/local/bin/taskd /usr/local/bin/taskd

# The SQLite file (and its -wal/-shm companions) live on the volume.
ENV TASKD_DATABASE=sqlite:///data/taskd.db \
    TASKD_LISTEN=0.0.0.0:8080 \
    TASKD_SHUTDOWN_GRACE=8s
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001
EXPOSE 8080

# Alive means /healthz answers 200. Asked with bash's /dev/tcp rather than curl, which with
# its libraries would add about as much to the image as taskd itself; /healthz and /readyz
# answer a request without a Host header. The port is EXPOSE's: a container that moves
# TASKD_LISTEN elsewhere overrides this check too.
# It answers from the moment the socket is bound, while the database still migrates; a
# container that sets TASKD_BASE_PATH overrides the path as well.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && read -r _ status _ <&3 && [ \"$status\" = 200 ]"]

# Exec form: taskd is PID 1 and receives SIGTERM itself, so `docker stop` drains gracefully.
# docker stop sends SIGKILL after 10 s by default, so the grace period is kept below that:
# running tasks that have not finished after 8 s go back to the queue unharmed.
ENTRYPOINT ["/usr/local/bin/taskd"]
CMD ["serve"]
