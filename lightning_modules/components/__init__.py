"""Plain ``nn.Module`` parts: projection, the registered fusions (``FUSIONS``) and the MLP head."""

from lightning_modules.components import fusion as fusion  # registers every fusion in FUSIONS
