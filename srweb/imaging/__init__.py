"""Pixels in and out: image reading, colour spaces and PNG encoding (io), MATLAB bicubic
resize (resize) and atomic file writes (fileio)."""
