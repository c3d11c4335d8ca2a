// zlib: gzip reading for the IDX data files and crc32 for checkpoints.
#include <zlib.h>
