"""Import torch the way the app will and report what it sees, as JSON."""

import importlib.metadata
import json

import torch

cuda_dists = sorted(
    name
    for name in ((d.metadata["Name"] or "").lower().replace("_", "-") for d in importlib.metadata.distributions())
    if name.startswith(("nvidia-", "cuda-")) or name == "triton"
)
available = torch.cuda.is_available()
print(
    json.dumps(
        {
            "torch_version": torch.__version__,
            "cuda_version": torch.version.cuda,
            "cuda_available": available,
            "device_count": torch.cuda.device_count() if available else 0,
            "device_name": torch.cuda.get_device_name(0) if available else None,
            "cuda_dists": cuda_dists,
        }
    )
)
