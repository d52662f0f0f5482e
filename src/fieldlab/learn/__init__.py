"""Learning on fields: point sets with quadrature weights, discretization-invariant layers, CNN
translation, batched evaluation of stored fields, networks, training and evaluation."""

from fieldlab.learn.abilities import BuiltForStore, SizedByPoints
from fieldlab.learn.layers import (AdaptivePool, DIConv, DINorm, DIPool, Discretized, MLPKernel, Pointwise, Residual,
                                   TapKernel, Upsample, global_pool)
from fieldlab.learn._neighbors import Support
from fieldlab.learn.field_batch import FieldEvaluator
from fieldlab.learn.nets import list_nets, net_config, register_net
from fieldlab.learn.points import PointSampler, PointSet, grid, qmc, shrunk, uniform
from fieldlab.learn.translate import translate
from fieldlab.learn import fcn, hyper, nufft  # noqa: F401,E402  (registers the FCN, hypernetwork, NUFFT baselines)

__all__ = [
    "AdaptivePool", "BuiltForStore", "DIConv", "DINorm", "DIPool", "Discretized", "FieldEvaluator", "MLPKernel", "PointSampler",
    "PointSet", "Pointwise", "Residual", "Support", "TapKernel", "Upsample", "global_pool", "grid", "list_nets",
    "net_config", "qmc", "register_net", "shrunk", "SizedByPoints", "translate", "uniform",
]
