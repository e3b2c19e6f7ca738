/* Backends of the `ag` tool: loading every backend file on the search path, shared by
 * `ag check` and `ag bench`. */
#ifndef AG_TOOLS_BACKEND_LIST_H
#define AG_TOOLS_BACKEND_LIST_H

/* Loads every backend found on the search path (each libag_backend_<name>.so) into the
 * backend table; prints "backend <name> skipped: <reason>" on stdout for each that does not
 * load. */
void ag_tool_load_all_backends(void);

#endif
