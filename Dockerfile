# ringside, the sidecar, as a container image: only the package and its dependencies, installed
# from wheels built on the host (no compiler, no index, nothing fetched while building):
#
#   pip wheel . -w dist/wheels && docker build -t ringside:0.2.0 .
#
# (scripts/build-images.sh does both.) The API listens on 127.0.0.1:8776 as on a host, which is
# right for `network_mode: host` (compose/node.yml, compose/voter.yml); a container that others
# must reach sets RINGSIDE_HTTP_LISTEN=0.0.0.0:8776 (compose/local-cluster.yml does).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG WHEELS=dist/wheels
COPY ${WHEELS}/ /tmp/wheels/
RUN python3 -m venv /opt/ringside \
 && /opt/ringside/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \
      --find-links /tmp/wheels ringside \
 && rm -rf /tmp/wheels \
 && useradd --system --user-group --uid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin ringside \
 && install -d -o ringside -g ringside /run/ringside

ENV PATH=/opt/ringside/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER ringside
EXPOSE 8776

# /health answers 200 while the process serves, whatever etcd's state. It is asked on the
# address RINGSIDE_HTTP_LISTEN names (a wildcard address is asked on loopback).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD python3 -c "\
import os, urllib.request; \
host, _, port = os.environ.get('RINGSIDE_HTTP_LISTEN', '127.0.0.1:8776').rpartition(':'); \
host = host.strip('[]'); \
host = {'': '127.0.0.1', '0.0.0.0': '127.0.0.1', '::': '::1'}.get(host, host); \
host = f'[{host}]' if ':' in host else host; \
urllib.request.urlopen(f'http://{host}:{port}/health', timeout=2)"

ENTRYPOINT ["ringside"]
CMD ["run"]
