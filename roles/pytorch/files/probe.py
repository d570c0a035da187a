"""Report the torch build in this interpreter's environment as JSON, without importing torch (fast)."""

import importlib.metadata
import json

CUDA_PREFIXES = ("nvidia-", "cuda-")
names = {}
for dist in importlib.metadata.distributions():
    name = (dist.metadata["Name"] or "").lower().replace("_", "-")
    names[name] = dist.version
cuda = sorted(n for n in names if n.startswith(CUDA_PREFIXES) or n == "triton")
print(json.dumps({"torch": names.get("torch"), "cuda_dists": cuda}))
