"""Model export for runtimes without PyTorch."""
