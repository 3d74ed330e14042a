#!/usr/bin/env bash
# Builds coffer as one self-contained release binary: the Swift runtime and Foundation are linked
# in statically (--static-swift-stdlib), so the binary needs no Swift installation on the host it
# is copied to; it still needs glibc and the C libraries listed by `ldd` (docs/PERFORMANCE.md,
# "Release binary").
#
#   scripts/release.sh                 build, then print the binary's path, size and libraries
#   scripts/release.sh --print-path    build, then print only the binary's path (for install.sh)
#
# SWIFT_BUILD_FLAGS adds flags to `swift build` (e.g. "--scratch-path .build-release").
set -euo pipefail

print_path_only=0
case "${1:-}" in
    --print-path) print_path_only=1 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "release.sh: unknown option '$1' (see --help)" >&2; exit 64 ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC2086
swift build -c release --static-swift-stdlib --product coffer ${SWIFT_BUILD_FLAGS:-} >&2
# shellcheck disable=SC2086
bin="$(swift build -c release --static-swift-stdlib --product coffer ${SWIFT_BUILD_FLAGS:-} --show-bin-path)/coffer"
if [ "$print_path_only" = 1 ]; then
    echo "$bin"
    exit 0
fi
echo "binary:    $bin"
echo "size:      $(stat -c %s "$bin") bytes ($(du -h "$bin" | cut -f1))"
echo "version:   $("$bin" --version)"
echo "libraries: $(ldd "$bin" 2>/dev/null | awk '{ print $1 }' | tr '\n' ' ')"
