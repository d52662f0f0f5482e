"""Field architectures: one file each, a registry, and the batched path."""

from fieldlab.fields._batched import FieldStack, restore_buffer
from fieldlab.fields._config import FieldConfig, coerce_option, option_docs
from fieldlab.fields.abilities import Croppable, Extendable, Latent, Partitioned, TrainsOnOwnPoints
from fieldlab.fields._registry import create_field, get_config_class, list_fields, make_config, register_field
from fieldlab.fields.finer import Finer, FinerConfig
from fieldlab.fields.fourier import FourierConfig, FourierMLP
from fieldlab.fields.functa import Functa, FunctaConfig
from fieldlab.fields.gauss import Gauss, GaussConfig
from fieldlab.fields.hashgrid import HashGrid, HashGridConfig
from fieldlab.fields.local_global import LocalGlobal, LocalGlobalConfig
from fieldlab.fields.miner import Miner, MinerConfig
from fieldlab.fields.siren import Siren, SirenConfig
from fieldlab.fields.spatial_functa import SpatialFuncta, SpatialFunctaConfig
from fieldlab.fields.wire import Wire, WireConfig

__all__ = [
    "FieldConfig", "FieldStack", "restore_buffer", "Finer", "FinerConfig", "FourierConfig", "FourierMLP", "Gauss", "GaussConfig",
    "Functa", "FunctaConfig", "HashGrid", "HashGridConfig", "LocalGlobal", "LocalGlobalConfig", "Miner", "MinerConfig", "Siren", "SirenConfig", "SpatialFuncta",
    "SpatialFunctaConfig", "Wire", "WireConfig",
    "Croppable", "Extendable", "Latent", "Partitioned", "TrainsOnOwnPoints",
    "coerce_option", "create_field", "get_config_class", "list_fields", "make_config", "option_docs", "register_field",
]
