"""The prepare step: read, map, check, de-duplicate and split the training data."""
