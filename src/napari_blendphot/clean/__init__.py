"""Step 2 of the pipeline: remove neighbours from isolated-galaxy stamps."""
