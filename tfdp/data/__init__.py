"""Data for tfdp: datasets by name, DP-SGD batch samplers and batch preprocessing."""

from tfdp.data.fit_input import poisson_dataset
from tfdp.data.datasets import DATASETS, DataError, Dataset, load_dataset, subset
from tfdp.data.preprocess import AUGMENTATIONS, make_preprocess
from tfdp.data.sampling import SAMPLERS, PoissonSampler, ShuffleSampler, make_sampler

__all__ = ['AUGMENTATIONS', 'DATASETS', 'DataError', 'Dataset', 'PoissonSampler', 'ShuffleSampler', 'load_dataset',
           'make_preprocess', 'make_sampler', 'poisson_dataset', 'SAMPLERS', 'subset']
