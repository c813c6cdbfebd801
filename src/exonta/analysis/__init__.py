"""Per-track diffusion analysis and particle-size statistics."""
