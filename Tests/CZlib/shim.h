// zlib, for reading the age test vectors stored with "compressed: zlib" (tests only).
#include <zlib.h>
