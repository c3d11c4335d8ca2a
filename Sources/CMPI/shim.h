// Open MPI: its predefined handles are macros over globals, which Swift cannot import.
#include <mpi.h>

static inline MPI_Comm asym_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype asym_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype asym_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype asym_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Op asym_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op asym_mpi_max(void) { return MPI_MAX; }
static inline MPI_Status *asym_mpi_statuses_ignore(void) { return MPI_STATUSES_IGNORE; }
static inline MPI_Datatype asym_mpi_int32(void) { return MPI_INT32_T; }
static inline MPI_Errhandler asym_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline void *asym_mpi_in_place(void) { return MPI_IN_PLACE; }
