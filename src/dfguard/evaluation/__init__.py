"""Evaluation: a model's metrics on a split of a face dataset, the way the field reports them (`run`)."""
