"""Studies: cross-validation over groups of people and the learning curve, built from the same train,
calibrate and evaluate stages as the pipeline."""
