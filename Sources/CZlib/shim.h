// Debian's zlib (apt zlib1g-dev): crc32 for the CRC-32 that every .xbcrypt chunk carries, and
// inflate for reading the age test vectors stored with "compressed: zlib".
#include <zlib.h>
