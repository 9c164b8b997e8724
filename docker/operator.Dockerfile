# The hyft operator: Kopf + the kubernetes client, no torch.
# Build from the repository root: `make images`, or
#   docker build --network host -f docker/operator.Dockerfile -t hyft-operator:<version> .  (make images: the version of pyproject.toml)
# DL3008: Debian stable's package versions move only for security fixes; take them.
FROM debian:bookworm-slim AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
WORKDIR /opt/hyft
# docker/pip-ca: a proxy's CA for pip, if the build machine needs one; this stage only.
COPY docker/pip-ca/ /tmp/pip-ca/
# The dependencies from pyproject.toml alone (empty packages and README), so that no code
# or docs change reinstalls them; then hyft itself, offline. (DL3013: pinned in pyproject.)
COPY pyproject.toml ./
# hadolint ignore=DL3013
RUN if [ -f /tmp/pip-ca/build.crt ]; then export PIP_CERT=/tmp/pip-ca/build.crt; fi \
    && mkdir -p operator/hyft_operator trainer/hyft_trainer envtest/hyft_envtest && touch README.md \
    && /opt/venv/bin/pip install --no-cache-dir "setuptools==80.9.0" ".[operator]" \
    && /opt/venv/bin/pip uninstall -y hyft
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY trainer ./trainer
# hyft_envtest (the test cluster) is part of the distribution but not of the images: an empty package.
RUN mkdir -p envtest/hyft_envtest \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation --no-index ".[operator]"

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin hyft
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001
ENTRYPOINT ["hyft"]
CMD ["operator", "--help"]
