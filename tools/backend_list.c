/* Loading every backend file on the search path (tools/backend_list.h). */
#include "backend_list.h"

#include <glob.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include "internal.h"

void ag_tool_load_all_backends(void) {
    char dirs[8192], pattern[4200];
    glob_t g = {0};
    int flags = 0;
    if (ag__backend_search_dirs(dirs, sizeof dirs) != AG_OK) return;
    for (char *save, *dir = strtok_r(dirs, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        snprintf(pattern, sizeof pattern, "%s/libag_backend_*.so", dir);
        if (glob(pattern, flags, NULL, &g) == 0) flags = GLOB_APPEND;
    }
    for (size_t i = 0; flags && i < g.gl_pathc; i++) {
        char name[64];
        const char *base = strrchr(g.gl_pathv[i], '/') + 1 + strlen("libag_backend_");
        int len = (int)(strlen(base) - strlen(".so")), index;
        snprintf(name, sizeof name, "%.*s", len, base);
        bool seen = false; /* the same name in an earlier directory was tried already */
        for (size_t k = 0; k < i; k++)
            seen |= strcmp(strrchr(g.gl_pathv[k], '/'), strrchr(g.gl_pathv[i], '/')) == 0;
        if (!seen && ag_backend_load(name, &index) != AG_OK)
            printf("backend %s skipped: %s\n", name, ag_last_error());
        ag_clear_error();
    }
    if (flags) globfree(&g);
}
