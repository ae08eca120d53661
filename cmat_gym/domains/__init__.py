"""One folder per domain. Importing this package imports every domain folder in it, and each
folder's ``__init__.py`` registers its domain with one ``register_domain(...)`` call (see
:mod:`cmat_gym.core.domain`): adding a domain touches nothing outside its folder."""

from __future__ import annotations

import importlib
import pkgutil


def _import_domains() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.ispkg:
            importlib.import_module(f"{__name__}.{module.name}")


_import_domains()
