# One image for the search driver, Ray nodes and the dashboard. GPU nodes use the CUDA build of torch
# (the default wheel on PyPI); CPU-only images can pin the CPU build instead.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY nas ./nas
COPY services ./services
COPY search_spaces ./search_spaces
RUN pip install --no-cache-dir -e '.[postgres]'
ENV NAS_HOME=/data/nas NAS_SPACES_DIR=/app/search_spaces
