"""Training the networks of Boucaud et al. 2020 (``python -m training``).

This package lives beside the library, not inside it: it is what trains the
models that :mod:`napari_blendphot.models.weights` ships, and it is the one
place where Keras runs a training loop.  It is backend-agnostic (TensorFlow on
a laptop, JAX on a GPU machine); nothing in it uses ``tf.data``.

Modules
-------
config
    Run configurations (JSON files in ``training/configs``), their defaults and checks.
data
    Batches for Keras: the fixed blend dataset read from a folder, or blends made
    on the fly from the isolated sample, deterministic for (seed, epoch).
train
    The training run: run folder, per-epoch log, plateau/early stopping,
    checkpoints (last and best), resume.
scoring
    Predicting a blend dataset split with a trained run (through
    ``napari_blendphot.predict``) and writing the results table and the
    evaluation report.
tables_md
    The Markdown tables of docs/results.md, from the library's statistics.
cli
    The ``python -m training`` command line.
"""
