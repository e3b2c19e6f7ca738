/* ag files: safetensors (JSON header + raw little-endian tensors, the format of Hugging
 * Face's safetensors library), checkpoints of a model and its optimizer, and PNG images.
 *
 * Writes are atomic: a temporary file in the same directory, fsync, rename; a crash leaves
 * the previous file intact. Reads validate everything (header length and JSON, dtypes,
 * shapes, offsets inside the file, sizes): a corrupt file is AG_ERR_IO, never a crash.
 * ag writes the data's CRC-32 in the header's __metadata__ ("ag_crc32") and a load checks it
 * where present (files from other writers have none). */
#ifndef AG_IO_H
#define AG_IO_H

#include "ag/nn.h"
#include "ag/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Writes n named tensors (float32 "F32", float64 "F64", int64 "I64") to path. */
ag_status ag_safetensors_save(const char *path, int n, const ag_named_tensor *tensors);
/* Reads every tensor of a safetensors file. *tensors receives a malloc'd array of *n
 * entries with malloc'd names and tensors owned by the array (not by any scope); free it
 * with ag_named_tensors_free. */
ag_status ag_safetensors_load(const char *path, int *n, ag_named_tensor **tensors);
/* Frees an array from ag_safetensors_load. */
void ag_named_tensors_free(int n, ag_named_tensor *tensors);

/* Saves a model's parameters under their names ("0.weight", loadable by PyTorch's
 * load_state_dict) and, if opt is not NULL, the optimizer state under "optimizer.<name>". */
ag_status ag_checkpoint_save(const char *path, const ag_module *model, const ag_optimizer *opt);
/* Loads a checkpoint into model (every parameter must be present with its shape) and, if
 * opt is not NULL and the file has optimizer state, into opt. */
ag_status ag_checkpoint_load(const char *path, ag_module *model, ag_optimizer *opt);
/* ag_checkpoint_save plus, if scaler is not NULL, its state ("scaler.scale",
 * "scaler.growth_tracker"), as PyTorch's checkpoint["scaler"]. */
ag_status ag_checkpoint_save_with_scaler(const char *path, const ag_module *model,
                                         const ag_optimizer *opt, const ag_grad_scaler *scaler);
/* ag_checkpoint_load plus, if scaler is not NULL and the file has scaler state, into it. */
ag_status ag_checkpoint_load_with_scaler(const char *path, ag_module *model, ag_optimizer *opt,
                                         ag_grad_scaler *scaler);

/* Writes an 8-bit PNG image: `pixels` holds height rows, top to bottom, of width pixels of
 * `channels` bytes each (1 gray, 3 RGB, 4 RGBA), without padding. */
ag_status ag_png_save(const char *path, int width, int height, int channels, const uint8_t *pixels);

#ifdef __cplusplus
}
#endif
#endif
