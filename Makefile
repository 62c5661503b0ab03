# The two commands of the README:
#   make demo   -- set everything up and run the main job on the embedded sample
#   make test   -- set everything up and run the test suite
.PHONY: setup demo test

setup:
	@bash scripts/setup.sh

# Headless-safe: renders napari under Xvfb when there is no display and writes demo.png
# (run `.venv/bin/blendphot demo` for the live window).
demo: setup
	.venv/bin/blendphot demo --screenshot demo.png --overwrite

# Three pytest processes: TensorFlow and napari's OpenGL must not share one (SPEC §8),
# and the library must be checked free of TensorFlow outside its worker.  Tests that
# open a viewer are marked "gui" automatically (tests/conftest.py); the modules that
# run Keras in-process live in tests/keras_inprocess/.
test: setup
	.venv/bin/python -m pytest -q -m "not gui"
	.venv/bin/python -m pytest -q tests/keras_inprocess
	.venv/bin/python -m pytest -q -m gui
