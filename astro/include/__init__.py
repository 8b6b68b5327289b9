"""Shared code for the Smelter DAGs (importable as ``include.*`` from the Astro project root)."""
