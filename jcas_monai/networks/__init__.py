from .backbones import DeepLabV2, load_imagenet_weights
from .dar import DAR, normalized_affinity_features
from .jcas_net import AffinityHead, ClassHead, JCASNet
from .placement import channels_last_faults, place_network
