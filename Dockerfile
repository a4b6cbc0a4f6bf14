# stocktake worker image (CPU). Build: docker build -t stocktake .
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stocktake ./stocktake
COPY streams ./streams
COPY processors ./processors
COPY models ./models
COPY clickhouse ./clickhouse
COPY grafana ./grafana
RUN pip install . && useradd --system --uid 1000 stocktake
USER stocktake
ENTRYPOINT ["stocktake"]
CMD ["worker"]
