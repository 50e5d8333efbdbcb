# edgeq collector (and the other fleet commands) without TensorFlow: the `fleet` extra.
#   docker build -f docker/collector.Dockerfile -t edgeq-collector .
FROM python:3.11-slim-bookworm
WORKDIR /src
COPY pyproject.toml README.md ./
COPY device_agent ./device_agent
COPY edgeq ./edgeq
COPY firmware_templates ./firmware_templates
RUN pip install --no-cache-dir '.[fleet]' && rm -rf /src
RUN useradd --create-home --uid 10001 edgeq && mkdir /data && chown edgeq /data
USER edgeq
VOLUME /data
ENTRYPOINT ["edgeq"]
CMD ["--help"]
