"""Step 7 of the pipeline: results tables, reports and figures."""
