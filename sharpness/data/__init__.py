"""Named datasets → tensors plus a recorded, JSON-able spec. Nothing here downloads.

Every loader returns a :class:`Dataset`: ``x_train, y_train, x_test, y_test`` tensors and a ``spec`` dict
that is enough to rebuild the exact same tensors later (:func:`dataset_from_spec`) and to check that they
*are* the same (a SHA-256 over the tensors' bytes, see :func:`hash_tensors`).

Conventions
-----------
- ``x`` is ``float32`` (``dtype=torch.float64`` keeps a float64 source float64, for a float64 analysis; a
  float32 source is exact in float32 and stays so); signed-integer ``x`` (token ids) stays ``int64``.
  ``spec["x_dtype"]`` / ``spec["y_dtype"]`` / ``spec["stored_x_dtype"]`` record what was stored and what the
  source held. Images are ``(N, C, H, W)`` scaled to ``[0, 1]``; vectors are ``(N, D)``.
- Classification labels are ``int64`` of shape ``(N,)`` in ``[0, num_classes)``.
- Regression targets are ``float32`` (or the ``dtype`` asked for); ``teacher-student`` gives ``(N, out_dim)``, an ``npz`` file keeps the
  shape it was saved with. ``spec["num_classes"]`` is ``None`` for regression.
- Randomness is an argument: ``seed`` drives synthetic generation, the digits train/test split and the
  ``subset`` draw. Global RNGs (``torch``, ``numpy.random``, ``random``) are never touched.

Names (:func:`dataset_names`)
-----------------------------
``mnist1d``          Greydanus' MNIST-1D generated in-process (4000 train / 1000 test, 40 features, 10 classes).
``fashion-mnist``    IDX files; searched in ``data_dir``, ``$SHARPNESS_DATA``, torchvision's ``FashionMNIST/raw``
                     layout below either, and ``/usr/share/datasets/fashion-mnist``.
``mnist``            same, with ``mnist`` / ``MNIST/raw`` sub-directories.
``idx``              any directory (``data_dir``) holding ``train-images/labels`` (+ optional ``t10k-*``) IDX files.
``cifar10``          the "python version" pickle batches in ``cifar-10-batches-py``, read by a restricted unpickler.
``cifar100``         ``cifar-100-python/{train,test}``; ``label_mode="fine"`` (100 classes) or ``"coarse"`` (20).
``digits``           scikit-learn's bundled 8×8 digits (1797 samples, 64 features in [0, 1]), seeded 80/20 split.
``npz``              a user file: arrays ``x``, ``y`` and optionally ``x_test``, ``y_test``; a name ending in
                     ``.npz`` is taken as such a path.
``blobs``            Gaussian blobs (classification).
``teacher-student``  regression on the outputs of a random linear or one-hidden-layer tanh teacher plus noise.
``text``             byte-level language modelling: ``x`` = windows of ``context`` bytes (``int64``, ``(N, T)``),
                     ``y`` = the same windows shifted by one byte (next-byte targets), vocabulary 256; the last
                     ``test_fraction`` of the windows is the test split. From ``path`` (any file), or by default
                     from the documentation text every CPython ships: ``pydoc_data.topics`` (the language
                     reference's topics as ``help()`` shows them, 466 117 bytes on CPython 3.11.7), joined in sorted
                     key order and UTF-8 encoded — present wherever ``help("if")`` works, never downloaded. Its
                     SHA-256 and the Python version are recorded (``spec["text_sha256"]``, ``spec["text_source"]``):
                     another Python's docs are another dataset, and rebuilding refuses the mismatch.

Spec layout
-----------
::

    {"name": "fashion-mnist",                 # canonical name
     "args": {"seed": 0, "subset": 1000,      # every argument needed to rebuild (defaults filled in);
              "subset_indices_sha256": "…"},  # present only with a subset
     "n_train": 1000, "n_test": 10000,
     "input_shape": [1, 28, 28],
     "num_classes": 10,                       # None for regression
     "output_dim": 10,                        # model outputs needed: num_classes, or the target width
     "task": "classification",                # or "regression"
     "source": "/usr/share/datasets/fashion-mnist",   # where files were read (None if generated)
     "sha256": "…"}                           # hash_tensors over train and test tensors

Modules
-------
One loader per file behind one registry: :mod:`~sharpness.data.registry` (names → loaders,
:func:`load_dataset`, :func:`dataset_from_spec`), :mod:`~sharpness.data.dataset` (:class:`Dataset` and the
finishing step every loader shares), :mod:`~sharpness.data.files` (where files are looked for), and the loaders
:mod:`~sharpness.data.mnist1d`, :mod:`~sharpness.data.idx`, :mod:`~sharpness.data.cifar`,
:mod:`~sharpness.data.digits`, :mod:`~sharpness.data.npz`, :mod:`~sharpness.data.synthetic`,
:mod:`~sharpness.data.text`; :mod:`~sharpness.data.user` finishes the tensors a user's data function returned
(``train --data FILE.py:fn``) the same way. The hash is :func:`sharpness.files.hashing.hash_tensors`.
"""

from __future__ import annotations

#: The last place file-based datasets are searched (:mod:`sharpness.data.files` reads it at search time).
_SYSTEM_DATA_ROOT = "/usr/share/datasets"

# Re-exports: everything importable from the single-file sharpness/data.py stays importable from here.
from ..files.hashing import hash_tensors  # noqa: E402
from .dataset import Dataset  # noqa: E402
from .idx import read_idx  # noqa: E402
from .mnist1d import _mnist1d_arrays  # noqa: E402,F401  (tests clear its per-process cache)
from .registry import dataset_from_spec, dataset_names, load_dataset  # noqa: E402
from .text import default_text  # noqa: E402,F401

__all__ = [
    "Dataset",
    "load_dataset",
    "dataset_from_spec",
    "dataset_names",
    "hash_tensors",
    "read_idx",
]
