"""Deploy targets: each publishes a model reference somewhere and reports where it can be
reached (``deploy.json``). Built-ins are registered by import string in
:mod:`ftpipe.registry`, so importing this package imports nothing heavy."""
