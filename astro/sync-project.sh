#!/usr/bin/env bash
# Copy what the image needs from the repository into this Astro project, before
# `astro dev start` / `astro deploy` (the Astro CLI builds with astro/ as the Docker context):
#   smelter-src/              the crate, built by the first stage of the Dockerfile
#   include/smelter/pipelines the pipeline files the DAGs run
#   include/smelter/sql       the SQL models
set -euo pipefail
ASTRO="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$ASTRO")"

rm -rf "$ASTRO/smelter-src" "$ASTRO/include/smelter"
mkdir -p "$ASTRO/smelter-src" "$ASTRO/include/smelter"
# Tracked files only (no target/, no local lakes, no secrets); the whole crate but astro/ itself.
git -C "$REPO" ls-files -z -- . ':!:astro' \
  | (cd "$REPO" && xargs -0 -r cp --parents -t "$ASTRO/smelter-src")
git -C "$REPO" ls-files -z -- pipelines sql \
  | (cd "$REPO" && xargs -0 -r cp --parents -t "$ASTRO/include/smelter")
echo "synced crate into $ASTRO/smelter-src and pipelines + sql into $ASTRO/include/smelter"
