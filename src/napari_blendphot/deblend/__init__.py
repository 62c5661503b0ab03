"""Step 4 of the pipeline: deblenders (networks, SEP) behind one interface."""
