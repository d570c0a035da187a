"""PyTorch side: datasets, network building, the training loop and inference."""
