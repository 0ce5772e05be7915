# Production serving image: NVIDIA's Triton Inference Server with its native C++
# onnxruntime backend (CUDA and TensorRT execution providers) and the python
# backend for the retrieval and recommend models.
#
#   scripts/run.sh                                      # trains; writes artifacts/ml-100k
#   python -m recsys.serving.cli build-repo --bundle artifacts/ml-100k/bundle --out artifacts/triton_repo
#   docker build -t recsys-triton .
#   python -c 'import secrets; print(secrets.token_urlsafe(32))' > secrets/triton_admin_key
#   docker run --gpus all -p 127.0.0.1:8001:8001 -p 127.0.0.1:8000:8000 \
#     -v $PWD/secrets/triton_admin_key:/run/secrets/triton_admin_key:ro \
#     -v $PWD/artifacts/triton_repo:/models recsys-triton
#
# The entry point (recsys.serving.container) refuses to start without an admin key:
# model load/unload, configs, shared memory, logging, trace and statistics need it;
# inference, health and metadata stay open. Ports are published on the host's
# loopback: Triton 2.51's HTTP endpoint has no body limit and answers bad JSON with
# 500; HTTP clients from other hosts go through the gateway run beside the image
# (python -m recsys.serving.cli gateway --url 127.0.0.1:8001, docs/serving.md,
# "HTTP gateway"). gRPC TLS: mount a certificate and key and set
# RECSYS_TRITON_TLS_CERT / RECSYS_TRITON_TLS_KEY (RECSYS_TRITON_TLS_CLIENT_CA for
# mutual TLS). docs/serving.md, "Security".
#
# The ONNX models' configs ask for the TensorRT execution provider on GPU instances
# (FP32; CUDA EP for the rest; `build-repo --gpu-accelerator cuda` for CUDA EP alone).
# The repository is the same one the local CPU server runs; only the local
# python-based onnxruntime stand-in (recsys/serving/triton_backends/onnxruntime_local) is not
# part of this image.
FROM nvcr.io/nvidia/tritonserver:24.10-py3

# Python packages imported by the python-backend models (retrieval, recommend):
# the same versions as requirements/gpu.txt.
COPY requirements/serving-gpu.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt

COPY src/ /opt/recsys/src/
ENV PYTHONPATH=/opt/recsys/src

ENV RECSYS_TRITON_ADMIN_KEY_FILE=/run/secrets/triton_admin_key
EXPOSE 8000 8001 8002
# Ready only when every model recommend calls is ready: Triton's own /v2/health/ready
# stays 200 when a stage model is unloaded.
HEALTHCHECK --interval=10s --timeout=5s CMD python3 -m recsys.serving.health --http 127.0.0.1:8000
ENTRYPOINT ["python3", "-m", "recsys.serving.container"]
