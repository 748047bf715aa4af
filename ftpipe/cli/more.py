"""Commands that other modules contribute (serve, cancel, backends, convert, schedule).
Each is registered here so that `ftpipe --help` lists them without importing them."""
from __future__ import annotations
