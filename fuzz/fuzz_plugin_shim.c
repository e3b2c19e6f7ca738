/* A stand-in plugin for fuzz_plugin_schema: a real shared library that ag_plugin_load opens,
 * whose entry returns whatever ag_plugin_info the fuzzer configured (its init is the
 * fuzzer's, registering fuzzer-made op declarations). So every declaration goes through the
 * loader's own checks: ABI and info, the registration transaction, schema validation and
 * the registry's duplicate-name check. */
#include <stddef.h>
#include "ag/plugin.h"

#define SHIM_EXPORT __attribute__((visibility("default")))

static const ag_plugin_info *configured;

/* Sets what the entry returns next (NULL: the entry refuses the host's ABI). */
SHIM_EXPORT void ag_fuzz_shim_configure(const ag_plugin_info *info);
SHIM_EXPORT void ag_fuzz_shim_configure(const ag_plugin_info *info) {
    configured = info;
}

SHIM_EXPORT const ag_plugin_info *ag_plugin_entry(uint32_t host_abi_major, uint32_t host_abi_minor);
SHIM_EXPORT const ag_plugin_info *ag_plugin_entry(uint32_t host_abi_major,
                                                  uint32_t host_abi_minor) {
    (void)host_abi_major;
    (void)host_abi_minor;
    return configured;
}
