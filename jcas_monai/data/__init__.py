from .datalist import dataset_class_frequencies, find_bundle_root, load_split, prepare_datalist
