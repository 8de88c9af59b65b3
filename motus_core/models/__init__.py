"""Model implementations (Motus, MoLA) on diffusers/transformers."""
