# The two commands of the README:
#   make demo   -- set everything up and run the main job on the embedded sample
#   make test   -- set everything up and run the test suite
.PHONY: setup demo test

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/blendphot demo

# Two pytest processes: TensorFlow and napari's OpenGL must not share one (SPEC §8);
# tests that open a viewer are marked "gui" automatically (tests/conftest.py).
test: setup
	.venv/bin/python -m pytest -q -m "not gui"
	.venv/bin/python -m pytest -q -m gui
