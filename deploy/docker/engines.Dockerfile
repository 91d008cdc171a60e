# Stand-ins for the engine images the compose stack uses (NATS, PostgreSQL, Redis, Prometheus),
# built from Debian's packages on top of BASE_IMAGE. Only for machines that reach no image
# registry (CI here); anywhere else compose pulls the official images (see .env.example).
# Each target behaves like its official image for what deploy/compose uses: the same
# entrypoint arguments, data paths, environment variables and healthcheck tools (wget,
# pg_isready, redis-cli).
#   docker build --network host -f deploy/docker/engines.Dockerfile --target nats -t arb-local/nats .
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS engine-base
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends wget \
 && rm -rf /var/lib/apt/lists/*

# nats:2.10-alpine: ENTRYPOINT nats-server, arguments as the compose file gives them.
FROM engine-base AS nats
RUN apt-get update \
 && apt-get install -y --no-install-recommends nats-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown 10002:10002 /data
USER 10002:10002
EXPOSE 4222 8222
ENTRYPOINT ["nats-server"]

# redis:7-alpine: `redis-server ...` as the command.
FROM engine-base AS redis
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server redis-tools \
 && rm -rf /var/lib/apt/lists/*
USER redis
EXPOSE 6379
CMD ["redis-server"]

# postgres:16-alpine: POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, data in PGDATA,
# password (scram) auth from the network.
FROM engine-base AS postgres
RUN mkdir -p /etc/postgresql-common \
 && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY deploy/docker/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
CMD ["postgres"]

# prom/prometheus: ENTRYPOINT prometheus, flags as the compose file gives them.
FROM engine-base AS prometheus
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus && chown 65534:65534 /prometheus
USER 65534:65534
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
