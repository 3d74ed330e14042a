// Debian's libzstd (apt libzstd-dev), for compressing repository chunks before encryption.
#include <zstd.h>
#include <zstd_errors.h>

// ZSTD_CONTENTSIZE_UNKNOWN/ERROR are macros Swift does not import.
static const unsigned long long coffer_zstd_contentsize_unknown = ZSTD_CONTENTSIZE_UNKNOWN;
static const unsigned long long coffer_zstd_contentsize_error = ZSTD_CONTENTSIZE_ERROR;
