/* ag data: IDX files (the MNIST format), the MNIST/Fashion-MNIST data sets and a
 * minibatch loader with seeded, per-epoch shuffling (torch.utils.data). */
#ifndef AG_DATA_H
#define AG_DATA_H

#include "ag/ag.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where Debian's dataset-fashion-mnist package installs the data set. */
#define AG_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Reads an IDX file (plain or gzip, detected by content) into a tensor of `dtype` with the
 * file's dims. Magic, element type, sizes and length are validated: a truncated or
 * malformed file is AG_ERR_IO with a message naming the file and what is wrong. */
ag_status ag_idx_read(const char *path, ag_dtype dtype, ag_tensor **out);

/* An image classification set held in memory. */
typedef struct ag_image_dataset {
    ag_tensor *images;  /* float32 [N, rows*cols], pixels scaled to [0, 1] (owned) */
    ag_tensor *labels;  /* int64 [N] (owned) */
    int64_t count;      /* N */
    int64_t rows, cols; /* image size */
    int64_t classes;    /* 1 + largest label */
} ag_image_dataset;

/* Loads dir/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (MNIST naming). Checks that
 * images and labels agree in count. Free with ag_image_dataset_free. */
ag_status ag_mnist_load(const char *dir, bool train, ag_image_dataset *out);
/* Releases the tensors of a data set and zeroes it. */
void ag_image_dataset_free(ag_image_dataset *ds);

/* A minibatch iterator over (inputs, targets) along dim 0 (opaque). */
typedef struct ag_loader ag_loader;

/* Loader options. */
typedef struct ag_loader_options {
    int64_t batch_size; /* samples per batch (> 0) */
    bool shuffle;       /* permute samples each epoch */
    bool drop_last;     /* drop a final short batch */
    uint64_t seed;      /* shuffling seed; epoch e uses seed + e (torch's set_epoch) */
    int rank;           /* this process's shard (0) ... */
    int world_size;     /* ... of world_size shards (1): disjoint, for data parallelism */
} ag_loader_options;

/* A loader over inputs and targets (same extent in dim 0); keeps references to both. */
ag_loader *ag_loader_new(ag_tensor *inputs, ag_tensor *targets, const ag_loader_options *options);
/* Frees a loader. NULL is ignored. */
void ag_loader_free(ag_loader *loader);
/* Starts epoch `epoch`: the order depends only on (seed, epoch). */
void ag_loader_set_epoch(ag_loader *loader, uint64_t epoch);
/* Next batch of the epoch into *inputs / *targets (new references, owned as op results);
 * false (with *inputs NULL) at the end of the epoch or on error (then ag_last_status). */
bool ag_loader_next(ag_loader *loader, ag_tensor **inputs, ag_tensor **targets);
/* Number of batches per epoch. */
int64_t ag_loader_batches(const ag_loader *loader);

#ifdef __cplusplus
}
#endif
#endif
