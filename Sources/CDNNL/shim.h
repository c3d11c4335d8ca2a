// oneDNN (Debian's libdnnl-dev, C API). Debian builds it on OpenMP (libgomp): oneDNN takes
// its thread count from the calling thread's OpenMP setting, so that one call is declared
// here (omp.h belongs to the compiler, which Swift's clang does not ship).
#include <oneapi/dnnl/dnnl.h>

void omp_set_num_threads(int);
