"""Stage 0 of a run, the images: the dataset registry, loaders of each on-disk format, fixed subsets."""
from .datasets import (DATASETS, DatasetSpec, ImageData, fixed_subset, labelled_subset, list_datasets, load_dataset,
                       make_synthetic)

__all__ = ["DATASETS", "DatasetSpec", "ImageData", "fixed_subset", "labelled_subset", "list_datasets", "load_dataset",
           "make_synthetic"]
