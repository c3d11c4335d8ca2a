// HDF5: the library's handles that are macros over globals, which Swift cannot import.
#include <hdf5.h>

static inline hid_t asym_h5t_native_float(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t asym_h5t_native_int64(void) { return H5T_NATIVE_INT64; }
static inline hid_t asym_h5t_c_s1(void) { return H5T_C_S1; }
static inline hid_t asym_h5p_default(void) { return H5P_DEFAULT; }
static inline hid_t asym_h5s_all(void) { return H5S_ALL; }
static inline unsigned asym_h5f_acc_trunc(void) { return H5F_ACC_TRUNC; }
static inline unsigned asym_h5f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline size_t asym_h5t_variable(void) { return H5T_VARIABLE; }
