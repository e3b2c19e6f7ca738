/* Sample inputs of the composite functions `ag check` covers (tools/cmd_check.c): functions
 * such as ag_conv2d that are built from other ops and so have no registry entry, kernel or
 * recipe of their own. Each runs on the checked device and on the cpu reference with the
 * same inputs (outputs and gradients compared) and, with --gradcheck, through gradcheck and
 * gradgradcheck in float64. The table is tools/check_composite_samples.c: to cover a new
 * composite, add a function and a row there. */
#ifndef AG_TOOLS_CHECK_COMPOSITE_SAMPLES_H
#define AG_TOOLS_CHECK_COMPOSITE_SAMPLES_H

#include "ag/ag.h"
#include "check_builtin_samples.h"

/* One composite on one set of inputs: run once per dtype in `dtypes`. */
typedef struct composite_sample {
    const char *name;   /* what --op names, and the table's op column ("conv2d") */
    const char *note;   /* shown after the shapes ("groups 2, dilation 1x2"), or NULL */
    uint32_t dtypes;    /* AG_DTYPE_BIT of each row dtype */
    ag_gradcheck_fn fn; /* inputs -> one tensor (NULL with the error set) */
    /* Float inputs (dtype SAMPLE_KEY) get gradients; int64 ones do not. */
    sample_input inputs[SAMPLE_MAX_INPUTS];
} composite_sample;

/* The samples, grouped by name. */
extern const composite_sample check_composite_samples[];
extern const int check_composite_sample_count;

#endif
