from .datasets import DATASETS, Dataset, DataError, load_dataset

__all__ = ["DATASETS", "Dataset", "DataError", "load_dataset"]
