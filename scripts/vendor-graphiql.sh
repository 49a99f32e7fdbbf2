#!/usr/bin/env bash
# Re-fetch the GraphiQL assets that gateway/http/static/graphiql serves, so the
# playground needs no CDN. Run from anywhere; needs npm and the npm registry.
#
# GraphiQL 4.1 is the newest release that still ships a prebuilt UMD bundle
# (5.x is ESM + Monaco and needs a bundler); React 18 is the newest with UMD
# builds, and graphiql's UMD bundle needs React 18's internals anyway.
# Every directory is named after its package version, so the assets can be
# cached forever and an upgrade changes their URLs: after changing a version
# here, change the paths in gateway/http/graphiql.py to match.
set -euo pipefail
shopt -s inherit_errexit

GRAPHIQL=4.1.2
PLUGIN_EXPLORER=4.0.6
GRAPHIQL_EXPLORER=0.9.0 # bundled inside the explorer plugin; only its LICENSE is kept
REACT=18.3.1

dest="$(cd "$(dirname "$0")/.." && pwd)/gateway/http/static/graphiql"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# unpack SPEC: extract the npm tarball of SPEC and print its package/ directory.
unpack() {
    local tarball
    tarball="$(npm pack --silent --pack-destination "$work" "$1")"
    mkdir "$work/${tarball%.tgz}"
    tar -xzf "$work/$tarball" -C "$work/${tarball%.tgz}"
    echo "$work/${tarball%.tgz}/package"
}

rm -rf "$dest"
mkdir -p "$dest"

pkg="$(unpack "react@$REACT")"
install -D -m 644 -t "$dest/react-$REACT" "$pkg/umd/react.production.min.js" "$pkg/LICENSE"

pkg="$(unpack "react-dom@$REACT")"
install -D -m 644 -t "$dest/react-dom-$REACT" "$pkg/umd/react-dom.production.min.js" "$pkg/LICENSE"

pkg="$(unpack "graphiql@$GRAPHIQL")"
install -D -m 644 -t "$dest/graphiql-$GRAPHIQL" \
    "$pkg/graphiql.min.js" "$pkg/graphiql.min.css" "$pkg/LICENSE"
graphiql_license="$pkg/LICENSE"

# The plugin's tarball has no LICENSE file: it is MIT (package.json) and lives
# in the graphql/graphiql monorepo, whose licence is graphiql's.
pkg="$(unpack "@graphiql/plugin-explorer@$PLUGIN_EXPLORER")"
out="$dest/plugin-explorer-$PLUGIN_EXPLORER"
install -D -m 644 -t "$out" "$pkg/dist/index.umd.js" "$pkg/dist/style.css"
install -m 644 "$graphiql_license" "$out/LICENSE"

pkg="$(unpack "graphiql-explorer@$GRAPHIQL_EXPLORER")"
install -m 644 "$pkg/LICENSE" "$out/LICENSE.graphiql-explorer"

du -sh "$dest"
