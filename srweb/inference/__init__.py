"""Running a model on an image: the Upscaler (upscaler)."""
