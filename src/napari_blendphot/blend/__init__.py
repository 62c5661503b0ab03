"""Step 3 of the pipeline: split by galaxy, pair, shift and sum into blends."""
