"""Neural-network playground: FastAPI service that trains small PyTorch networks on 2-D datasets."""

import warnings

# torch warns on import when NumPy is absent; the app never converts to NumPy, so the warning is noise
# (and it would be the only non-JSON line in the logs).
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
