# natsim's image: the userspace dataplane, the workloads and the CLI, for docker-compose.yml.
# Build it with `make image`: natsim and its dependencies are built into wheels on the host
# first, so nothing is downloaded inside the build. BASE is a public Python image for users
# who can pull one; `make image` falls back to natsim-base:<suite>, a minimal Debian made
# with debootstrap from this machine's own apt mirror (scripts/base-image.sh).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
COPY build/wheels /tmp/wheels
RUN python3 -m venv /opt/natsim \
 && /opt/natsim/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels natsim \
 && rm -rf /tmp/wheels
COPY scenarios /opt/natsim/scenarios
# libfaketime (Debian's, from the host): programs started in a host container run on the
# world's clock; natsim's timer shim comes in the wheel
COPY build/faketime/ /usr/lib/faketime/
ENV PATH=/opt/natsim/bin:$PATH PYTHONUNBUFFERED=1 NATSIM_SCENARIOS=/opt/natsim/scenarios
ENTRYPOINT ["natsim"]
CMD ["--help"]
