"""Dataset formats beyond the built-in three: every module here registers one ``DatasetSpec`` when imported.

Importing this package imports them all, so adding a format is adding a file.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
