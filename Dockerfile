# stocktake worker image (CPU). Build: docker build -t stocktake .
# GPU variant (CUDA runtime + onnxruntime-gpu): Dockerfile.gpu.
# EXTRAS installs optional dependency groups of pyproject.toml, e.g. --build-arg EXTRAS=grafana
# for an image that can also run `stocktake grafana sync|preview`.
FROM python:3.11-slim
ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stocktake ./stocktake
COPY streams ./streams
COPY processors ./processors
COPY models ./models
COPY clickhouse ./clickhouse
COPY grafana ./grafana
RUN pip install ".${EXTRAS:+[$EXTRAS]}" && useradd --system --uid 1000 stocktake
USER stocktake
ENTRYPOINT ["stocktake"]
CMD ["worker"]
