# The relaygate image: one image for every role (ingress, workers, demo upstream);
# the command picks the role, e.g. `docker run relaygate:local ingress --config …`.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/relaygate
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contracts/ contracts/
COPY ingress/ ingress/
COPY workers/ workers/
COPY bridge/ bridge/
COPY deploy/ deploy/
RUN /opt/relaygate/bin/pip install .

FROM python:3.11-slim
COPY --from=build /opt/relaygate /opt/relaygate
ENV PATH=/opt/relaygate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A numeric, non-root user: Kubernetes' runAsNonRoot can only verify a numeric id.
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin relaygate
USER 10001:10001
# 8080: ingress data plane, 8081: admin API (/healthz, /readyz, /config, /stats, /docs).
EXPOSE 8080 8081
ENTRYPOINT ["relaygate"]
CMD ["--help"]
