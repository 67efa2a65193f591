#!/usr/bin/env bash
# Builds stowage's container images on the local Docker engine; no image
# registry is needed (none is reachable from here):
#   local/debian:bookworm  Debian minbase by debootstrap from the mirror apt is
#                          configured with, then `docker import`. Skipped when
#                          the image exists (delete it to rebuild).
#   stowage:VERSION        the Dockerfile: Node 24 (scripts/node-line.sh), the
#   stowage:latest         built project with its production dependencies, and
#                          Debian's fuse; ENTRYPOINT stowage. VERSION is
#                          package.json's.
#   local/redis:bookworm   Debian's redis-server on the base, for the container
#                          test suites (test/support/containers.ts).
# Every build runs with --network host: apt inside a build reaches the mirror
# as the host does. On failure it says why and exits non-zero.
# Usage: scripts/image.sh   (scripts/docker.sh first, for a running engine)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "image.sh: $*" >&2; exit 1; }
exists() { docker image inspect "$1" >/dev/null 2>&1; }
# The legacy builder: Debian's docker.io has no buildx plugin.
export DOCKER_BUILDKIT=0
BASE=local/debian:bookworm
REDIS=local/redis:bookworm
version=$(node -p 'require("./package.json").version')

docker info >/dev/null 2>&1 || fail "no Docker engine answers (run scripts/docker.sh)"

# The first bookworm mirror in apt's sources: one-line (sources.list) or deb822 (*.sources).
apt_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -E 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }'
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN { RS = ""; FS = "\n" }
      { uri = ""; suite = 0; deb = 0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { split($i, u, /[ \t]+/); uri = u[2] }
          if ($i ~ /^Suites:/ && $i ~ /[ \t]bookworm([ \t]|$)/) suite = 1
          if ($i ~ /^Types:/ && $i ~ /[ \t]deb([ \t]|$)/) deb = 1
        }
        if (uri != "" && suite && deb) { print uri; exit } }' "$f"
  done
}

started=$SECONDS
if exists "$BASE"; then
  echo "image.sh: $BASE exists (cached)" >&2
else
  mirror=$(apt_mirror | head -n 1)
  [ -n "$mirror" ] || fail "no bookworm mirror in /etc/apt/sources.list or /etc/apt/sources.list.d"
  if ! command -v debootstrap >/dev/null 2>&1; then
    echo "image.sh: installing debootstrap" >&2
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null || fail "apt-get install debootstrap failed"
  fi
  rootfs=$(mktemp -d /tmp/stowage-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
  echo "image.sh: debootstrap --variant=minbase bookworm from $mirror" >&2
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || fail "debootstrap failed; the end of its log: $(tail -n 5 "$rootfs.log" | tr '\n' ' ')"
  rm -f "$rootfs.log"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import - "$BASE" >/dev/null || fail "docker import of the base failed"
  rm -rf "$rootfs"
  trap - EXIT
  echo "image.sh: $BASE built in $((SECONDS - started)) s" >&2
fi

# The stowage image's build context (.image-build/context): Node, then the app
# with production dependencies only. node_modules is reinstalled only when the lock changed.
ctx=.image-build/context
log=.image-build/build.log
node_bin=$(scripts/node-line.sh 24) || fail "could not install Node 24 (scripts/node-line.sh 24)"
if [ ! -f dist/src/cli/main.js ] || [ -n "$(find src proto bin package.json -newer dist/src/cli/main.js -print -quit)" ]; then
  echo "image.sh: the project is not built, or older than its sources: scripts/setup.sh" >&2
  scripts/setup.sh >/dev/null || fail "scripts/setup.sh (npm ci, npm run build) failed"
fi
mkdir -p "$ctx/app"
cmp -s "$node_bin/node" "$ctx/node" || cp "$node_bin/node" "$ctx/node"
if ! cmp -s package-lock.json "$ctx/app/package-lock.json" || [ ! -d "$ctx/app/node_modules" ]; then
  echo "image.sh: production dependencies (npm ci --omit=dev)" >&2
  rm -rf "$ctx/app/node_modules"
  cp package.json package-lock.json "$ctx/app/"
  (cd "$ctx/app" && npm ci --omit=dev --no-audit --no-fund --prefer-offline --loglevel=error >/dev/null) \
    || { rm -f "$ctx/app/package-lock.json"; fail "npm ci --omit=dev failed"; }
fi
cp package.json "$ctx/app/"
rm -rf "$ctx/app/bin" "$ctx/app/dist"
mkdir -p "$ctx/app/dist"
cp -r bin "$ctx/app/bin"
cp -r dist/src dist/dashboard "$ctx/app/dist/"
cp Dockerfile "$ctx/Dockerfile"

build() {
  local what=$1
  shift
  local t=$SECONDS
  if ! docker build --network host --force-rm "$@" >"$log" 2>&1; then
    fail "docker build of $what failed; the end of its log: $(tail -n 8 "$log" | tr '\n' ' ')"
  fi
  echo "image.sh: $what built in $((SECONDS - t)) s" >&2
}
# What the image is made of, as one hash in a label: an unchanged context
# skips docker build (sending it to the engine alone takes seconds).
inputs=$( (cat Dockerfile package.json package-lock.json; "$ctx/node" -v; cd "$ctx/app" && find bin dist -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-32)
if [ "$(docker image inspect --format '{{index .Config.Labels "stowage.inputs"}}' "stowage:$version" 2>/dev/null)" = "$inputs" ]; then
  docker tag "stowage:$version" stowage:latest
  echo "image.sh: stowage:$version is up to date (cached)" >&2
else
  build "stowage:$version" --label "stowage.inputs=$inputs" -t "stowage:$version" -t stowage:latest "$ctx"
  # The image this one replaced, now untagged.
  docker image prune -f --filter label=stowage.inputs >/dev/null
fi
build "$REDIS" -t "$REDIS" - <test/support/redis.Dockerfile
echo "image.sh: stowage:$version ($(docker image inspect --format '{{.Size}}' "stowage:$version" | awk '{ printf "%d MB", $1 / 1e6 }')) and $REDIS ready in $((SECONDS - started)) s" >&2
