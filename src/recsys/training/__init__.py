"""Training layer: training loops for the retrieval and ranking models."""
