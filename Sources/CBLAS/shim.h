// OpenBLAS: CBLAS. (No LAPACK routine is needed yet: the light SVD is power iteration on
// BLAS calls; declare LAPACK routines here, Fortran style, when one is.)
#include <cblas.h>
