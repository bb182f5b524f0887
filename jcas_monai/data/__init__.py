from .datalist import find_bundle_root, label_class_frequencies, load_split, prepare_datalist
