// OpenBLAS: CBLAS plus the few LAPACK routines the project uses.
#include <cblas.h>

// LAPACK (Fortran calling convention, shipped inside libopenblas).
void ssyevd_(const char *jobz, const char *uplo, const int *n, float *a, const int *lda,
             float *w, float *work, const int *lwork, int *iwork, const int *liwork, int *info);
