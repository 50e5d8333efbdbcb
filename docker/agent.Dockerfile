# edgeq device agent, multi-arch (linux/amd64, linux/arm64):
#   docker buildx build --platform linux/amd64,linux/arm64 -f docker/agent.Dockerfile -t edgeq-agent .
# Installs the same `agent` extra as `pip install '.[agent]'` (no TensorFlow); on arm64 pip
# takes ai-edge-litert's aarch64 wheel (the CI runs this very set under QEMU, .ci/arm64-env.sh).
FROM python:3.11-slim-bookworm
WORKDIR /src
COPY pyproject.toml README.md ./
COPY device_agent ./device_agent
COPY edgeq ./edgeq
COPY firmware_templates ./firmware_templates
RUN pip install --no-cache-dir '.[agent]' && rm -rf /src
RUN useradd --create-home --uid 10001 edgeq && mkdir /data && chown edgeq /data
USER edgeq
VOLUME /data
ENTRYPOINT ["edgeq-agent", "--data-dir", "/data"]
