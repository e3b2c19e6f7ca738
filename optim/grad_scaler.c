/* Loss scaling for float16 training: torch.amp.GradScaler's state machine.
 *
 * float16 gradients underflow; scaling the loss by S scales every gradient by S, and
 * unscaling divides it out before the optimizer sees it. A step whose gradients hold an
 * inf or NaN (S too large) is skipped and S shrinks by backoff_factor; growth_interval good
 * steps in a row grow it by growth_factor. As in PyTorch the scale is a float32 value, the
 * unscale factor is 1/S rounded to float32, and each optimizer moves READY -> UNSCALED ->
 * STEPPED -> (update) READY, with unscale after unscale or after step, and step after
 * step, refused with PyTorch's messages. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "ag/optim.h"
#include "../core/internal.h"

/* Optimizers one scaler tracks between updates (PyTorch: any number). */
#define SCALER_MAX_OPTIMIZERS 16

/* Where an optimizer is in the current iteration. */
typedef enum { STAGE_READY, STAGE_UNSCALED, STAGE_STEPPED } stage;

/* An optimizer's state in the current iteration. */
typedef struct opt_state {
    const ag_optimizer *opt; /* the optimizer (not owned) */
    stage stage;             /* UNSCALED or STEPPED: READY ones are not listed */
    bool found_inf;          /* its gradients held an inf or NaN */
} opt_state;

struct ag_grad_scaler {
    ag_grad_scaler_options options;
    float scale;                             /* PyTorch's float32 scale tensor */
    int64_t growth_tracker;                  /* good steps since the last change */
    int n_states;                            /* optimizers seen since the last update */
    opt_state states[SCALER_MAX_OPTIMIZERS]; /* their states */
};

ag_grad_scaler_options ag_grad_scaler_defaults(void) {
    return (ag_grad_scaler_options){.init_scale = 65536.0,
                                    .growth_factor = 2.0,
                                    .backoff_factor = 0.5,
                                    .growth_interval = 2000,
                                    .enabled = true};
}

ag_grad_scaler *ag_grad_scaler_new(const ag_grad_scaler_options *options) {
    ag_grad_scaler_options o = options ? *options : ag_grad_scaler_defaults();
    const char *bad = !(o.init_scale > 0 && isfinite(o.init_scale)) ? "init_scale must be > 0"
                      : !(o.growth_factor > 1.0)                    ? "growth_factor should be > 1"
                      : !(o.backoff_factor > 0 && o.backoff_factor < 1.0)
                          ? "backoff_factor should be in (0, 1)"
                      : o.growth_interval <= 0 ? "growth_interval should be a positive integer"
                                               : NULL;
    if (bad) {
        ag__error(AG_ERR_INVALID_ARG,
                  "GradScaler: %s (init_scale %g, growth_factor %g, backoff_factor %g, "
                  "growth_interval %lld)",
                  bad, o.init_scale, o.growth_factor, o.backoff_factor,
                  (long long)o.growth_interval);
        return NULL;
    }
    ag_grad_scaler *s = ag__calloc(1, sizeof *s);
    if (!s) {
        ag__error(AG_ERR_OUT_OF_MEMORY, "GradScaler: out of host memory");
        return NULL;
    }
    s->options = o;
    s->scale = (float)o.init_scale;
    return s;
}

void ag_grad_scaler_free(ag_grad_scaler *s) {
    free(s);
}

/* The state of opt in this iteration, added as READY when new; NULL with an error when
 * too many optimizers are in play. */
static opt_state *state_of(ag_grad_scaler *s, const ag_optimizer *opt) {
    for (int i = 0; i < s->n_states; i++)
        if (s->states[i].opt == opt) return &s->states[i];
    if (s->n_states == SCALER_MAX_OPTIMIZERS) {
        ag__error(AG_ERR_UNSUPPORTED, "GradScaler: more than %d optimizers in one iteration",
                  SCALER_MAX_OPTIMIZERS);
        return NULL;
    }
    s->states[s->n_states] = (opt_state){opt, STAGE_READY, false};
    return &s->states[s->n_states++];
}

static ag_status check_scaler(const char *who, const ag_grad_scaler *s, const void *arg) {
    if (!s || !arg)
        return ag__error_if_none(AG_ERR_INVALID_ARG, "GradScaler.%s: %s is NULL", who,
                                 s ? "argument" : "scaler");
    return AG_OK;
}

ag_tensor *ag_grad_scaler_scale(ag_grad_scaler *s, ag_tensor *loss) {
    if (check_scaler("scale", s, loss) != AG_OK) return NULL;
    if (!s->options.enabled) return ag__scope_adopt(ag_retain(loss));
    ag_scope *scope = ag_scope_begin();
    ag_tensor *factor = ag__scalar_on(AG_F32, s->scale, loss->storage->device);
    return ag_scope_return(scope, ag_mul(loss, factor));
}

/* Multiplies opt's gradients by 1/scale in place; *found_inf tells whether one holds an
 * inf or NaN (one device-to-host read for all of them). */
static ag_status unscale_grads(const ag_grad_scaler *s, ag_optimizer *opt, bool *found_inf) {
    int n = ag_optimizer_parameters(opt, NULL, 0);
    if (n < 0) return ag_last_status();
    ag_named_tensor *params = ag__malloc((size_t)(n ? n : 1) * sizeof *params);
    if (!params) return ag__error(AG_ERR_OUT_OF_MEMORY, "GradScaler.unscale_: out of memory");
    ag_optimizer_parameters(opt, params, n);
    const float inv_scale = (float)(1.0 / (double)s->scale);
    bool prev = ag_set_grad_enabled(false);
    ag_scope *scope = ag_scope_begin();
    ag_status st = AG_OK;
    /* x * 0 is 0 for every finite x and NaN for inf/NaN: one sum tells about all. */
    ag_tensor *poison = NULL;
    for (int i = 0; i < n && st == AG_OK; i++) {
        ag_tensor *g = ag_tensor_grad(params[i].tensor);
        if (!g) continue;
        if (!ag_mul_scalar_(g, inv_scale)) {
            st = ag_last_status();
            break;
        }
        ag_tensor *term = ag_sum(ag_mul_scalar(ag_to_dtype(g, AG_F32), 0.0), 0, NULL, false);
        poison = poison ? ag_add(poison, term) : term;
        if (!poison) st = ag_last_status();
    }
    double total = 0;
    if (st == AG_OK && poison) st = ag_item(poison, &total);
    *found_inf = st == AG_OK && !isfinite(total);
    ag_scope_end(scope);
    ag_set_grad_enabled(prev);
    free(params);
    return st;
}

ag_status ag_grad_scaler_unscale(ag_grad_scaler *s, ag_optimizer *opt) {
    ag_status st = check_scaler("unscale_", s, opt);
    if (st != AG_OK || !s->options.enabled) return st;
    opt_state *os = state_of(s, opt);
    if (!os) return ag_last_status();
    if (os->stage == STAGE_UNSCALED)
        return ag__error(AG_ERR_INVALID_ARG, "GradScaler.unscale_: unscale_() has already been "
                                             "called on this optimizer since the last update().");
    if (os->stage == STAGE_STEPPED)
        return ag__error(AG_ERR_INVALID_ARG,
                         "GradScaler.unscale_: unscale_() is being called after step().");
    st = unscale_grads(s, opt, &os->found_inf);
    if (st == AG_OK) os->stage = STAGE_UNSCALED;
    return st;
}

ag_status ag_grad_scaler_step(ag_grad_scaler *s, ag_optimizer *opt, bool *stepped) {
    if (stepped) *stepped = false;
    ag_status st = check_scaler("step", s, opt);
    if (st != AG_OK) return st;
    if (!s->options.enabled) {
        st = ag_optimizer_step(opt);
        if (stepped) *stepped = st == AG_OK;
        return st;
    }
    opt_state *os = state_of(s, opt);
    if (!os) return ag_last_status();
    if (os->stage == STAGE_STEPPED)
        return ag__error(AG_ERR_INVALID_ARG,
                         "GradScaler.step: step() has already been called since the last "
                         "update().");
    if (os->stage == STAGE_READY && (st = ag_grad_scaler_unscale(s, opt)) != AG_OK) return st;
    if (!os->found_inf) st = ag_optimizer_step(opt);
    if (st == AG_OK) {
        os->stage = STAGE_STEPPED;
        if (stepped) *stepped = !os->found_inf;
    }
    return st;
}

ag_status ag_grad_scaler_update(ag_grad_scaler *s) {
    ag_status st = check_scaler("update", s, s);
    if (st != AG_OK || !s->options.enabled) return st;
    if (s->n_states == 0)
        return ag__error(AG_ERR_INVALID_ARG,
                         "GradScaler.update: no inf checks were recorded prior to update "
                         "(call unscale_ or step first)");
    bool found_inf = false;
    for (int i = 0; i < s->n_states; i++) found_inf |= s->states[i].found_inf;
    /* torch._amp_update_scale_, in float32. */
    if (found_inf) {
        s->scale = (float)(s->scale * s->options.backoff_factor);
        s->growth_tracker = 0;
    } else if (s->growth_tracker + 1 == s->options.growth_interval) {
        const float grown = (float)(s->scale * s->options.growth_factor);
        if (isfinite(grown)) s->scale = grown;
        s->growth_tracker = 0;
    } else {
        s->growth_tracker++;
    }
    s->n_states = 0;
    return AG_OK;
}

double ag_grad_scaler_scale_value(const ag_grad_scaler *s) {
    return !s ? NAN : s->options.enabled ? s->scale : 1.0;
}

int64_t ag_grad_scaler_growth_tracker(const ag_grad_scaler *s) {
    return s ? s->growth_tracker : 0;
}

int ag_grad_scaler_state(const ag_grad_scaler *s, ag_named_tensor out[2]) {
    if (check_scaler("state_dict", s, out) != AG_OK) return -1;
    const float scale = s->scale;
    const int64_t tracker = s->growth_tracker;
    out[0] = (ag_named_tensor){"scale", ag_from_data(AG_F32, 0, NULL, &scale)};
    out[1] = (ag_named_tensor){"growth_tracker", ag_from_data(AG_I64, 0, NULL, &tracker)};
    return out[0].tensor && out[1].tensor ? 2 : -1;
}

ag_status ag_grad_scaler_load_state(ag_grad_scaler *s, int n, const ag_named_tensor *state) {
    ag_status st = check_scaler("load_state_dict", s, state);
    if (st != AG_OK) return st;
    const ag_tensor *scale = NULL, *tracker = NULL;
    for (int i = 0; i < n; i++) {
        if (!state[i].name || !state[i].tensor) continue;
        if (strcmp(state[i].name, "scale") == 0) scale = state[i].tensor;
        if (strcmp(state[i].name, "growth_tracker") == 0) tracker = state[i].tensor;
    }
    double v[2];
    if (!scale || !tracker || ag_numel(scale) != 1 || ag_numel(tracker) != 1)
        return ag__error(AG_ERR_INVALID_ARG,
                         "GradScaler.load_state_dict: expected one-element \"scale\" and "
                         "\"growth_tracker\" tensors");
    if ((st = ag_item(scale, &v[0])) != AG_OK || (st = ag_item(tracker, &v[1])) != AG_OK) return st;
    if (!(v[0] > 0) || !isfinite(v[0]) || v[1] < 0)
        return ag__error(AG_ERR_INVALID_ARG,
                         "GradScaler.load_state_dict: scale %g and growth_tracker %g are out of "
                         "range",
                         v[0], v[1]);
    s->scale = (float)v[0];
    s->growth_tracker = (int64_t)v[1];
    s->n_states = 0;
    return AG_OK;
}
