"""Networks for volumetric muon tomography: generators, segmenters, joint nets and critics.

Every net takes ``(B, C, X, Y, Z)`` tensors (z vertical), or ``(B, C, X, Y)`` with
``spatial_dims=2``, and is built by name from the registry::

    from nets import create_net, list_nets, net_config
    net = create_net("resunet", in_channels=1, out_channels=1)

Importing this package registers: ``resunet``, ``swin_unetr`` (dense: image or logits),
``joint_resunet``, ``joint_chain`` (joint: ``{"image", "logits"}``) and ``patch_critic``,
and their slice-wise 2D wrappers ``slicewise``, ``slicewise_joint``, ``slicewise_critic``
(the reference work's 2D approach on the same 3D volumes).
"""

from .conditioning import ExposureFiLM
from .joint_chain import JointChain
from .joint_resunet import JointResUNet
from .patch_critic import PatchCritic
from .registry import NET_KINDS, create_net, list_nets, net_config, net_kind, register_net
from .resunet import ResUNet, ResUNetTrunk
from .slicewise import SliceWise, SliceWiseCritic, SliceWiseJoint
from .swin_unetr import SwinUNETRNet
from .utils import count_parameters

__all__ = [
    "NET_KINDS",
    "ExposureFiLM",
    "JointChain",
    "JointResUNet",
    "PatchCritic",
    "ResUNet",
    "ResUNetTrunk",
    "SliceWise",
    "SliceWiseCritic",
    "SliceWiseJoint",
    "SwinUNETRNet",
    "count_parameters",
    "create_net",
    "list_nets",
    "net_config",
    "net_kind",
    "register_net",
]
