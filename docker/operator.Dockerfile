# The hyft operator: Kopf + the kubernetes client, no torch.
# Build from the repository root: docker build -f docker/operator.Dockerfile -t hyft-operator .
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/hyft
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY trainer ./trainer
COPY envtest ./envtest
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[operator]" \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin hyft

USER 10001
ENTRYPOINT ["hyft"]
CMD ["operator", "--help"]
