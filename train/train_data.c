/* Data of a training run: the MNIST-format sets of one directory and their loaders. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include "ag/train.h"
#include "../core/internal.h"

/* Images per evaluation batch: large, since evaluation keeps no graph. */
enum { EVAL_BATCH = 1000 };

/* A loader over the first `limit` samples (all when limit <= 0). The slices are made in a
 * scope of their own: the loader keeps its references, whatever scope the caller has. */
static ag_loader *loader_over(const ag_image_dataset *ds, int64_t limit,
                              const ag_loader_options *options) {
    int64_t n = limit > 0 && limit < ds->count ? limit : ds->count;
    ag_scope *scope = ag_scope_begin();
    ag_tensor *x = ag_slice(ds->images, 0, 0, n, 1), *y = ag_slice(ds->labels, 0, 0, n, 1);
    ag_loader *loader = x && y ? ag_loader_new(x, y, options) : NULL;
    ag_scope_end(scope);
    return loader;
}

/* Test set, and training set when asked, with their loaders; all or nothing. */
ag_status ag_train_data_load(ag_train_data *d, const char *dir, const ag_train_config *config,
                             bool with_train, int64_t limit) {
    if (!d || !dir || !config)
        return ag__error(AG_ERR_INVALID_ARG, "ag_train_data_load: NULL argument");
    memset(d, 0, sizeof *d);
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return ag__error(AG_ERR_IO, "data directory '%s': %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return ag__error(AG_ERR_IO, "data directory '%s' is not a directory", dir);
    ag_status st = ag_mnist_load(dir, false, &d->test);
    if (st == AG_OK) {
        ag_loader_options eval = {.batch_size = EVAL_BATCH, .world_size = 1};
        d->test_loader = loader_over(&d->test, 0, &eval);
        st = d->test_loader ? AG_OK : ag__error_if_none(AG_ERR_INTERNAL, "test loader failed");
    }
    if (st == AG_OK && with_train) st = ag_mnist_load(dir, true, &d->train);
    if (st == AG_OK && with_train) {
        ag_loader_options train = {.batch_size = config->batch_size,
                                   .shuffle = true,
                                   .seed = config->seed,
                                   .world_size = 1};
        d->train_loader = loader_over(&d->train, limit, &train);
        st = d->train_loader ? AG_OK : ag__error_if_none(AG_ERR_INTERNAL, "training loader failed");
    }
    if (st != AG_OK) ag_train_data_free(d);
    return st;
}

/* Frees loaders and data sets. */
void ag_train_data_free(ag_train_data *d) {
    if (!d) return;
    ag_loader_free(d->train_loader);
    ag_loader_free(d->test_loader);
    ag_image_dataset_free(&d->train);
    ag_image_dataset_free(&d->test);
    memset(d, 0, sizeof *d);
}
