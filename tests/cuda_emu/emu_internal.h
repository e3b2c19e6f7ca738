/* Declarations shared by the runtime files of cudaemu (emu_*.cpp), not by kernel code. */
#ifndef AG_CUDA_EMU_INTERNAL_H
#define AG_CUDA_EMU_INTERNAL_H

#include "cuda_emu.h"

/* Records err as the calling thread's last error (what cudaGetLastError returns next)
 * unless it is cudaSuccess; returns err. */
cudaError_t emu_error(cudaError_t err);

#endif
