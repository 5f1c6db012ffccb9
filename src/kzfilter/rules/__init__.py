"""Rules: the model, name normalisation, list loaders and category codes."""
