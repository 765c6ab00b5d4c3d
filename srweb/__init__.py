"""srweb."""
