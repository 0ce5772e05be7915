# Production serving image: NVIDIA's Triton Inference Server with its native C++
# onnxruntime backend (CUDA and TensorRT execution providers) and the python
# backend for the retrieval and recommend models.
#
#   scripts/run.sh                                      # trains; writes artifacts/ml-100k
#   python -m recsys.serving.cli build-repo --artifacts artifacts/ml-100k --out artifacts/triton_repo
#   docker build -t recsys-triton .
#   docker run --gpus all -p 8001:8001 -v $PWD/artifacts/triton_repo:/models recsys-triton
#
# The ONNX models' configs ask for the TensorRT execution provider on GPU instances
# (FP32; CUDA EP for the rest; `build-repo --gpu-accelerator cuda` for CUDA EP alone).
# The repository is the same one the local CPU server runs; only the local
# python-based onnxruntime stand-in (serving/backends/onnxruntime_local) is not
# part of this image.
FROM nvcr.io/nvidia/tritonserver:24.10-py3

# Python packages imported by the python-backend models (retrieval, recommend):
# the same versions as requirements/gpu.txt.
COPY requirements/serving-gpu.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt

COPY src/ /opt/recsys/src/
ENV PYTHONPATH=/opt/recsys/src

EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS localhost:8000/v2/health/ready || exit 1
ENTRYPOINT ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit", \
            "--load-model=*", "--strict-readiness=true"]
