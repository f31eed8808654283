"""Files, digests and references: what names a model, its data and a run, and what makes a long job resumable.

* :mod:`~sharpness.files.hashing`: SHA-256 digests of tensors, the identity of a dataset, an analysis set, a
  run's inputs or a state dict;
* :mod:`~sharpness.files.usercode`: the researcher's own callable by reference, ``"pkg.module:fn"`` or
  ``"path/to/file.py:fn"``;
* :mod:`~sharpness.files.loading`: from what a user names on the command line (a checkpoint, ``--model``,
  ``--data``) to a model and its data;
* :mod:`~sharpness.files.rundir`: resumable run directories (a manifest, atomic writes, done markers).

Nothing here computes a measure; the datasets themselves are in :mod:`sharpness.data` and the weight files in
:mod:`sharpness.checkpoint`.
"""
