"""Datasets, long-tailed subsets, augmentation recipes and samplers."""

from .build import DATASETS, DataBundle, build_data, build_eval_data, register_dataset
from .datasets import ArrayDataset, DataError, FileListDataset, list_images, parse_list_file, scan_image_folder
from .long_tail import long_tail_counts, select_long_tail_indices
from .samplers import EpochSampler
from .transforms import ImageInfo, MultiView, build_eval_transform, build_train_transform, build_view

__all__ = [
    "DATASETS", "DataBundle", "build_data", "build_eval_data", "register_dataset",
    "ArrayDataset", "DataError", "FileListDataset",
    "list_images", "parse_list_file", "scan_image_folder", "long_tail_counts", "select_long_tail_indices",
    "EpochSampler", "ImageInfo", "MultiView", "build_eval_transform", "build_train_transform",
    "build_view",
]
