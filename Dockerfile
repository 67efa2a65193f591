# stowage: the server, the worker and every CLI command, on Node 24 with FUSE.
# Built by scripts/image.sh, which prepares the context (.image-build/context: the
# node binary, and app/ with dist, bin and production node_modules) and the
# base image local/debian:bookworm (debootstrap; no registry is needed).
#   docker run --network host stowage:latest serve --host 127.0.0.1
#   docker run --network host --device /dev/fuse --cap-add SYS_ADMIN \
#     -e STOWAGE_SERVER -e STOWAGE_TOKEN stowage:latest mount VOL /data
FROM local/debian:bookworm
# libfuse.so.2 (fuse-native) and fusermount (stowage mount); ca-certificates for S3 over https.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fuse ca-certificates \
  && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY node /usr/local/bin/node
COPY app /opt/stowage
RUN ln -s /opt/stowage/bin/stowage.js /usr/local/bin/stowage && stowage --help >/dev/null
ENV STOWAGE_DATA_DIR=/var/lib/stowage
ENTRYPOINT ["stowage"]
