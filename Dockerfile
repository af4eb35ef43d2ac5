# syntax=docker/dockerfile:1
# One image for the API and the workers: `image-factory [options] api|worker`.
#   docker build -t image-factory .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# External tools the workers' asset builders call (see the Python imager plan: cpio, FAT/ISO/GPT
# tooling, squashfs, qemu-img, compressors, depmod). GRUB's x86 EFI modules exist only on amd64.
RUN set -eux; \
    arch="$(dpkg --print-architecture)"; \
    extra=""; \
    if [ "$arch" = amd64 ]; then extra="grub-pc-bin grub-efi-amd64-bin"; fi; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        ca-certificates cpio dosfstools mtools gdisk binutils xorriso grub-common $extra \
        squashfs-tools squashfs-tools-ng qemu-utils xz-utils zstd kmod e2fsprogs xfsprogs \
        sbsigntool efitools; \
    rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY image_factory ./image_factory
COPY api ./api
COPY worker ./worker
COPY common ./common
RUN pip install . && rm -rf /src

# Non-root; UID/GID 1000 match the Helm chart's securityContext. Builds and caches use /tmp.
RUN groupadd --gid 1000 factory \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/factory --shell /usr/sbin/nologin factory
USER 1000:1000
WORKDIR /home/factory

# http.httpListenAddr and metrics.addr defaults
EXPOSE 8080 2122

ENTRYPOINT ["image-factory"]
CMD ["--config", "/config.yaml", "api"]
