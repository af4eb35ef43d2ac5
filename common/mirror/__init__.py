"""``image-factory mirror``: copy what a factory needs for chosen Talos versions into another registry.

``needs.py`` says which images a version needs (from the release's catalogs), ``copier.py`` copies one
image by digest with its cosign signatures, ``command.py`` runs the whole copy (verified, bounded
parallelism, progress, summary) and prints the configuration that points a factory at the mirror.
"""
