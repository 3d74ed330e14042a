#!/usr/bin/env bash
# Builds coffer as one self-contained release binary: the Swift runtime and Foundation are linked
# in statically (--static-swift-stdlib), so the binary needs no Swift installation on the host it
# is copied to; it still needs glibc and the C libraries listed by `ldd` (docs/PERFORMANCE.md,
# "Release binary"). The binary handed out is a stripped copy, .build/dist/coffer (about half the
# size; the unstripped one stays in SwiftPM's build directory for debugging), checked: it has no
# symbol table left and answers --version exactly as the unstripped one does.
#
#   scripts/release.sh                 build, strip, check, then print the binary's path, size and libraries
#   scripts/release.sh --print-path    the same, printing only the stripped binary's path (for install.sh)
#   scripts/release.sh --from BIN      strip and check BIN (an already built coffer) instead of building
#
# SWIFT_BUILD_FLAGS adds flags to `swift build` (e.g. "--scratch-path .build-release").
set -euo pipefail

print_path_only=0 from=""
while (($#)); do
    case "$1" in
        --print-path) print_path_only=1; shift ;;
        --from) from="${2:?--from needs a path}"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "release.sh: unknown option '$1' (see --help)" >&2; exit 64 ;;
    esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -n "$from" ]; then
    built="$from"
    [ -x "$built" ] || { echo "release.sh: no executable at '$built'" >&2; exit 1; }
else
    # shellcheck disable=SC2086
    swift build -c release --static-swift-stdlib --product coffer ${SWIFT_BUILD_FLAGS:-} >&2
    # shellcheck disable=SC2086
    built="$(swift build -c release --static-swift-stdlib --product coffer ${SWIFT_BUILD_FLAGS:-} --show-bin-path)/coffer"
fi

mkdir -p .build/dist
bin="$PWD/.build/dist/coffer"
strip --strip-all -o "$bin.tmp" "$built"
# The checks: no symbol table left, and the stripped binary runs and says what the built one says.
if readelf -S "$bin.tmp" | grep -q '\.symtab'; then
    rm -f "$bin.tmp"; echo "release.sh: $bin still has a symbol table after strip" >&2; exit 1
fi
want="$("$built" --version)"
got="$("$bin.tmp" --version)" || { rm -f "$bin.tmp"; echo "release.sh: the stripped binary does not run" >&2; exit 1; }
if [ "$got" != "$want" ]; then
    rm -f "$bin.tmp"; echo "release.sh: the stripped binary answers '$got', the built one '$want'" >&2; exit 1
fi
mv "$bin.tmp" "$bin"

if [ "$print_path_only" = 1 ]; then
    echo "$bin"
    exit 0
fi
echo "binary:    $bin (stripped; unstripped: $built)"
echo "size:      $(stat -c %s "$bin") bytes ($(du -h "$bin" | cut -f1)); unstripped $(stat -c %s "$built") bytes"
echo "version:   $("$bin" --version)"
echo "libraries: $(ldd "$bin" 2>/dev/null | awk '{ print $1 }' | tr '\n' ' ')"
