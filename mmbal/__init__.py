"""mmbal: modality balancing (MLB and its baselines) in small, readable PyTorch."""
__version__ = "0.1.0"
