"""Importers that turn other tools' training configs into ftpipe pipelines.

Each importer maps every key it recognises and reports every other key, with its line,
as unsupported: nothing is dropped without a word.
"""
