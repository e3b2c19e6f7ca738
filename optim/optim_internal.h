/* What optim/scheduler.c needs from optim/optimizer.c beyond the public API. Not installed. */
#ifndef AG_OPTIM_INTERNAL_H
#define AG_OPTIM_INTERNAL_H

#include "ag/optim.h"

/* PyTorch's param_group['initial_lr']: the optimizer's lr when the first scheduler was bound
 * to it, fixed from then on. Every scheduler takes it as its base lr, so a warm-up that
 * lowers the lr at creation does not lower the base of the schedulers created after it. */
double ag__optimizer_initial_lr(ag_optimizer *opt);

#endif
