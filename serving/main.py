"""The serving entry point: run bundle -> Triton repository -> tritonserver -> gRPC.

    python serving/main.py build-repo --bundle artifacts/ml-100k/bundle --out artifacts/triton_repo
    python serving/main.py serve --repository artifacts/triton_repo
    python serving/main.py recommend --user-id 1 --k 10

The same commands as ``python -m recsys.serving.cli`` (``--help`` lists them), beside
``training/main.py``, the training entry point that writes the bundle.
"""

from __future__ import annotations

import sys

from recsys.serving.cli import main

if __name__ == "__main__":
    sys.exit(main())
