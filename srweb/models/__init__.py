"""SR architectures behind one registry.

Each architecture module registers its builders when imported; adding a model is one file
plus one import line below.
"""

from srweb.models._registry import ModelInfo, create_model, get_model_info, list_models, register_model

# Registration order is listing order: roughly chronological, baselines last.
from srweb.models import srcnn  # noqa: F401
from srweb.models import fsrcnn  # noqa: F401
from srweb.models import espcn  # noqa: F401
from srweb.models import vdsr  # noqa: F401
from srweb.models import drcn  # noqa: F401
from srweb.models import red30  # noqa: F401
from srweb.models import drrn  # noqa: F401
from srweb.models import edsr  # noqa: F401
from srweb.models import srresnet  # noqa: F401
from srweb.models import baselines  # noqa: F401
from srweb.models.srresnet import create_discriminator

__all__ = ["ModelInfo", "create_discriminator", "create_model", "get_model_info", "list_models", "register_model"]
