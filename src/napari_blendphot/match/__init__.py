"""Step 5 of the pipeline: assign detections to the central and companion galaxy."""
