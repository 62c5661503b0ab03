# The two commands of the README:
#   make demo   -- set everything up and run the main job on the embedded sample
#   make test   -- set everything up and run the test suite
.PHONY: setup demo test

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/blendphot demo

test: setup
	.venv/bin/python -m pytest -q
