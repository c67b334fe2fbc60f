"""Training on cached features: layer specs, streaming DataModule, fusions, LightningModule, fit and layer sweep."""
