"""Training: on-the-fly fake synthesis (`sbi`) and, later, the training loop."""
