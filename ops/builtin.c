/* Registers the built-in ops when libag is loaded, through the same registry that plugins
 * use, and releases process-wide state at exit. */
#include <stdio.h>
#include <stdlib.h>
#include "ops_common.h"
#include "../core/backend_loader.h"

ag_status ag__register_all(ag_op_def *const *ops, int n) {
    for (int i = 0; i < n; i++) {
        ag_status st = ag__op_register(ops[i]);
        if (st != AG_OK) return st;
    }
    return AG_OK;
}

typedef ag_status (*register_fn)(void);

static const register_fn groups[] = {
    ag__register_creation_ops, ag__register_elementwise_ops, ag__register_reduce_ops,
    ag__register_linalg_ops,   ag__register_view_ops,        ag__register_index_ops,
    ag__register_nn_ops,       ag__register_optim_ops,
};

__attribute__((constructor)) static void register_builtin_ops(void) {
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        if (groups[i]() != AG_OK) {
            /* Two built-in ops with one name is a build defect, not a user error. */
            fprintf(stderr, "ag: registering built-in ops failed: %s\n", ag_last_error());
            abort();
        }
}

__attribute__((destructor)) static void release_process_state(void) {
    ag__scopes_shutdown();
    ag__plugins_shutdown();
    ag__backends_shutdown();
    ag__registry_shutdown();
    ag__pool_drain();
}
