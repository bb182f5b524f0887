from .dar import DAR
from .backbones import DeepLabV2, load_imagenet_weights
from .jcas_net import AffinityHead, ClassHead, JCASNet
