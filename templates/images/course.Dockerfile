# A course's packages: a thin layer on swarmhub's user image (BASE, its content-addressed
# tag), so that a change of the course's packages rebuilds and ships these layers alone: the
# nodes already hold every layer below them. Built by images.build on the hub from the
# profile's pip requirements (requirements.txt) and Debian package list (apt.txt), both
# possibly empty. Builds with the legacy builder (DOCKER_BUILDKIT=0): no BuildKit-only syntax.
ARG BASE
FROM ${BASE}
ARG JUPYTERHUB_VERSION
# The JupyterHub the base was built with: images.rollback refuses a tag of another major.
LABEL io.swarmhub.jupyterhub="${JUPYTERHUB_VERSION}"
# Debian packages first, pip's after: a change of the pip requirements alone reuses the
# Debian layer (the hub's build cache) and the nodes pull the pip layer only.
USER root
COPY apt.txt /tmp/course/
RUN set -eux; \
    if grep -q '[^[:space:]]' /tmp/course/apt.txt; then \
        apt-get update; \
        xargs -a /tmp/course/apt.txt apt-get install -y --no-install-recommends; \
        apt-get clean; \
        rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    fi; \
    rm -rf /tmp/course
# pip as jovyan, who owns the venv: no chown of the venv, which would copy all of it into
# this layer.
USER jovyan
COPY requirements.txt /tmp/course-pip/
RUN set -eux; \
    if grep -q '^[^#[:space:]]' /tmp/course-pip/requirements.txt; then \
        pip install --no-cache-dir -r /tmp/course-pip/requirements.txt; \
    fi; \
    rm -rf /home/jovyan/.cache
