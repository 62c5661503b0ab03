"""Step 6 of the pipeline: photometric and segmentation metrics of the paper."""
