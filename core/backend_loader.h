/* Backend loader interfaces beyond internal.h: process shutdown, and probing one backend
 * file outside the backend table (for `ag info`). Not installed. */
#ifndef AG_CORE_BACKEND_LOADER_H
#define AG_CORE_BACKEND_LOADER_H

#include "internal.h"

/* Shuts every loaded backend down and unloads it, closing an open probe too; called from
 * ag__shutdown at process end. The table is empty afterwards and ag_init starts over. */
void ag__backends_shutdown(void);

/* Loads the backend file at `path` (named libag_backend_<name>.so) with the same checks as
 * ag__backend_load, but outside the backend table. Returns its descriptor (borrowed), or
 * NULL with ag_last_error() naming the file and the reason. If the file is already loaded
 * in the table, returns that entry as it is (no second init). One probe may be open at a
 * time; close it with ag__backend_probe_close before the next. */
const ag_backend *ag__backend_probe(const char *path);

/* Closes the open probe: shutdown and dlclose, unless it was an entry of the table. */
void ag__backend_probe_close(void);

#endif
