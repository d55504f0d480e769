"""scikit-learn's handwritten digits (8x8, 1,797 samples): always available offline.

sklearn ships no test split, so a fixed stratified 75/25 split (``random_state=0``) defines train and test;
it never depends on the stream's seed, so every run tests on the same 450 images.
"""

from __future__ import annotations

import numpy as np
import torch

from .raw import RawDataset

SPLIT_SEED = 0


def load_digits() -> RawDataset:
    """Load the digits as uint8 images (N, 1, 8, 8) with values 0..16; normalised as ``x / 16``.

    Streams give them as flat (N, 64) vectors unless the spec asks for the image form (``flatten: false``).
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = bunch.images.astype(np.uint8)[:, None]  # values are integers 0..16 stored as float
    labels = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(np.arange(len(labels)), test_size=0.25, stratify=labels,
                                           random_state=SPLIT_SEED)
    idx_train, idx_test = np.sort(idx_train), np.sort(idx_test)
    return RawDataset(
        name="digits",
        train_x=torch.from_numpy(images[idx_train]), train_y=torch.from_numpy(labels[idx_train]),
        test_x=torch.from_numpy(images[idx_test]), test_y=torch.from_numpy(labels[idx_test]),
        num_classes=10, scale=16.0, class_names=[str(i) for i in range(10)], source="sklearn.datasets.load_digits",
    )
