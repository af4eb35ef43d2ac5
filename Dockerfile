# syntax=docker/dockerfile:1
# One image for the API and the workers: `image-factory [options] api|worker|config`.
#
#   docker build -t image-factory .                   # or: podman build --isolation chroot -t image-factory .
#   docker build --build-arg BASE_IMAGE=localhost/debian:bookworm -t image-factory .
#
# BASE_IMAGE is any Debian bookworm image: the public one by default; the test suite passes one it makes
# offline with `mmdebstrap --variant=minbase bookworm` + `podman import` (tests/support/container.py),
# since no public registry is reachable there. Python is Debian's python3 (3.11) in both stages, so the
# virtualenv built in the first stage runs unchanged in the second.
#
# A TLS-intercepting proxy's CA can be handed to pip without entering any layer:
#   --secret id=pip-cert,src=/etc/ssl/certs/ca-certificates.crt
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

# ---------------------------------------------------------------------------------------------------
# Build stage: the virtualenv with the factory and its dependencies (compilers allowed here only).
FROM ${BASE_IMAGE} AS build

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/image-factory

WORKDIR /src
# Dependencies and the build backend first (from pyproject.toml alone), so a code change re-uses this
# layer and the project's own install needs no download (--no-build-isolation).
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip-cert \
    set -eu; \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi; \
    python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt; \
    python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
        >> /tmp/requirements.txt; \
    /opt/image-factory/bin/pip install -r /tmp/requirements.txt

# Only the four runtime packages (pyproject's packages.find): no devstack, tests or benchmarks.
COPY README.md ./
COPY image_factory ./image_factory
COPY api ./api
COPY worker ./worker
COPY common ./common
RUN --mount=type=secret,id=pip-cert \
    set -eu; \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi; \
    /opt/image-factory/bin/pip install --no-deps --no-build-isolation . \
    && /opt/image-factory/bin/pip uninstall -y pip
# Lets a local build tag this stage (its layers are the next build's cache) and prune superseded ones.
LABEL org.opencontainers.image.title="image-factory-build"

# ---------------------------------------------------------------------------------------------------
# Final stage: Python, the imager's tools and the virtualenv. No compilers, no pip, no source tree.
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/image-factory/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# The tools the workers' asset builders run (worker/imager; the same list as devstack/debian.py's
# SYSTEM_PACKAGES "imager's tools"). GRUB's x86 modules exist only on amd64.
RUN set -eux; \
    arch="$(dpkg --print-architecture)"; \
    extra=""; \
    if [ "$arch" = amd64 ]; then extra="grub-pc-bin grub-efi-amd64-bin"; fi; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        python3 ca-certificates \
        xorriso grub-common $extra mtools dosfstools squashfs-tools squashfs-tools-ng cpio xfsprogs \
        libfaketime pigz qemu-utils xz-utils zstd kmod bubblewrap; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log

COPY --from=build /opt/image-factory /opt/image-factory

# Non-root; UID/GID 1000 match the Helm chart's securityContext. Builds and caches use /tmp.
RUN groupadd --gid 1000 factory \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/factory --shell /usr/sbin/nologin factory
USER 1000:1000
WORKDIR /home/factory

# http.httpListenAddr and metrics.addr defaults
EXPOSE 8080 2122

ENTRYPOINT ["image-factory"]
CMD ["--config", "/config.yaml", "api"]
LABEL org.opencontainers.image.title="image-factory" \
      org.opencontainers.image.description="Talos Image Factory (Python re-implementation): API and build workers"
