"""Small, correct, notebook-first reference implementations of thirteen papers on robust and efficient learning

Modules:

- `robustlearn.data`: Group-annotated data sets, the toy generators several chapters share, 2-D densities, and a loader for the Waterbirds/CelebA file layout.
- `robustlearn.metrics`: Accuracy, per-group and worst-group accuracy, expected calibration error, negative log-likelihood, normalized squared error, and per-slice accuracy with bootstrap intervals over predictions joined to metadata by id, each checking its inputs."""

__version__ = "0.1.0"
