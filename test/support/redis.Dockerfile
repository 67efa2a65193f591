# Debian's redis-server on the locally built base (scripts/image.sh builds it as
# local/redis:bookworm), for the container test suites: no registry is needed.
FROM local/debian:bookworm
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
  && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
ENTRYPOINT ["redis-server"]
